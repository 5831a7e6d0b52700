"""A stand-in consumer process for the SIGKILL test: feeds generated scored batches
through a real `Publisher` with the real `TopicSink`, as the daemon does after each
committed batch, and drains the outbox. Run as
``python -m tests.service.publishing.feeder DB BOOTSTRAP TOPIC N PROGRESS [HOLD]``; it
feeds every batch from the first (a replay after a crash) and writes the alerts done to
PROGRESS. With HOLD it stops after that many alerts with a batch recorded and not yet
sent, writes ``holding``, and waits there to be killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from service.publishing.outbox import Store
from service.publishing.publisher import Publisher
from service.publishing.topic import TopicSink
from tests.service.publishing.conftest import scored_from_generator

BATCH = 20


def main(db: str, bootstrap: str, topic: str, n: int, progress: str, hold: int = 0) -> None:
    scored = scored_from_generator(n, seed=21, objects=n // 4)
    pub = Publisher(Store(db), [TopicSink({"bootstrap.servers": bootstrap}, topic, batch_size=15)])
    for start in range(0, n, BATCH):
        pub.record(scored[start : start + BATCH])
        if hold and start + BATCH >= hold:
            Path(progress).write_text("holding")
            while True:  # recorded, not sent: the SIGKILL comes here
                time.sleep(1)
        pub.step()  # one send per batch: the stream runs ahead of the sender a little
        Path(progress).write_text(str(start + BATCH))
    while pub.outbox.pending():
        pub.step()
    Path(progress).write_text("done")


if __name__ == "__main__":
    main(*sys.argv[1:4], int(sys.argv[4]), sys.argv[5], *(int(a) for a in sys.argv[6:]))

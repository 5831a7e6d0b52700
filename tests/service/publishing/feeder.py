"""A stand-in consumer process for the SIGKILL test: feeds generated scored batches
through a real `Publisher` with the real `TopicSink`, as the daemon does after each
committed batch, and drains the outbox. Run as
``python -m tests.service.publishing.feeder DB BOOTSTRAP TOPIC N PROGRESS``; it feeds
every batch from the first (a replay after a crash) and writes the batches done to PROGRESS.
"""

from __future__ import annotations

import sys
from pathlib import Path

from service.publishing.outbox import Store
from service.publishing.publisher import Publisher
from service.publishing.topic import TopicSink
from tests.service.publishing.conftest import scored_from_generator

BATCH = 20


def main(db: str, bootstrap: str, topic: str, n: int, progress: str) -> None:
    scored = scored_from_generator(n, seed=21, objects=n // 4)
    pub = Publisher(Store(db), [TopicSink({"bootstrap.servers": bootstrap}, topic, batch_size=15)])
    for start in range(0, n, BATCH):
        pub.record(scored[start : start + BATCH])
        pub.step()  # one send per batch: the stream runs ahead of the sender a little
        Path(progress).write_text(str(start + BATCH))
    while pub.outbox.pending():
        pub.step()
    Path(progress).write_text("done")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])

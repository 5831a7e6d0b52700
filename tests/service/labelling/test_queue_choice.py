"""The terminal screen offers the three queues (``--queue``, ``w``) and shows each model's
stopping signal, on the tests' Redis."""

from __future__ import annotations

import io

import pytest

from service.cli import main
from service.labelling.keys import KeyReader
from service.labelling.session import LabellingSession
from service.queue.label_queue import LabelQueue
from service.queue.registry import ModelPublisher
from tests.service.labelling.conftest import make_item, plain


def test_the_screen_works_each_queue_and_shows_the_stopping_signal(
    redis_client, queue_prefix, alerts, features
):
    from rich.console import Console

    queue = LabelQueue(redis_client, prefix=queue_prefix)
    a, b, c, d = alerts[:4]
    queue.push([
        make_item(a, features, 0.9),  # best to teach
        make_item(b, features, 0.2, discovery=9.0),  # best to discover
        make_item(c, features, 0.1, discovery=8.0),
        make_item(d, features, 0.5),
    ])  # fmt: skip
    # d was labelled by ann: a second look for anyone else
    queue.submit_label(d["candid"], "gal", "ann")
    assert queue.push_second_look(d["candid"], not_by="ann", reason={"contradiction": 0.97})

    publisher = ModelPublisher(redis_client, queue_prefix)
    publisher.set_status(
        "gal",
        {
            "version": 3,
            "labels": 120,
            "stable": True,
            "message": "the gal model has been stable for the last 40 labels",
        },
    )
    publisher.set_status("real", {"version": 2, "labels": 120, "stable": False,
                                  "message": "the real model is still changing"})  # fmt: skip

    console = Console(file=io.StringIO(), width=110)
    # discover: b x, c w; second look: d w; teach: a b, c w; discover: c w; second look: d g
    keys = ["x", "w", "w", "b", "w", "w", "g"]
    session = LabellingSession(
        queue, "bob", keys=KeyReader(io.StringIO("".join(k + "\n" for k in keys))),
        console=console, queue_name="discover", status=publisher.status,
    )  # fmt: skip
    result = session.run()
    assert result.reason == "empty"  # the second-look queue, after d

    got = [(int(f["candid"]), f["label"], f["labeller"], f["queue"])
           for _, f in redis_client.xrange(queue.key("labels"))]  # fmt: skip
    assert got == [
        (d["candid"], "gal", "ann", "teach"),
        (b["candid"], "extragal", "bob", "discover"),
        (a["candid"], "bogus", "bob", "teach"),
        (d["candid"], "gal", "bob", "second-look"),
    ]
    assert queue.leased() == [] and queue.waiting("discover") == 1  # c, given back
    out = plain(console.file.getvalue())
    assert "discover queue" in out and "second-look queue" in out and "teach queue" in out
    assert "gal: the gal model has been stable for the last 40 labels" in out
    assert "real: the real model is still changing" in out
    assert "now working the second-look queue" in out


def test_finkvra_label_takes_the_queue_to_work(
    config_file, redis_client, queue_prefix, alerts, features, capsys
):
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    queue.push([make_item(alerts[0], features, 0.9)])  # teach only
    assert main(["label", "--config", str(config_file), "--queue", "discover"]) == 0
    assert "the queue is empty (discover)" in capsys.readouterr().out
    assert queue.waiting("teach") == 1 and queue.leased() == []  # not touched
    with pytest.raises(SystemExit) as refused:
        main(["label", "--config", str(config_file), "--queue", "elsewhere"])
    assert refused.value.code == 2

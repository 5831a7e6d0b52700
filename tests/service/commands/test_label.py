"""``finkvra label`` posting labels from the command line (`service.commands.label`)."""

from __future__ import annotations

from service.cli import main


def test_label_command_posts_one_label_and_refuses_unknown_ones(
    config_file, redis_client, queue_prefix, capsys
):
    stream = f"{queue_prefix}:labels"
    assert main(["label", "--config", str(config_file), "--candid", "77", "--label", "maybe"]) == 2
    error = capsys.readouterr().err
    assert all(name in error for name in ("real", "extragal", "gal", "agn", "bogus", "varstar"))
    assert redis_client.exists(stream) == 0

    args = ["label", "--config", str(config_file), "--candid", "77", "--labeller", "ann"]
    assert main([*args, "--label", "g", "--objectId", "ZTF25x"]) == 0
    assert "gal: class 1, real: class 1" in capsys.readouterr().out
    assert main([*args, "--label", "b"]) == 1  # a different label needs --correction
    assert "--correction" in capsys.readouterr().err
    assert main([*args, "--label", "b", "--correction", "--model", "real"]) == 0
    assert "real: class 0" in capsys.readouterr().out
    entries = redis_client.xrange(stream)
    assert [(f["candid"], f["label"], f["kind"], f["labeller"]) for _, f in entries] == [
        ("77", "gal", "label", "ann"), ("77", "bogus", "correction", "ann"),
    ]  # fmt: skip
    assert main([*args, "--undo"]) == 0
    assert redis_client.xrange(stream)[-1][1]["kind"] == "undo"
    assert main(["label", "--config", str(config_file), "--candid", "77"]) == 2

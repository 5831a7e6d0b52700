"""``finkvra generate``: synthetic alerts and their labels to files."""

from __future__ import annotations

import pandas as pd

from finkvra.alerts import read_alert_dicts
from finkvra.synthetic import AlertGenerator
from service.cli import main


def test_generate_writes_alerts_and_truth(tmp_path, capsys):
    out, truth = tmp_path / "alerts.avro", tmp_path / "truth.csv"
    assert (
        main(["generate", "--n", "25", "--seed", "4", "-o", str(out), "--truth", str(truth)]) == 0
    )
    assert "wrote 25 alerts" in capsys.readouterr().out
    alerts = read_alert_dicts(out)
    table = pd.read_csv(truth)
    assert list(table.columns) == ["candid", "objectId", "label"]
    assert table["candid"].tolist() == [a["candid"] for a in alerts]
    assert table["objectId"].tolist() == [a["objectId"] for a in alerts]
    expected = [label for _, label in AlertGenerator(seed=4).labelled(25)]
    assert table["label"].tolist() == expected  # same seed, same stream


def test_generate_picks_the_format_from_the_name(tmp_path):
    for name in ("a.parquet", "b.avro.gz"):
        assert main(["generate", "--n", "5", "-o", str(tmp_path / name)]) == 0
        assert len(read_alert_dicts(tmp_path / name)) == 5
    assert len(pd.read_parquet(tmp_path / "a.parquet")) == 5


def test_generate_refuses_bad_arguments(tmp_path, capsys):
    assert main(["generate", "--n", "5", "-o", str(tmp_path / "a.csv")]) == 2
    assert main(["generate", "--n", "-1", "-o", str(tmp_path / "a.avro")]) == 2
    assert main(["generate", "--n", "5", "-o", str(tmp_path / "no" / "a.avro")]) == 2
    assert "finkvra generate:" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())

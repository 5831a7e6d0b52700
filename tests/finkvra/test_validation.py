"""`finkvra.validation.alert_problem`: real and generated alerts pass, each garbled field is named."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from finkvra.alerts import read_alert_dicts
from finkvra.synthetic import AlertGenerator
from finkvra.validation import alert_problem


def test_every_real_and_generated_alert_passes(shared_data: Path) -> None:
    files = sorted(p for p in shared_data.iterdir() if p.suffix in (".avro", ".parquet"))
    real = [alert for path in files for alert in read_alert_dicts(path)]
    generated = list(AlertGenerator(seed=2).alerts(500))
    assert len(real) == 132
    assert [alert_problem(a) for a in real + generated] == [None] * (len(real) + 500)


def _set(path: str, value):
    def change(alert: dict) -> None:
        *parents, name = path.split(".")
        target = alert
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[name] = value

    return change


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (_set("candidate.jd", math.nan), "candidate.jd is NaN"),
        (_set("candidate.jd", 1e12), "candidate.jd = 1000000000000.0 is outside"),
        (_set("candidate.jd", None), "candidate.jd is missing"),
        (_set("candidate.jd", "2460000.5"), "candidate.jd is a str"),
        (_set("candidate.ra", 360.5), "candidate.ra = 360.5"),
        (_set("candidate.dec", -91.0), "candidate.dec = -91.0"),
        (_set("candidate.magpsf", math.inf), "candidate.magpsf = inf"),
        (_set("candidate.sigmapsf", -1.0), "candidate.sigmapsf = -1.0"),
        (_set("candidate.fid", 7), "candidate.fid = 7"),
        (_set("candidate.isdiffpos", "x"), "candidate.isdiffpos = 'x'"),
        (_set("candidate.drb", 1.5), "candidate.drb = 1.5"),
        (_set("candid", "123"), "candid '123' is a str"),
        (_set("candid", True), "candid True is a bool"),
        (_set("candid", -4), "candid -4 is not a positive int64"),
        (_set("objectId", ""), "objectId '' is not a non-empty string"),
        (_set("objectId", "ZTF 25"), "is not an identifier"),
        (_set("candidate", None), "candidate is not a record"),
        (_set("prv_candidates", "garbage"), "prv_candidates is a str"),
        (_set("prv_candidates.0.jd", None), "prv_candidates[0].jd is missing"),
        (_set("prv_candidates.0.dec", 123.0), "prv_candidates[0].dec = 123.0"),
    ],
)
def test_each_garbled_field_is_named(change, words: str) -> None:
    alert = next(a for a in AlertGenerator(seed=3).alerts(50) if a["prv_candidates"])
    assert alert_problem(alert) is None
    bad = copy.deepcopy(alert)
    change(bad)
    problem = alert_problem(bad)
    assert problem is not None and words in problem, problem


def test_nan_magnitudes_of_upper_limits_and_null_fields_are_fine() -> None:
    alert = copy.deepcopy(next(AlertGenerator(seed=4).alerts(1)))
    alert["candidate"]["drb"] = None
    alert["candidate"]["magpsf"] = math.nan
    alert["prv_candidates"] = [{"jd": alert["candidate"]["jd"] - 1, "magpsf": None, "ra": None}]
    assert alert_problem(alert) is None

"""The label taxonomy and the gal / real maps of DESIGN §3."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from finkvra.labels import (
    LABEL_KEYS,
    LABELS,
    UnknownLabelError,
    apply_label_map,
    label_map,
    normalise_label,
    parse_label_map,
    usable,
)


def test_keys_are_the_prototypes() -> None:
    assert LABEL_KEYS == {
        "r": "real",
        "x": "extragal",
        "g": "gal",
        "a": "agn",
        "b": "bogus",
        "v": "varstar",
    }


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gal", {"gal": 1, "varstar": 1, "extragal": 0, "agn": 0, "real": None, "bogus": None}),
        ("real", {"real": 1, "extragal": 1, "gal": 1, "agn": 1, "varstar": 1, "bogus": 0}),
    ],
)
def test_design_table(model: str, expected: dict) -> None:
    classes = apply_label_map(pd.Series(list(expected), index=[10, 3, 7, 1, 5, 2]), model)
    assert list(classes.index) == [10, 3, 7, 1, 5, 2]  # aligned with the input, whatever its index
    for label, value in zip(expected, classes, strict=True):
        want = expected[label]
        assert math.isnan(value) if want is None else value == want, label
    assert usable(list(expected), model).tolist() == [v is not None for v in expected.values()]


def test_normalise_accepts_keys_and_names() -> None:
    assert [normalise_label(k) for k in "rxgabv"] == list(LABELS)
    assert normalise_label(" GAL ") == "gal"
    with pytest.raises(UnknownLabelError, match="unknown label 'star'"):
        normalise_label("star")
    with pytest.raises(UnknownLabelError):
        normalise_label("s")  # skip is a command, not a label


def test_custom_label_maps() -> None:
    assert parse_label_map("good=1,galactic=1,garbage=0,pm=0") == {
        "good": 1,
        "galactic": 1,
        "garbage": 0,
        "pm": 0,
    }
    assert label_map("gal") == label_map({"gal": 1, "varstar": 1, "extragal": 0, "agn": 0})
    for bad in ("good=2", "good", "=1", ""):
        with pytest.raises(ValueError):
            parse_label_map(bad)
    with pytest.raises(ValueError, match="0 or 1"):
        label_map({"a": 3})

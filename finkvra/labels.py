"""The label taxonomy and the per-model label → class maps (DESIGN §3).

Labels are what a human says about an alert; classes are what one model learns.
The maps are plain data so that they can be logged with a model and compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

#: Label name for each one-key answer of the labelling screen.
LABEL_KEYS: dict[str, str] = {
    "r": "real",
    "x": "extragal",
    "g": "gal",
    "a": "agn",
    "b": "bogus",
    "v": "varstar",
}

#: Keys that are commands, not labels.
COMMAND_KEYS: dict[str, str] = {"s": "skip", "u": "undo", "q": "quit"}

#: Every label a human can give, in key order.
LABELS: tuple[str, ...] = tuple(LABEL_KEYS.values())

#: label → class for each model; a label absent from a map is excluded from that model.
LABEL_MAPS: dict[str, dict[str, int]] = {
    "gal": {"gal": 1, "varstar": 1, "extragal": 0, "agn": 0},
    "real": {"real": 1, "extragal": 1, "gal": 1, "agn": 1, "varstar": 1, "bogus": 0},
}

#: The models the service trains by default.
MODELS: tuple[str, ...] = tuple(LABEL_MAPS)


class UnknownLabelError(ValueError):
    """A label or key that is not part of the taxonomy."""


def normalise_label(label: str) -> str:
    """Return the canonical label for a label name or its one-key form (``'g'`` → ``'gal'``)."""
    text = str(label).strip().lower()
    if text in LABEL_KEYS:
        return LABEL_KEYS[text]
    if text in LABELS:
        return text
    raise UnknownLabelError(
        f"unknown label {label!r}: use one of {', '.join(LABELS)} "
        f"(or their keys {', '.join(LABEL_KEYS)})"
    )


def label_map(model: str | Mapping[str, int]) -> dict[str, int]:
    """Return the label → class map of a named model, or validate and copy a custom one."""
    if isinstance(model, Mapping):
        mapping = {str(k): int(v) for k, v in model.items()}
    elif model in LABEL_MAPS:
        return dict(LABEL_MAPS[model])
    else:
        mapping = parse_label_map(model)
    bad = {k: v for k, v in mapping.items() if v not in (0, 1)}
    if bad:
        raise ValueError(f"label map classes must be 0 or 1, got {bad}")
    return mapping


def parse_label_map(text: str) -> dict[str, int]:
    """Parse ``'gal'``, ``'real'`` or a spec such as ``'good=1,galactic=1,garbage=0'``."""
    text = text.strip()
    if text in LABEL_MAPS:
        return dict(LABEL_MAPS[text])
    mapping: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or value.strip() not in ("0", "1"):
            raise ValueError(
                f"bad label map entry {part!r}: write LABEL=0 or LABEL=1, "
                f"comma-separated, or one of {', '.join(LABEL_MAPS)}"
            )
        mapping[name.strip()] = int(value)
    if not mapping:
        raise ValueError(f"empty label map {text!r}")
    return mapping


def apply_label_map(labels: Iterable[str] | pd.Series, model: str | Mapping[str, int]) -> pd.Series:
    """Map labels to classes (float 0/1), NaN where the model excludes the label.

    The result keeps the index of a Series input, so it aligns with the label table.
    """
    mapping = label_map(model)
    series = labels if isinstance(labels, pd.Series) else pd.Series(list(labels))
    return series.map(mapping).astype(float)


def usable(labels: Iterable[str] | pd.Series, model: str | Mapping[str, int]) -> np.ndarray:
    """Boolean mask of the labels a model can learn from."""
    return apply_label_map(labels, model).notna().to_numpy()

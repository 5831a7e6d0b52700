"""Label noise (finkvra.label_noise): the effective-label rule, the disagreement rate,
and the second look at labels a confident model contradicts."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest

from finkvra import label_noise
from finkvra.label_noise import disagreement_rate, effective_labels, second_look


def _events(rows):
    """rows: (candid, label, labeller, minute[, kind])."""
    records = []
    for row in rows:
        candid, label, labeller, minute = row[:4]
        kind = row[4] if len(row) > 4 else "label"
        records.append(
            {
                "candid": candid,
                "label": label,
                "labeller": labeller,
                "timestamp": f"2026-03-01T10:{minute:02d}:00Z",
                "kind": kind,
            }
        )
    return pd.DataFrame(records)


EVENTS = _events(
    [
        (1, "real", "ann", 0),  # one labeller
        (2, "gal", "ann", 1),  # two agree
        (2, "gal", "bob", 2),
        (3, "gal", "ann", 3),  # one against one: disputed
        (3, "extragal", "bob", 4),
        (4, "bogus", "ann", 5),  # two against one
        (4, "real", "bob", 6),
        (4, "bogus", "cat", 7),
        (5, "real", "ann", 8),  # ann changes her mind: one vote, her latest
        (5, "bogus", "ann", 9, "correction"),
        (6, "gal", "ann", 10),  # bob's label is undone: ann's stands alone
        (6, "extragal", "bob", 11),
        (6, "extragal", "bob", 12, "undo"),
        (7, "varstar", "ann", 14),  # labels differ, gal-model classes agree
        (7, "gal", "bob", 13),
    ]
)


def test_effective_label_rule():
    table = effective_labels(EVENTS).set_index("candid")
    assert table.loc[1, "label"] == "real" and table.loc[1, "n_votes"] == 1
    assert table.loc[2, "label"] == "gal" and table.loc[2, "n_for"] == 2
    assert table.loc[3, "disputed"] and pd.isna(table.loc[3, "label"])  # ties are excluded
    assert table.loc[4, "label"] == "bogus" and table.loc[4, "n_for"] == 2
    assert table.loc[5, "label"] == "bogus" and table.loc[5, "n_votes"] == 1
    assert table.loc[6, "label"] == "gal" and table.loc[6, "labellers"] == ("ann",)
    assert table.loc[7, "disputed"]  # as labels: varstar vs gal
    assert table.loc[4, "labellers"] == ("ann", "bob", "cat")
    assert list(table.index) == [1, 2, 3, 4, 5, 6, 7]


def test_votes_can_be_a_models_classes():
    table = effective_labels(EVENTS, label_map="gal").set_index("candid")
    assert table.loc[7, "label"] == 1 and not table.loc[7, "disputed"]  # varstar = gal = 1
    assert table.loc[3, "disputed"]  # gal (1) vs extragal (0)
    assert 1 not in table.index and 4 not in table.index  # real / bogus do not vote for gal
    real = effective_labels(EVENTS, label_map="real").set_index("candid")
    assert real.loc[3, "label"] == 1  # gal and extragal are both real
    assert real.loc[4, "label"] == 0


def test_the_latest_vote_is_by_timestamp_not_by_arrival():
    late_import = _events([(9, "bogus", "ann", 30), (9, "real", "ann", 5)])  # older, imported later
    assert effective_labels(late_import).loc[0, "label"] == "bogus"


def test_disagreement_rate_and_confused_pairs():
    stats = disagreement_rate(EVENTS)
    # Alerts with two or more standing votes: 2, 3, 4, 7 (5 and 6 have one each).
    assert stats["n_multi"] == 4
    assert stats["n_disagree"] == 3  # 3, 4, 7
    assert stats["rate"] == pytest.approx(3 / 4)
    assert stats["n_disputed"] == 2  # 3 and 7
    assert stats["pairs"] == {"bogus / real": 2, "extragal / gal": 1, "gal / varstar": 1}
    by_class = disagreement_rate(EVENTS, label_map="gal")
    assert by_class["n_multi"] == 3 and by_class["n_disagree"] == 1  # only alert 3
    assert np.isnan(disagreement_rate(_events([(1, "real", "ann", 0)]))["rate"])
    with pytest.raises(ValueError, match="labeller"):
        disagreement_rate(EVENTS.drop(columns="labeller"))


def test_second_look_on_hand_values():
    effective = effective_labels(EVENTS)
    p_gal = pd.Series({2: 0.02, 6: 0.05, 7: 0.5, 3: 0.0})
    flagged = second_look(effective, p_gal, label_map="gal", confidence=0.9, max_labellers=2)
    # 2: gal (1) by two labellers but the model says 2 %: flagged; 6: gal by one, 5 %.
    assert flagged["candid"].tolist() == [2, 6]
    assert flagged["contradiction"].tolist() == pytest.approx([0.98, 0.95])
    assert flagged.loc[0, "labellers"] == ("ann", "bob")
    only_single = second_look(effective, p_gal, label_map="gal", confidence=0.9)
    assert only_single["candid"].tolist() == [6]  # two agreeing labellers are trusted
    with pytest.raises(ValueError, match="confidence"):
        second_look(effective, p_gal, confidence=0.4)


def test_second_look_finds_the_flipped_labels_of_a_generated_task():
    """One labeller, 10 % of labels flipped; out-of-fold probabilities of a real model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    rng = np.random.default_rng(0)
    n = 2000
    X = rng.normal(size=(n, 3))
    truth = (X[:, 0] + X[:, 1] > 0).astype(int)
    flipped = rng.random(n) < 0.1
    given = np.where(flipped, 1 - truth, truth)
    events = pd.DataFrame(
        {
            "candid": np.arange(n),
            "label": np.where(given == 1, "gal", "extragal"),
            "labeller": "ann",
            "timestamp": "2026-03-01T10:00:00Z",
        }
    )
    p_gal = cross_val_predict(LogisticRegression(), X, given, cv=5, method="predict_proba")[:, 1]
    flagged = second_look(
        effective_labels(events), pd.Series(p_gal), label_map="gal", confidence=0.9
    )
    hit = flipped[flagged["candid"].to_numpy()]
    print(f"\nflagged {len(flagged)}, of which flipped {hit.mean():.2f} (base rate 0.10)")
    assert len(flagged) > 50
    assert hit.mean() > 0.8  # most flagged labels are the wrong ones
    assert hit.sum() > 0.25 * flipped.sum()  # and a good share of the wrong ones is found


def test_docstring_examples_run():
    result = doctest.testmod(label_noise, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0

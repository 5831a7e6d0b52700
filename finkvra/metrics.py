"""Honest metrics for the active-learning loop.

Every number here must be computed on rows the model did **not** train on: labels
scored before they were learnt (:class:`Prequential`, the stream's test-then-train
evaluation) or a held-out share. An active learner queries exactly the alerts it is
unsure about, so its training set is the hardest, least representative sample there
is; a score on it says nothing about the stream.

Binary throughout: class 1 is the positive class (``gal`` for the gal model, ``real``
for the real/bogus model, DESIGN §3). Undefined values are NaN, never an exception,
because a small, lopsided labelled set is the normal state of an active learner.

Examples
--------
>>> m = classification_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
>>> m["accuracy"], m["roc_auc"], m["n_pos"]
(0.5, 0.75, 2)
>>> recall_at_k([1, 0, 1, 0], [0.9, 0.8, 0.1, 0.2], k=2)
0.5
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "Prequential",
    "area_under_recall_at_rank",
    "class_balance",
    "classification_metrics",
    "confusion_matrix",
    "permutation_importance_table",
    "recall_at_k",
    "recall_at_rank_curve",
    "roc_auc",
    "write_importance",
]


def _as_binary(y_true: Any) -> np.ndarray:
    """Labels as an int array of 0/1; anything else is a caller's bug, not a metric."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        y = y.ravel()
    if y.dtype == bool:
        return y.astype(np.int64)
    try:
        values = y.astype(float)
    except (TypeError, ValueError):
        raise ValueError("y_true must hold the classes 0 and 1 (class 1 = positive)") from None
    if not np.isin(values, (0.0, 1.0)).all():
        bad = sorted(set(np.unique(values[~np.isin(values, (0.0, 1.0))]).tolist()))[:5]
        raise ValueError(f"y_true must hold only 0 and 1 (class 1 = positive), got {bad}")
    return values.astype(np.int64)


def _as_p1(proba_or_p1: Any, n: int) -> np.ndarray:
    """P(class 1) from a (n,) array or a (n, 2) predict_proba output."""
    p = np.asarray(proba_or_p1, dtype=float)
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    elif p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim != 1 or p.shape[0] != n:
        raise ValueError(
            f"expected P(class 1) as (n,) or (n, 2) with n = {n}, got shape {np.shape(proba_or_p1)}"
        )
    if not np.isfinite(p).all():
        raise ValueError("scores contain NaN or infinite values")
    return p


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def confusion_matrix(y_true: Any, y_pred: Any) -> dict[str, int]:
    """Counts ``tn, fp, fn, tp`` of a binary prediction (class 1 = positive)."""
    y = _as_binary(y_true)
    pred = _as_binary(y_pred)
    if y.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y.shape[0]} vs {pred.shape[0]}")
    return {
        "tn": int(((y == 0) & (pred == 0)).sum()),
        "fp": int(((y == 0) & (pred == 1)).sum()),
        "fn": int(((y == 1) & (pred == 0)).sum()),
        "tp": int(((y == 1) & (pred == 1)).sum()),
    }


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (as in Mann-Whitney)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    counts = np.diff(np.r_[starts, values.shape[0]])
    group_rank = starts + (counts + 1) / 2.0
    ranks = np.empty(values.shape[0])
    ranks[order] = np.repeat(group_rank, counts)
    return ranks


def roc_auc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve: P(a positive scores above a negative), ties counting 1/2.

    NaN when ``y_true`` holds only one class: the area is undefined, and an early
    active-learning round often has a single class.
    """
    y = _as_binary(y_true)
    s = _as_p1(scores, y.shape[0])
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = _average_ranks(s)[y == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(y_true: Any, proba_or_p1: Any, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, f1, roc_auc, n and n_pos of a binary model.

    ``proba_or_p1`` is P(class 1) or a (n, 2) ``predict_proba`` output; the prediction
    is class 1 when P(class 1) >= ``threshold``. A ratio whose denominator is zero
    (no predicted positives, no positives, one class only) is NaN. Pass only rows the
    model did not train on.
    """
    y = _as_binary(y_true)
    p1 = _as_p1(proba_or_p1, y.shape[0])
    counts = confusion_matrix(y, (p1 >= threshold).astype(np.int64))
    tp, fp, fn, tn = counts["tp"], counts["fp"], counts["fn"], counts["tn"]
    return {
        "accuracy": _ratio(tp + tn, y.shape[0]),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": roc_auc(y, p1),
        "n": int(y.shape[0]),
        "n_pos": int(y.sum()),
    }


def recall_at_rank_curve(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Recall after labelling the top ``k`` alerts by score, for ``k = 1 .. n``.

    This is the labeller's view: "if I look at the k highest-ranked alerts, what share
    of all the positives have I seen?". Alerts with equal scores have no order, so
    within a tie the curve is the expectation over their random order (a straight line
    across the tie), not an artefact of row order. Recall is NaN when there are no
    positives.
    """
    y = _as_binary(y_true)
    s = _as_p1(scores, y.shape[0])
    n = y.shape[0]
    k = np.arange(1, n + 1)
    n_pos = int(y.sum())
    if n_pos == 0:
        return k, np.full(n, np.nan)
    order = np.argsort(-s, kind="stable")
    sorted_scores = s[order]
    sorted_y = y[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    sizes = np.diff(np.r_[starts, n])
    group_pos = np.add.reduceat(sorted_y, starts)
    before = np.r_[0, np.cumsum(group_pos)[:-1]]
    group = np.repeat(np.arange(starts.shape[0]), sizes)
    within = k - starts[group]  # 1 .. size inside each tie group
    found = before[group] + within * group_pos[group] / sizes[group]
    return k, found / n_pos


def recall_at_k(y_true: Any, scores: Any, k: int) -> float:
    """Share of the positives among the ``k`` highest scores (ties shared, see the curve).

    ``k <= 0`` gives 0 and ``k >= n`` gives 1; NaN when there are no positives.
    """
    ks, recall = recall_at_rank_curve(y_true, scores)
    if recall.size == 0 or np.isnan(recall[0]):
        return float("nan")
    if k <= 0:
        return 0.0
    return float(recall[min(int(k), ks.shape[0]) - 1])


def area_under_recall_at_rank(y_true: Any, scores: Any) -> float:
    """Area under the recall-at-rank curve, normalised to [0, 1].

    With ``P`` positives among ``n`` alerts, the raw area ``A = sum_k recall(k)`` lies
    between ``(P + 1) / 2`` (every positive ranked last) and ``(P + 1) / 2 + (n - P)``
    (every positive ranked first). The normalisation ``(A - (P + 1) / 2) / (n - P)``
    maps those to 0 and 1; a random ranking scores 0.5 on average. It is the same
    number as :func:`roc_auc` (each negative ranked below a positive adds 1/P to
    ``recall(k)`` for one more ``k``); the curve is the reading a labeller can act on.
    NaN when there are no positives or no negatives.
    """
    y = _as_binary(y_true)
    _, recall = recall_at_rank_curve(y, scores)
    n, n_pos = y.shape[0], int(y.sum())
    if n_pos == 0 or n_pos == n:
        return float("nan")
    return float((recall.sum() - (n_pos + 1) / 2.0) / (n - n_pos))


def _score_predictions(y: np.ndarray, p1: np.ndarray, scoring: str) -> float:
    if scoring == "roc_auc":
        return roc_auc(y, p1)
    return float(((p1 >= 0.5).astype(np.int64) == y).mean())


def permutation_importance_table(
    predict_proba: Callable[[Any], Any],
    X: pd.DataFrame | np.ndarray,
    y: Any,
    n_repeats: int = 5,
    seed: int = 0,
    scoring: str = "roc_auc",
    max_rows: int = 250_000,
) -> pd.DataFrame:
    """Drop in score when one feature's values are shuffled, per feature.

    Works with any ``predict_proba(X) -> (n, 2) or (n,)`` callable (scikit-learn,
    river via ``predict_proba_many``, an MLflow pyfunc), which is why it does not
    wrap ``sklearn.inspection.permutation_importance``. ``X`` keeps its type and index;
    only the values of one column are permuted at a time, with a private generator
    seeded by ``seed``. Compute it on held-out rows: on training rows it measures what
    the model memorised.

    One ``predict_proba`` call per repeat, not per feature: the shuffled copies of
    every feature are stacked into one table of ``n * n_features`` rows (block ``j``
    has feature ``j`` shuffled; a DataFrame keeps ``X``'s index, repeated per block),
    because a model's per-call overhead (validation, threads, MLflow's pyfunc) is
    most of the cost at held-out sizes. Tables beyond ``max_rows`` rows are cut into
    a few calls. The numbers are those of the one-call-per-feature loop.

    Returns a DataFrame ``feature, importance_mean, importance_std`` (std over repeats,
    ddof=0), most important first.
    """
    if scoring not in ("roc_auc", "accuracy"):
        raise ValueError(f"unknown scoring {scoring!r}: use 'roc_auc' or 'accuracy'")
    if int(n_repeats) < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    frame = X if isinstance(X, pd.DataFrame) else None
    values = np.asarray(X, dtype=float) if frame is None else None
    if values is not None and values.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {values.shape}")
    names = (
        [str(c) for c in frame.columns]
        if frame is not None
        else [f"x{j}" for j in range(values.shape[1])]
    )
    n = frame.shape[0] if frame is not None else values.shape[0]
    y_arr = _as_binary(y)
    if y_arr.shape[0] != n:
        raise ValueError(f"X has {n} rows but y has {y_arr.shape[0]}")

    rng = np.random.default_rng(seed)
    baseline = _score_predictions(y_arr, _as_p1(predict_proba(X), n), scoring)
    n_features, repeats = len(names), int(n_repeats)
    # Drawn in the order of the per-feature loop (feature by feature, repeat by repeat),
    # so the numbers do not depend on how the predictions are batched.
    perms = np.empty((n_features, repeats, n), dtype=np.intp)
    for j in range(n_features):
        for r in range(repeats):
            perms[j, r] = rng.permutation(n)
    drops = np.empty((n_features, repeats))
    blocks = max(1, min(n_features, int(max_rows) // max(n, 1)))
    for r in range(repeats):
        for start in range(0, n_features, blocks):
            features = range(start, min(start + blocks, n_features))
            p1 = _as_p1(
                predict_proba(_stacked(frame, values, perms, r, features)), n * len(features)
            )
            for i, j in enumerate(features):
                drops[j, r] = baseline - _score_predictions(y_arr, p1[i * n : (i + 1) * n], scoring)
    table = pd.DataFrame(
        {
            "feature": names,
            "importance_mean": drops.mean(axis=1),
            "importance_std": drops.std(axis=1),
        }
    )
    return table.sort_values(
        "importance_mean", ascending=False, kind="stable", na_position="last"
    ).reset_index(drop=True)


def _stacked(
    frame: pd.DataFrame | None,
    values: np.ndarray | None,
    perms: np.ndarray,
    repeat: int,
    features: range,
) -> pd.DataFrame | np.ndarray:
    """``len(features)`` copies of X, copy ``i`` with feature ``features[i]`` shuffled."""
    matrix = values if frame is None else None
    if matrix is None:
        columns = {c: frame[c].to_numpy() for c in frame.columns}
        blocks = []
        for j in features:
            block = dict(columns)
            name = frame.columns[j]
            block[name] = columns[name][perms[j, repeat]]
            blocks.append(block)
        stacked = {c: np.concatenate([b[c] for b in blocks]) for c in frame.columns}
        index = (
            frame.index.repeat(1)
            if len(features) == 1
            else frame.index.append([frame.index] * (len(features) - 1))
        )
        out = pd.DataFrame(stacked, index=index, columns=frame.columns)
        out.attrs = dict(frame.attrs)
        return out
    stacked = np.tile(matrix, (len(features), 1))
    n = matrix.shape[0]
    for i, j in enumerate(features):
        stacked[i * n : (i + 1) * n, j] = matrix[perms[j, repeat], j]
    return stacked


def write_importance(
    table: pd.DataFrame, csv_path: str | Path, png_path: str | Path
) -> tuple[Path, Path]:
    """Write an importance table as CSV and as a horizontal bar chart (PNG).

    Draws on a private ``Figure`` with the Agg canvas, never through ``pyplot``, so
    it changes no global matplotlib state (backend, current figure) of the caller.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    csv_path, png_path = Path(csv_path), Path(png_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)

    rows = table.iloc[::-1]  # most important at the top of the chart
    figure = Figure(figsize=(6.0, 1.0 + 0.3 * max(len(rows), 1)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.barh(
        [str(name) for name in rows["feature"]],
        rows["importance_mean"].to_numpy(dtype=float),
        xerr=rows["importance_std"].to_numpy(dtype=float),
        color="tab:blue",
    )
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel("drop in score when the feature is shuffled")
    axes.set_title("Permutation importance (held-out rows)")
    figure.tight_layout()
    figure.savefig(png_path, format="png", dpi=100)
    return csv_path, png_path


def class_balance(
    y: Any, classes: Sequence[Any] = (0, 1), min_fraction: float = 0.2
) -> dict[str, Any]:
    """Counts, fractions and minority/majority ratio of the labels, with a warning.

    An active learner that keeps asking about one class can end with a training set
    of almost one class, on which accuracy is meaningless; the warning says so before a
    model is trained or trusted. ``y`` may hold classes (0/1) or label strings (pass
    ``classes=('gal', 'agn', ...)``). Missing values (labels a model excludes, NaN after
    ``apply_label_map``) are skipped; a value outside ``classes`` is an error.
    """
    series = pd.Series(np.asarray(y, dtype=object).ravel()).dropna()
    classes = tuple(classes)
    known = series.isin(classes)
    if not known.all():
        unknown = sorted({str(v) for v in series[~known].unique()})[:5]
        raise ValueError(f"values {unknown} are not among the classes {list(classes)}")
    n = int(series.shape[0])
    counts = {c: int((series == c).sum()) for c in classes}
    fractions = {c: _ratio(counts[c], n) for c in classes}
    majority = max(counts.values()) if counts else 0
    minority = min(counts.values()) if counts else 0
    ratio = _ratio(minority, majority)
    warning = None
    if n == 0:
        warning = "no labels: the classes cannot be checked"
    else:
        scarce = [c for c in classes if fractions[c] < min_fraction]
        if scarce:
            parts = ", ".join(
                f"class {c!r}: {counts[c]} of {n} ({100 * fractions[c]:.1f}%)" for c in scarce
            )
            warning = (
                f"class imbalance under {100 * min_fraction:.0f}% ({parts}); "
                "accuracy will flatter the model, watch recall and roc_auc"
            )
    return {
        "n": n,
        "counts": counts,
        "fractions": fractions,
        "ratio": ratio,
        "warning": warning,
    }


class Prequential:
    """Test-then-train evaluation of a model learning from the label stream.

    Call :meth:`update` with each label and the probability the model gave that alert
    **before** learning the label; the metrics then cover only predictions on unseen
    rows, so they are honest without a held-out set. ``metrics(window=k)`` restricts
    them to the last ``k`` labels, which follows the model as it improves.

    Examples
    --------
    >>> evaluation = Prequential()
    >>> evaluation.update(1, 0.8).update([0, 1], [0.3, 0.4]).metrics()["accuracy"]
    0.6666666666666666
    >>> evaluation.metrics(window=2)["n"]
    2
    """

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self._y: list[np.ndarray] = []
        self._p1: list[np.ndarray] = []
        self.n_ = 0

    def __repr__(self) -> str:
        return f"Prequential(threshold={self.threshold!r})"

    def update(self, y_true: Any, p1: Any) -> Prequential:
        """Record one label (or a batch) with the prediction made before it was learnt."""
        y = _as_binary(np.atleast_1d(y_true))
        p = _as_p1(np.atleast_1d(np.asarray(p1, dtype=float)), y.shape[0])
        self._y.append(y)
        self._p1.append(p.copy())
        self.n_ += y.shape[0]
        return self

    @property
    def y_true_(self) -> np.ndarray:
        """Every label recorded, in order."""
        return np.concatenate(self._y) if self._y else np.zeros(0, dtype=np.int64)

    @property
    def p1_(self) -> np.ndarray:
        """Every prediction recorded, in order."""
        return np.concatenate(self._p1) if self._p1 else np.zeros(0)

    def metrics(self, window: int | None = None) -> dict:
        """:func:`classification_metrics` over everything seen, or the last ``window`` labels."""
        y, p = self.y_true_, self.p1_
        if window is not None:
            if int(window) < 1:
                raise ValueError(f"window must be >= 1, got {window}")
            y, p = y[-int(window) :], p[-int(window) :]
        return classification_metrics(y, p, threshold=self.threshold)

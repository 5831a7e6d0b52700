"""Pool-based experiments of `finkvra.experiments.simulate`: curves, seeds, strategies.

Data: synthetic alerts (finkvra.synthetic) through the real feature code, the ``gal``
map (varstar = 1, extragal/agn = 0, bogus dropped), generated once per session
(`tests/conftest.py`'s ``alerts_table``).

The generator runs with ``n_objects=2000`` so that an object has ~2.5 alerts rather
than ~7.5 (its default of 100 objects alive at once): with few objects the 2,000 pool
alerts hold only ~270 distinct sources and 200 labels see most of them, which makes
any strategy look like random. Pool and test are split by object for the same reason.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from finkvra.experiments import (
    METRICS,
    ExperimentConfig,
    expand_grid,
    run_grid,
    simulate,
    summarise,
)


def _shuffle_columns(X, seed):
    """Each column permuted on its own: the values stay, their link to the rows is gone."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: X[c].to_numpy()[rng.permutation(len(X))] for c in X}, index=X.index)


def _f1s(curve):
    return [point.f1 for point in curve]


def _metrics(curve):
    return [[getattr(point, m) for m in METRICS] for point in curve]


# --------------------------------------------------------------------------- the claim


def test_uncertainty_beats_random_at_200_labels(gal_split):
    X_pool, y_pool, X_test, y_test = gal_split
    assert len(X_pool) > 1900 and len(X_test) > 900
    # The pool and test sets share no object (split by objectId) and no row.
    assert not X_pool.index.isin(X_test.index).any()

    configs = expand_grid(strategies=["uncertainty", "random"], seeds=range(10), max_labels=200)
    assert len(configs) == 20
    results = run_grid(X_pool, y_pool, X_test, y_test, configs, jobs=2)

    expected_n = list(range(30, 201, 10))
    for result in results:
        assert [p.n_labels for p in result.curve] == expected_n
        labelled = [i for p in result.curve for i in p.added]
        assert len(labelled) == len(set(labelled)) == 200
        assert set(labelled) <= set(X_pool.index)

    final = {
        strategy: np.array([r.curve[-1].f1 for r in results if r.config.strategy == strategy])
        for strategy in ("uncertainty", "random")
    }
    difference = final["uncertainty"] - final["random"]  # paired: same seed, same first batch
    se = difference.std(ddof=1) / math.sqrt(len(difference))
    print(
        f"\nmean test F1 at 200 labels over 10 seeds (pool {len(X_pool)}, test {len(X_test)}): "
        f"uncertainty {final['uncertainty'].mean():.4f}, random {final['random'].mean():.4f}; "
        f"paired difference {difference.mean():+.4f} (standard error {se:.4f}), "
        f"uncertainty ahead in {int((difference > 0).sum())} of 10 seeds"
    )
    assert final["uncertainty"].mean() > final["random"].mean()

    # summarise agrees with the per-run numbers.
    summary = summarise(results)
    at_200 = summary[summary["n_labels"] == 200].set_index("strategy")
    for strategy, values in final.items():
        assert at_200.loc[strategy, "f1_mean"] == pytest.approx(values.mean())
        assert at_200.loc[strategy, "f1_std"] == pytest.approx(values.std(ddof=1))
        assert at_200.loc[strategy, "n_seeds"] == 10

    # Worker processes change nothing: one run again, in this process.
    again = simulate(X_pool, y_pool, X_test, y_test, configs[3])
    assert _metrics(again) == _metrics(results[3].curve)
    assert [p.added for p in again] == [p.added for p in results[3].curve]


# --------------------------------------------------------------------------- the loop


def test_first_point_is_the_initial_model_scored_on_the_test_set(small_split):
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    from finkvra.learners import make_learner

    X_pool, y_pool, X_test, y_test = small_split
    config = ExperimentConfig(strategy="uncertainty", max_labels=50, seed=4)
    curve = simulate(X_pool, y_pool, X_test, y_test, config)
    first = list(curve[0].added)
    assert len(first) == 30
    learner = make_learner("hgb", seed=4, learning_rate=0.1, class_weight=None)
    learner.fit(X_pool.loc[first], y_pool.loc[first])
    p1 = learner.predict_proba(X_test)[:, 1]
    predicted = (p1 >= 0.5).astype(int)
    assert curve[0].accuracy == pytest.approx(accuracy_score(y_test, predicted))
    assert curve[0].precision == pytest.approx(precision_score(y_test, predicted))
    assert curve[0].recall == pytest.approx(recall_score(y_test, predicted))
    assert curve[0].f1 == pytest.approx(f1_score(y_test, predicted))
    assert curve[0].roc_auc == pytest.approx(roc_auc_score(y_test, p1))


def test_uncertainty_picks_the_most_uncertain_unlabelled_rows(small_split):
    from finkvra.learners import make_learner

    X_pool, y_pool, X_test, y_test = small_split
    config = ExperimentConfig(strategy="uncertainty", max_labels=40, seed=2)
    curve = simulate(X_pool, y_pool, X_test, y_test, config)
    first = list(curve[0].added)
    learner = make_learner("hgb", seed=2).fit(X_pool.loc[first], y_pool.loc[first])
    rest = X_pool.drop(index=first)
    p1 = learner.predict_proba(rest)[:, 1]
    uncertainty = 1 - 2 * np.abs(p1 - 0.5)
    top = rest.index[np.argsort(-uncertainty, kind="stable")[:10]]
    ranked = np.sort(uncertainty)[::-1]
    assert ranked[9] > ranked[10]  # no tie at the cut: the top ten are well defined
    assert set(curve[1].added) == set(top)


def test_seeded_runs_repeat_and_strategies_share_the_first_batch(small_split):
    X_pool, y_pool, X_test, y_test = small_split
    config = ExperimentConfig(strategy="random", max_labels=50, seed=7)
    a = simulate(X_pool, y_pool, X_test, y_test, config)
    b = simulate(X_pool, y_pool, X_test, y_test, config)
    assert [p.added for p in a] == [p.added for p in b]
    assert _metrics(a) == _metrics(b)

    uncertainty = ExperimentConfig(strategy="uncertainty", max_labels=50, seed=7)
    u = simulate(X_pool, y_pool, X_test, y_test, uncertainty)
    assert u[0].added == a[0].added and _metrics(u)[0] == _metrics(a)[0]
    assert set(u[1].added) != set(a[1].added)
    other_seed = simulate(X_pool, y_pool, X_test, y_test, ExperimentConfig(max_labels=50, seed=8))
    assert set(other_seed[0].added) != set(u[0].added)


def test_corrupting_training_rows_changes_the_curve(small_split):
    X_pool, y_pool, X_test, y_test = small_split
    config = ExperimentConfig(max_labels=60, seed=1)
    clean = simulate(X_pool, y_pool, X_test, y_test, config)
    shuffled = _shuffle_columns(X_pool, 0)
    corrupt = simulate(shuffled, y_pool, X_test, y_test, config)
    # Same labelled ids at first (the initial batch depends on the seed only) ...
    assert corrupt[0].added == clean[0].added
    # ... but the features they carry are noise, so the test-set curve changes.
    assert _metrics(corrupt) != _metrics(clean)
    assert _f1s(corrupt)[0] != _f1s(clean)[0]


def test_corrupting_test_rows_changes_metrics_not_selection(small_split):
    X_pool, y_pool, X_test, y_test = small_split
    config = ExperimentConfig(max_labels=60, seed=1)
    clean = simulate(X_pool, y_pool, X_test, y_test, config)
    shuffled = _shuffle_columns(X_test, 0)
    corrupt = simulate(X_pool, y_pool, shuffled, y_test, config)
    assert [p.added for p in corrupt] == [p.added for p in clean]
    assert [p.n_labels for p in corrupt] == [30, 40, 50, 60]
    assert all(a != b for a, b in zip(_metrics(corrupt), _metrics(clean), strict=True))
    # Flipping the test labels changes the metrics and, again, not the selection.
    flipped = simulate(X_pool, y_pool, X_test, 1 - y_test, config)
    assert [p.added for p in flipped] == [p.added for p in clean]
    for a, b in zip(flipped, clean, strict=True):
        assert a.accuracy == pytest.approx(1 - b.accuracy)
        assert a.roc_auc == pytest.approx(1 - b.roc_auc)


def test_stops_at_max_labels_and_when_the_pool_is_empty(small_split):
    X_pool, y_pool, X_test, y_test = small_split
    cut = simulate(X_pool, y_pool, X_test, y_test, ExperimentConfig(max_labels=55, seed=0))
    assert [p.n_labels for p in cut] == [30, 40, 50, 55]
    assert len(cut[-1].added) == 5
    tiny_pool, tiny_y = X_pool.iloc[:45], y_pool.iloc[:45]
    empty = simulate(tiny_pool, tiny_y, X_test, y_test, ExperimentConfig(max_labels=200))
    assert [p.n_labels for p in empty] == [30, 40, 45]
    assert sorted(i for p in empty for i in p.added) == sorted(tiny_pool.index)


def test_river_arf_runs_and_takes_no_hgb_parameters(small_split):
    X_pool, y_pool, X_test, y_test = small_split
    configs = expand_grid(
        learners=["hgb", "river-arf"],
        strategies=["uncertainty"],
        learning_rates=[0.1, 0.2],
        class_weights=["none", "balanced"],
        seeds=[0, 1],
        max_labels=40,
    )
    river = [c for c in configs if c.learner == "river-arf"]
    assert len(configs) == 4 * 2 + 1 * 2
    assert [(c.learning_rate, c.class_weight, c.seed) for c in river] == [
        ("n/a", "n/a", 0),
        ("n/a", "n/a", 1),
    ]
    hgb = {(c.learning_rate, c.class_weight) for c in configs if c.learner == "hgb"}
    assert hgb == {(0.1, "none"), (0.1, "balanced"), (0.2, "none"), (0.2, "balanced")}
    curve = simulate(X_pool, y_pool, X_test, y_test, river[0])
    assert [p.n_labels for p in curve] == [30, 40]
    assert all(0 <= p.accuracy <= 1 for p in curve)


def test_configuration_errors():
    with pytest.raises(ValueError, match="unknown query strategy"):
        ExperimentConfig(strategy="psychic").normalised()
    with pytest.raises(ValueError, match="unknown learner"):
        ExperimentConfig(learner="oracle").normalised()
    with pytest.raises(ValueError, match="class_weight"):
        ExperimentConfig(class_weight="heavy").normalised()
    with pytest.raises(ValueError, match="max_labels"):
        ExperimentConfig(initial=30, max_labels=20).normalised()
    assert ExperimentConfig(class_weight=None).normalised().class_weight == "none"
    assert ExperimentConfig(strategy="topk_random").normalised().strategy == "topk-random"


# --------------------------------------------------------------------------- results


# --------------------------------------------------------------------------- data files


# --------------------------------------------------------------------------- the command


def test_the_library_default_strategy_is_adaptive():
    from finkvra.strategies import DEFAULT_STRATEGY

    assert DEFAULT_STRATEGY == "adaptive"
    assert ExperimentConfig().strategy == DEFAULT_STRATEGY
    assert {c.strategy for c in expand_grid(seeds=[0])} == {"adaptive", "uncertainty", "random"}

"""Query strategies and the stream budget (finkvra.strategies).

One check suite runs on every registered strategy (as river's ``checks`` do for
every estimator); each strategy then has its own checks against values computed
here independently.
"""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest

from finkvra import strategies
from finkvra.strategies import (
    STRATEGIES,
    TIE_JITTER,
    Adaptive,
    QueryStrategy,
    StreamBudget,
    combine_scores,
    make_strategy,
)

N = 300
K = 12


@pytest.fixture
def pool() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    p1 = rng.random(N)
    X = rng.normal(size=(N, 5))
    X[rng.random(X.shape) < 0.05] = np.nan  # features have holes in real alerts
    return np.column_stack((1 - p1, p1)), X


def _frozen(array: np.ndarray) -> np.ndarray:
    copy = array.copy()
    copy.flags.writeable = False
    return copy


# ---------------------------------------------------------------- shared checks


@pytest.mark.parametrize("name", STRATEGIES)
def test_scores_are_finite_one_per_row(name, pool):
    proba, _ = pool
    scores = make_strategy(name, seed=1).score(proba)
    assert scores.shape == (N,)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize("name", STRATEGIES)
def test_multiclass_scores_are_finite(name):
    rng = np.random.default_rng(3)
    raw = rng.random((50, 4))
    proba = raw / raw.sum(axis=1, keepdims=True)
    scores = make_strategy(name, seed=1).score(proba)
    assert scores.shape == (50,)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("name", STRATEGIES)
def test_same_seed_same_answers(name, pool):
    proba, X = pool
    a, b = make_strategy(name, seed=7), make_strategy(name, seed=7)
    for _ in range(3):  # also across successive calls (random draws advance)
        np.testing.assert_array_equal(a.score(proba), b.score(proba))
        np.testing.assert_array_equal(a.select(proba, K, X=X), b.select(proba, K, X=X))
        np.testing.assert_array_equal(a.priority(proba), b.priority(proba))


@pytest.mark.parametrize("name", STRATEGIES)
def test_select_returns_k_distinct_rows_most_informative_first(name, pool):
    proba, X = pool
    reference = make_strategy(name, seed=5).score(proba)  # the draw select makes first
    picks = make_strategy(name, seed=5).select(proba, K, X=X)
    assert picks.shape == (K,)
    assert np.issubdtype(picks.dtype, np.integer)
    assert len(set(picks.tolist())) == K
    assert ((picks >= 0) & (picks < N)).all()
    assert (np.diff(reference[picks]) <= 0).all()


@pytest.mark.parametrize("name", STRATEGIES)
def test_select_edge_sizes(name, pool):
    proba, X = pool
    strategy = make_strategy(name, seed=0)
    assert strategy.select(proba, 0, X=X).shape == (0,)
    everything = strategy.select(proba[:5], 10, X=X[:5])
    assert sorted(everything.tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        strategy.select(proba, -1, X=X)


@pytest.mark.parametrize("name", STRATEGIES)
def test_inputs_are_not_modified(name, pool):
    proba, X = pool
    proba_in, X_in = _frozen(proba), _frozen(X)  # an in-place write would raise
    strategy = make_strategy(name, seed=0)
    strategy.score(proba_in)
    strategy.priority(proba_in[:, 1])
    strategy.select(proba_in, K, X=X_in)
    np.testing.assert_array_equal(proba_in, proba)
    np.testing.assert_array_equal(X_in, X)


@pytest.mark.parametrize("name", STRATEGIES)
def test_p1_vector_and_binary_proba_score_alike(name, pool):
    proba, _ = pool
    from_matrix = make_strategy(name, seed=2).score(proba)
    from_vector = make_strategy(name, seed=2).score(proba[:, 1])
    np.testing.assert_allclose(from_vector, from_matrix, atol=1e-12)


@pytest.mark.parametrize("name", STRATEGIES)
def test_bad_probabilities_are_refused(name):
    strategy = make_strategy(name)
    for bad in ([0.2, np.nan], [0.2, 1.5], np.ones((3, 1)), np.ones((2, 2, 2))):
        with pytest.raises(ValueError):
            strategy.score(np.asarray(bad))


# ---------------------------------------------------------------- each strategy


def test_uncertainty_is_exactly_the_service_formula(pool):
    proba, _ = pool
    p = proba[:, 1]
    expected = 1 - 2 * np.abs(p - 0.5)
    strategy = make_strategy("uncertainty")
    np.testing.assert_array_equal(strategy.score(proba), expected)
    # The priority adds a random tie-breaker below TIE_JITTER (issue 14: ties at random).
    np.testing.assert_allclose(strategy.priority(p), expected, rtol=0, atol=TIE_JITTER)
    top = np.argsort(-expected, kind="stable")[:K]
    assert set(strategy.select(proba, K).tolist()) == set(top.tolist())


def test_uncertainty_multiclass_rescaling():
    proba = np.array([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.5, 0.3, 0.2]])
    np.testing.assert_allclose(make_strategy("uncertainty").score(proba), [1.0, 0.0, 0.75])


def test_entropy_and_margin_hand_values():
    binary = np.array([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]])
    h = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)) / np.log(2)
    np.testing.assert_allclose(make_strategy("entropy").score(binary), [1.0, h, 0.0])
    np.testing.assert_allclose(make_strategy("margin").score(binary), [1.0, 0.5, 0.0])
    three = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(make_strategy("margin").score(three), [0.8, 0.6])


def test_margin_entropy_uncertainty_rank_alike_on_binary(pool):
    proba, _ = pool
    orders = [
        np.argsort(make_strategy(n).score(proba)) for n in ("uncertainty", "entropy", "margin")
    ]
    np.testing.assert_array_equal(orders[0], orders[1])
    np.testing.assert_array_equal(orders[0], orders[2])


def test_random_priorities_are_uniform_and_fresh_per_batch(pool):
    proba, _ = pool
    strategy = make_strategy("random", seed=3)
    first, second = strategy.priority(proba), strategy.priority(proba)
    assert not np.array_equal(first, second)
    many = np.concatenate([strategy.priority(proba) for _ in range(30)])
    assert abs(many.mean() - 0.5) < 0.02
    assert not np.array_equal(make_strategy("random", seed=4).score(proba), first)


def test_ties_are_broken_by_the_seed_not_by_row_order():
    proba = np.full((40, 2), 0.5)
    picks = {tuple(make_strategy("uncertainty", seed=s).select(proba, 5)) for s in range(6)}
    assert len(picks) > 1


@pytest.mark.parametrize("name", STRATEGIES)
def test_priority_ties_are_broken_at_random_and_keep_distinct_scores(name):
    """Equal scores must not queue in arrival order (Redis orders ties by candid)."""
    proba = np.concatenate([np.full(200, 0.5), np.full(200, 0.9), np.full(200, 0.99)])
    strategy = make_strategy(name, seed=4)
    priority = strategy.priority(proba)
    score = make_strategy(name, seed=4).score(proba)
    assert len(np.unique(priority)) == priority.size  # every tie broken
    np.testing.assert_allclose(priority, score, rtol=0, atol=TIE_JITTER)
    if name != "random":  # the same score: the tie-breaker is uniform, not by position
        first = priority[:200].argsort().argsort()
        again = strategy.priority(proba)[:200].argsort().argsort()
        assert abs(np.corrcoef(first, np.arange(200))[0, 1]) < 0.3
        assert not np.array_equal(first, again)  # fresh for every batch


@pytest.mark.parametrize("name", [n for n in STRATEGIES if n != "random"])
def test_select_ties_change_from_call_to_call(name):
    """A permutation reused for every batch would favour the same batch positions."""
    proba = np.full((60, 2), 0.5)
    X = np.random.default_rng(0).normal(size=(60, 3))
    strategy = make_strategy(name, seed=2)
    picks = [tuple(sorted(strategy.select(proba, 5, X=X).tolist())) for _ in range(8)]
    assert len(set(picks)) > 1
    flat = np.zeros((60, 3))  # nothing but position tells the rows apart
    first_positions = np.concatenate(
        [make_strategy(name, seed=s).select(proba, 5, X=flat) for s in range(40)]
    )
    # Over seeds every position is equally likely (3.3 picks each): none wins the ties.
    assert np.bincount(first_positions, minlength=60).max() <= 15


def test_topk_random_stays_within_the_candidates(pool):
    proba, _ = pool
    uncertainty = 1 - 2 * np.abs(proba[:, 1] - 0.5)
    by_rank = np.argsort(-uncertainty)
    for k in (1, 2, 4):
        allowed = set(by_rank[: k * K].tolist())
        outside_top_batch = False
        for seed in range(10):
            picks = make_strategy("topk-random", seed=seed, k=k).select(proba, K)
            assert len(picks) == K
            assert set(picks.tolist()) <= allowed
            outside_top_batch |= not set(picks.tolist()) <= set(by_rank[:K].tolist())
        assert outside_top_batch == (k > 1)


def _mean_pairwise_distance(points: np.ndarray) -> float:
    total = [np.linalg.norm(a - b) for a, b in itertools.combinations(points, 2)]
    return float(np.mean(total))


def test_diverse_batch_is_more_spread_than_top_uncertainty():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    X = np.vstack([c + rng.normal(scale=0.3, size=(30, 2)) for c in centres])
    # Cluster 0 holds the most uncertain alerts; the others are close behind.
    p1 = np.concatenate([0.5 + rng.uniform(0.0, 0.02, 30), 0.5 + rng.uniform(0.03, 0.1, 90)])
    top = make_strategy("uncertainty").select(p1, 8)
    diverse = make_strategy("diverse", pool_factor=10).select(p1, 8, X=X)
    assert set(top.tolist()) <= set(range(30))
    assert len({int(i) // 30 for i in diverse}) == 4
    assert _mean_pairwise_distance(X[diverse]) > 3 * _mean_pairwise_distance(X[top])
    assert diverse[0] == top[0]  # starts from the most uncertain alert


def test_diverse_needs_matching_features(pool):
    proba, X = pool
    strategy = make_strategy("diverse")
    with pytest.raises(ValueError, match="needs the feature matrix"):
        strategy.select(proba, K)
    with pytest.raises(ValueError, match="one row per proba row"):
        strategy.select(proba, K, X=X[:-1])
    all_nan = np.full_like(X, np.nan)
    with np.errstate(all="raise"):
        picks = strategy.select(proba, K, X=all_nan)
    assert len(set(picks.tolist())) == K


def test_discovery_ranks_the_likeliest_positive_first(pool):
    proba, _ = pool
    strategy = make_strategy("discovery")
    np.testing.assert_array_equal(strategy.score(proba), proba[:, 1])
    top = np.argsort(-proba[:, 1])[:K]
    assert strategy.select(proba, K).tolist() == top.tolist()
    assert make_strategy("discovery", positive=0).select(proba, 1)[0] == np.argmin(proba[:, 1])


def _adaptive_round(strategy, proba, y, k, X=None):
    picks = strategy.select(proba, k, X=X)
    strategy.learn(y[picks])
    return picks


def test_adaptive_exposes_weights_and_choices(pool):
    proba, X = pool
    strategy = make_strategy("adaptive", seed=3)
    assert isinstance(strategy, Adaptive)
    weights = strategy.weights_
    assert set(weights) == {"uncertainty", "topk-random", "diverse", "random"}
    assert sum(weights.values()) == pytest.approx(1.0)
    # At the start: the prior's relative shares (uncertainty trusted, the others 1) of
    # 0.9, the exploration floor folded into random.
    trust = strategy.prior["uncertainty"]
    assert trust > 1
    assert weights["uncertainty"] == pytest.approx(0.9 * trust / (trust + 3))
    assert weights["diverse"] == pytest.approx(0.9 / (trust + 3))
    assert weights["random"] == pytest.approx(0.9 / (trust + 3) + 0.1)
    flat = make_strategy("adaptive", prior={})
    assert flat.weights_["uncertainty"] == pytest.approx(0.9 / 4)
    assert flat.weights_["random"] == pytest.approx(0.9 / 4 + 0.1)
    with pytest.raises(ValueError, match="prior"):
        make_strategy("adaptive", prior={"random": 0.0}).score(proba)
    picks = strategy.select(proba, K, X=X)
    assert len(strategy.choices_) == K
    assert set(strategy.choices_) <= set(weights)
    strategy.learn((proba[picks, 1] > 0.5).astype(int))
    record = strategy.history_[-1]
    assert record["round"] == 1 and record["n"] == K
    assert sum(record["picks"].values()) == K
    assert record["reward"] == pytest.approx(1.0)  # the labels are the model's predictions
    with pytest.raises(ValueError, match="select"):
        strategy.learn([1])
    strategy.select(proba, K, X=X)
    with pytest.raises(ValueError, match="labels"):
        strategy.learn([1, 0])
    no_random = make_strategy("adaptive", experts=("uncertainty", "margin"), explore=0.2, prior={})
    assert no_random.weights_ == pytest.approx({"uncertainty": 0.4, "margin": 0.4, "uniform": 0.2})
    with pytest.raises(ValueError, match="own experts"):
        make_strategy("adaptive", experts=("adaptive",)).score(proba)
    with pytest.raises(ValueError, match="explore"):
        make_strategy("adaptive", explore=0.0).score(proba)


def test_adaptive_reward_is_the_importance_weighted_accuracy():
    """Recomputed here: q_i = (1 - explore) a_unc(i) + explore / n, weight 1 / (n q_i)."""
    rng = np.random.default_rng(8)
    n, k = 100, 10
    p1 = rng.random(n)
    strategy = make_strategy("adaptive", experts=("uncertainty",), explore=0.5, seed=3)
    picks = strategy.select(p1, k)
    top = set(np.argsort(-(1 - 2 * np.abs(p1 - 0.5)))[:k].tolist())
    q = np.array([0.5 * (1 / k) * (i in top) + 0.5 / n for i in range(n)])
    predicted = (p1 >= 0.5).astype(int)
    labels = np.where(rng.random(n) < 0.5, predicted, 1 - predicted)
    strategy.learn(labels[picks])
    weight = 1 / (n * q[picks])
    correct = labels[picks] == predicted[picks]
    expected = (weight * correct).sum() / weight.sum()
    assert strategy.history_[-1]["reward"] == pytest.approx(expected)
    counts = strategy.history_[-1]["picks"]
    assert counts["uncertainty"] + counts["uniform"] == k
    from_uncertainty = [c == "uncertainty" for c in strategy.choices_]
    # Rows the uncertainty expert proposed come from its top k; the others are uniform.
    assert all(int(i) in top for i, mine in zip(picks, from_uncertainty, strict=True) if mine)


def _toy_bandit_run(seed: int, paying: str) -> dict[str, float]:
    """40 rounds where the selecting model's accuracy is set by the previous batch.

    The "model" is right on a share ``0.5 + 0.45 * s`` of the rows, ``s`` being the
    share of the previous batch that the paying expert proposed: its labels teach.
    """
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, 400)
    confidence = rng.random(400)
    strategy = make_strategy("adaptive", experts=("uncertainty", "random"), seed=seed)
    share = 0.5
    for _ in range(40):
        right = rng.random(400) < 0.5 + 0.45 * share
        predicted = np.where(right, truth, 1 - truth)
        proba = np.where(predicted == 1, 0.5 + confidence / 2, 0.5 - confidence / 2)
        picks = strategy.select(proba, 10)
        strategy.learn(truth[picks])
        share = strategy.choices_.count(paying) / 10
    return strategy.weights_


@pytest.mark.parametrize(
    ("paying", "other"), [("uncertainty", "random"), ("random", "uncertainty")]
)
def test_adaptive_moves_weight_to_the_expert_whose_labels_pay(paying, other):
    runs = [_toy_bandit_run(seed, paying) for seed in range(10)]
    assert np.mean([w[paying] for w in runs]) > 0.6
    assert np.mean([w[other] for w in runs]) < 0.4
    assert min(w["random"] for w in runs) >= 0.1  # exploration never goes


# ---------------------------------------------------------------- registry


def test_registry_names_and_errors():
    assert STRATEGIES == (
        "random",
        "uncertainty",
        "entropy",
        "margin",
        "topk-random",
        "diverse",
        "discovery",
        "adaptive",
    )
    for name in STRATEGIES:
        strategy = make_strategy(name, seed=3)
        assert isinstance(strategy, QueryStrategy)
        assert strategy.name == name
        assert strategy.seed == 3
    assert make_strategy("TopK_Random", k=3).k == 3
    assert make_strategy("diverse", pool_factor=2).pool_factor == 2
    with pytest.raises(ValueError) as error:
        make_strategy("qbc")
    for name in STRATEGIES:
        assert name in str(error.value)
    with pytest.raises(TypeError, match="uncertainty"):
        make_strategy("uncertainty", k=3)


# ---------------------------------------------------------------- several models


def test_combine_scores():
    gal = np.array([0.1, 0.9, np.nan, 0.4, np.nan])
    real = np.array([0.3, 0.2, 0.7, 0.4, np.nan])
    both = {"gal": gal, "real": real}
    np.testing.assert_allclose(combine_scores(both), [0.3, 0.9, 0.7, 0.4, np.nan])
    np.testing.assert_allclose(combine_scores(both, how="mean"), [0.2, 0.55, 0.7, 0.4, np.nan])
    np.testing.assert_allclose(combine_scores(both, how="min"), [0.1, 0.2, 0.7, 0.4, np.nan])
    np.testing.assert_array_equal(combine_scores({"gal": gal}), gal)
    with pytest.raises(ValueError, match="max"):
        combine_scores(both, how="median")
    with pytest.raises(ValueError):
        combine_scores({})
    with pytest.raises(ValueError, match="one score per alert"):
        combine_scores({"gal": gal, "real": real[:3]})


# ---------------------------------------------------------------- stream budget


def _run_budget(priorities: np.ndarray, batch: int, target: float = 0.1, seed: int = 0):
    budget = StreamBudget(target_rate=target, window=1000, seed=seed)
    mask = np.concatenate(
        [budget.admit(priorities[i : i + batch]) for i in range(0, priorities.size, batch)]
    )
    return budget, mask


@pytest.mark.parametrize(
    ("shape", "batch"),
    [("uniform", 1), ("uniform", 50), ("rising", 25), ("falling", 25), ("step", 25), ("wave", 25)],
)
def test_stream_budget_keeps_the_rate_and_prefers_high_priorities(shape, batch):
    n = 20_000
    rng = np.random.default_rng(11)
    t = np.arange(n)
    noise = rng.random(n)
    priorities = {
        "uniform": noise,
        "rising": noise + np.linspace(0, 3, n),
        "falling": noise - np.linspace(0, 3, n),
        "step": noise + 5 * (t > n // 2),
        "wave": noise + np.sin(t / 500),
    }[shape]
    budget, mask = _run_budget(priorities, batch)
    assert budget.n_seen_ == n
    assert budget.n_admitted_ == mask.sum()
    assert budget.rate_ == pytest.approx(mask.mean())
    assert abs(budget.rate_ - 0.1) <= 0.02  # ±20% relative
    assert priorities[mask].mean() > priorities[~mask].mean()
    # Relative to the recent past: admitted alerts beat their own neighbourhood.
    local = priorities - np.convolve(priorities, np.ones(501) / 501, mode="same")
    assert local[mask].mean() > local[~mask].mean() + 0.2


def test_stream_budget_one_labeller_per_night():
    """200 labels a night out of 2,000 alerts, arriving in batches of 100."""
    rng = np.random.default_rng(5)
    budget = StreamBudget(target_rate=200 / 2000, window=1000, seed=0)
    per_night = []
    for _ in range(10):
        night = [budget.admit(rng.beta(2, 5, 100)).sum() for _ in range(20)]
        per_night.append(sum(night))
    assert all(160 <= count <= 240 for count in per_night[1:]), per_night


def test_stream_budget_constant_priorities_and_determinism():
    budget, mask = _run_budget(np.zeros(5000), batch=20, target=0.2)
    assert abs(budget.rate_ - 0.2) <= 0.04
    _, again = _run_budget(np.zeros(5000), batch=20, target=0.2)
    np.testing.assert_array_equal(mask, again)
    rng = np.random.default_rng(1)
    priorities = rng.random(3000)
    np.testing.assert_array_equal(
        _run_budget(priorities, 7, seed=3)[1], _run_budget(priorities, 7, seed=3)[1]
    )


def test_stream_budget_validation_and_empty_batches():
    budget = StreamBudget(target_rate=0.1)
    assert np.isnan(budget.rate_)
    assert budget.admit(np.array([])).shape == (0,)
    assert budget.n_seen_ == 0
    with pytest.raises(ValueError, match="finite"):
        budget.admit(np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="target_rate"):
        StreamBudget(target_rate=0.0).admit(np.ones(3))
    with pytest.raises(ValueError, match="window"):
        StreamBudget(target_rate=0.5, window=0).admit(np.ones(3))
    everything = StreamBudget(target_rate=1.0).admit(np.arange(10.0))
    assert everything.all()


def test_docstring_examples_run():
    result = doctest.testmod(strategies, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0

"""Query strategies: which alerts a human should label next (DESIGN §4).

A strategy turns a model's class probabilities into an informativeness score per
alert, higher meaning "a label here teaches the model more". It is used in two ways:

- **stream** (the service): :meth:`QueryStrategy.priority` gives each alert the
  priority of the Redis queue; :class:`StreamBudget` decides which alerts enter the
  queue at all so that a labeller's nightly capacity is respected;
- **pool** (experiments, re-ranking a batch): :meth:`QueryStrategy.select` returns the
  indices of the ``k`` rows to label, most informative first.

Each strategy is one small class in the style of ``river.active``: parameters stored
unchanged, randomness from a ``seed`` feeding a private :class:`numpy.random.Generator`
(never the global one), so that the same seed and the same calls give the same answers.

Examples
--------
>>> import numpy as np
>>> p1 = np.array([0.5, 0.9, 0.3, 0.02])
>>> strategy = make_strategy("uncertainty")
>>> strategy.score(p1).round(2)
array([1.  , 0.2 , 0.6 , 0.04])
>>> strategy.select(p1, 2)
array([0, 2])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "TIE_JITTER",
    "Adaptive",
    "Discovery",
    "Diverse",
    "Entropy",
    "Margin",
    "QueryStrategy",
    "RandomStrategy",
    "StreamBudget",
    "TopKRandom",
    "Uncertainty",
    "as_proba",
    "combine_scores",
    "make_strategy",
]


#: Largest amount :meth:`QueryStrategy.priority` adds to a score to break exact ties.
TIE_JITTER = 1e-9


def as_proba(proba: Any) -> np.ndarray:
    """Return class probabilities as a float (n, n_classes) array; the input is never modified.

    A 1-D input is read as P(class 1) of a binary model (what the service stores), so
    ``p1`` and ``[[1 - p1, p1]]`` score the same. Non-finite or out-of-range values are
    refused: a NaN priority would silently sink or float an alert in the queue.
    """
    array = np.asarray(proba, dtype=float)
    if array.ndim == 1:
        array = np.column_stack((1.0 - array, array))
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(
            f"proba must be (n, n_classes) with n_classes >= 2, or (n,) for P(class 1); "
            f"got shape {np.shape(proba)}"
        )
    if not np.isfinite(array).all():
        raise ValueError("proba contains NaN or infinite values")
    if array.size and (array.min() < -1e-9 or array.max() > 1 + 1e-9):
        raise ValueError("proba values must lie in [0, 1]")
    return array


def _least_confidence(proba: np.ndarray) -> np.ndarray:
    """1 - max p, rescaled to [0, 1]; for two classes exactly ``1 - 2|p1 - 0.5|``."""
    n_classes = proba.shape[1]
    if n_classes == 2:
        return 1.0 - 2.0 * np.abs(proba[:, 1] - 0.5)
    return (1.0 - proba.max(axis=1)) * (n_classes / (n_classes - 1))


class QueryStrategy:
    """Base class: score rows by informativeness, rank them, pick a batch.

    Subclasses implement :meth:`_score` on a validated (n, n_classes) array. The default
    :meth:`select` takes the ``k`` best scores. Ties are broken at random by the private
    generator, afresh on every call, never by row order: with a saturated model many
    alerts share a score, and a fixed order (arrival, or one permutation reused for
    every batch) would always send the same position of a Kafka batch to the labeller.
    :meth:`priority` does the same for the stream (see there).

    :meth:`learn` is the feedback hook: the caller passes the labels of the rows
    :meth:`select` returned last. Fixed strategies ignore it; :class:`Adaptive` learns
    from it which strategy pays off.
    """

    #: Registry name of the strategy.
    name: ClassVar[str] = ""
    #: Whether :meth:`select` needs the feature matrix ``X``.
    needs_features: ClassVar[bool] = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _score(self, proba: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(self, proba: Any) -> np.ndarray:
        """Informativeness of each row (higher = more worth labelling), shape (n,)."""
        return self._score(as_proba(proba))

    def priority(self, proba: Any) -> np.ndarray:
        """Queue priority of each alert in the stream: the score plus a seeded tie-breaker.

        The queue (a Redis sorted set) orders equal priorities by member, i.e. by candid,
        i.e. by order of arrival. Adding ``u * TIE_JITTER`` (``u`` uniform in [0, 1) from
        the private generator) orders exact ties at random and cannot swap two scores
        further apart than :data:`TIE_JITTER` (far below any meaningful difference).
        """
        scores = self.score(proba)
        return scores + self._rng.random(scores.shape[0]) * TIE_JITTER

    def learn(self, y: Any) -> QueryStrategy:
        """Feedback: the classes of the rows the last :meth:`select` returned, in its order.

        Fixed strategies learn nothing from it; the hook exists so that every caller can
        feed every strategy the same way.
        """
        return self

    def _rank(self, scores: np.ndarray) -> np.ndarray:
        """All row indices, best score first, ties in a random order drawn for this call."""
        tiebreak = self._rng.permutation(scores.shape[0])
        return np.lexsort((tiebreak, -scores))

    @staticmethod
    def _check_k(k: int) -> int:
        k = int(k)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        return k

    def select(self, proba: Any, k: int, X: Any = None) -> np.ndarray:
        """Indices of the ``k`` rows to label (all rows if fewer), most informative first."""
        k = self._check_k(k)
        return self._rank(self.score(proba))[:k]


class RandomStrategy(QueryStrategy):
    """Uniform random priorities: the cold start (no model yet) and the baseline to beat.

    Successive calls draw fresh numbers from the private generator, so two batches of
    the stream never share a priority pattern.
    """

    name = "random"

    def _score(self, proba: np.ndarray) -> np.ndarray:
        return self._rng.random(proba.shape[0])


class Uncertainty(QueryStrategy):
    """Least confidence: ``1 - 2|p - 0.5|`` for a binary model (the service default).

    For ``C`` classes it is ``(1 - max p) * C / (C - 1)``, which lies in [0, 1] and is
    the same number as the binary formula when ``C == 2``.
    """

    name = "uncertainty"

    def _score(self, proba: np.ndarray) -> np.ndarray:
        return _least_confidence(proba)


class Entropy(QueryStrategy):
    """Shannon entropy of the class probabilities, divided by ``log C`` so it lies in [0, 1].

    It uses the whole distribution rather than only its top class, which matters for
    more than two classes; for two classes it ranks exactly like :class:`Uncertainty`.
    """

    name = "entropy"

    def _score(self, proba: np.ndarray) -> np.ndarray:
        clipped = np.clip(proba, 0.0, 1.0)
        safe = np.where(clipped > 0, clipped, 1.0)
        plogp = np.where(clipped > 0, clipped * np.log(safe), 0.0)
        return np.clip(-plogp.sum(axis=1) / np.log(proba.shape[1]), 0.0, 1.0)


class Margin(QueryStrategy):
    """``1 - (p_top1 - p_top2)``: a small gap between the two likeliest classes is informative."""

    name = "margin"

    def _score(self, proba: np.ndarray) -> np.ndarray:
        n_classes = proba.shape[1]
        top_two = np.partition(proba, n_classes - 2, axis=1)[:, -2:]
        return 1.0 - (top_two[:, 1] - top_two[:, 0])


class TopKRandom(QueryStrategy):
    """Random batch among the ``k * batch`` most uncertain rows.

    Pure top-uncertainty batches are often near-duplicates of one confusing kind of
    alert; drawing at random from a wider uncertain pool trades a little
    informativeness for variety. The score (and the stream priority) is the
    least-confidence score; the randomness applies to :meth:`select`.

    Parameters
    ----------
    k
        Candidate pool size as a multiple of the batch size (``k >= 1``).
    seed
        Seed of the private generator used for the draws.
    """

    name = "topk-random"

    def __init__(self, k: int = 5, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.k = k

    def _params(self) -> dict[str, Any]:
        return {"k": self.k, "seed": self.seed}

    def _score(self, proba: np.ndarray) -> np.ndarray:
        return _least_confidence(proba)

    def select(self, proba: Any, k: int, X: Any = None) -> np.ndarray:
        """``k`` rows drawn without replacement from the ``self.k * k`` most uncertain."""
        batch = self._check_k(k)
        if int(self.k) < 1:
            raise ValueError(f"topk-random needs k >= 1, got {self.k}")
        order = self._rank(self.score(proba))
        pool = min(order.shape[0], int(self.k) * batch)
        positions = np.sort(self._rng.choice(pool, size=min(batch, pool), replace=False))
        return order[positions]


def _standardise(X: np.ndarray) -> np.ndarray:
    """Columns to zero mean and unit variance, NaN imputed by the mean (0 afterwards).

    Constant or all-NaN columns become 0: they cannot tell alerts apart. Done with
    masks rather than ``np.nanmean`` so an all-NaN column raises no warning.
    """
    finite = np.isfinite(X)
    count = finite.sum(axis=0)
    filled = np.where(finite, X, 0.0)
    mean = filled.sum(axis=0) / np.maximum(count, 1)
    centred = np.where(finite, X - mean, 0.0)
    std = np.sqrt((centred**2).sum(axis=0) / np.maximum(count, 1))
    scale = np.where(std > 0, std, 1.0)
    return np.where(std > 0, centred / scale, 0.0)


class Diverse(QueryStrategy):
    """Diversity-aware batch: spread out in feature space among the most uncertain rows.

    Takes the ``pool_factor * batch`` most uncertain rows, then greedily picks the
    farthest point from those already chosen (k-center), starting from the most
    uncertain, on standardised features with NaN imputed. A batch of near-identical
    alerts would cost the labeller ``batch`` clicks for about one label's worth of
    information. The picks are returned most uncertain first.

    Parameters
    ----------
    pool_factor
        Candidate pool size as a multiple of the batch size (``>= 1``).
    seed
        Seed of the tie-breaking permutation.
    """

    name = "diverse"
    needs_features = True

    def __init__(self, pool_factor: int = 5, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.pool_factor = pool_factor

    def _params(self) -> dict[str, Any]:
        return {"pool_factor": self.pool_factor, "seed": self.seed}

    def _score(self, proba: np.ndarray) -> np.ndarray:
        return _least_confidence(proba)

    def select(self, proba: Any, k: int, X: Any = None) -> np.ndarray:
        """``k`` mutually distant rows among the ``pool_factor * k`` most uncertain."""
        batch = self._check_k(k)
        if int(self.pool_factor) < 1:
            raise ValueError(f"diverse needs pool_factor >= 1, got {self.pool_factor}")
        scores = self.score(proba)
        if X is None:
            raise ValueError("the 'diverse' strategy needs the feature matrix X")
        features = np.asarray(X, dtype=float)
        if features.ndim == 1:
            features = features[:, None]
        if features.ndim != 2 or features.shape[0] != scores.shape[0]:
            raise ValueError(
                f"X must have one row per proba row ({scores.shape[0]}), got shape {features.shape}"
            )
        order = self._rank(scores)
        pool = min(order.shape[0], int(self.pool_factor) * batch)
        size = min(batch, pool)
        if size == 0:
            return order[:0]
        points = _standardise(features)[order[:pool]]
        chosen = np.zeros(pool, dtype=bool)
        chosen[0] = True
        nearest = np.sqrt(((points - points[0]) ** 2).sum(axis=1))
        for _ in range(size - 1):
            # argmax returns the first maximum, i.e. the most uncertain among equals.
            pick = int(np.argmax(np.where(chosen, -np.inf, nearest)))
            chosen[pick] = True
            nearest = np.minimum(nearest, np.sqrt(((points - points[pick]) ** 2).sum(axis=1)))
        return order[:pool][chosen]


class Discovery(QueryStrategy):
    """Most likely positive first: ``P(class positive)`` (exploitation, not learning).

    What an astronomer who wants the interesting alerts first does (the *discover*
    queue, DESIGN §4, for one model); in experiments it is the baseline that shows what
    chasing likely positives costs the model. For the two-model ATLAS-style rank see
    :mod:`finkvra.discovery`.

    Parameters
    ----------
    positive
        Column of the class sought (1: class 1 of a binary model).
    seed
        Seed of the tie-breaking generator.
    """

    name = "discovery"

    def __init__(self, positive: int = 1, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.positive = positive

    def _params(self) -> dict[str, Any]:
        return {"positive": self.positive, "seed": self.seed}

    def _score(self, proba: np.ndarray) -> np.ndarray:
        return proba[:, int(self.positive)].copy()


#: The fixed strategies :class:`Adaptive` chooses among by default.
ADAPTIVE_EXPERTS: tuple[str, ...] = ("uncertainty", "topk-random", "diverse", "random")

#: Initial relative shares of the experts (those not named: 1). Uncertainty sampling is
#: trusted first (it is the usual winner and, on few labels, the bandit cannot tell the
#: experts apart yet); with 4 experts it starts at 0.41 of the mixture against 0.16 for
#: each other expert (random: 0.26 with the exploration floor). Measured in
#: tests/finkvra/test_adaptive_curves.py, with ``learning_rate = 4``: a flat prior lags
#: uncertainty on the real alerts, a stronger one (4 and more) cannot be unlearnt within
#: 110 labels on the repeated-objects task, where uncertainty loses to random.
ADAPTIVE_PRIOR: dict[str, float] = {"uncertainty": 2.5}


def prior_log_weights(experts: Sequence[str], prior: Mapping[str, float]) -> np.ndarray:
    """Initial log-weights: the log of each expert's prior share (1 when not named).

    A prior that trusts one expert is a head start the bandit can lose: the log-weights
    move by the same evidence from there, so a few rounds that say otherwise undo it.
    """
    shares = []
    for name in experts:
        share = float(prior.get(make_strategy(name).name, prior.get(name, 1.0)))
        if not share > 0:
            raise ValueError(f"prior share of {name!r} must be > 0, got {share}")
        shares.append(share)
    return np.log(np.asarray(shares, dtype=float))


class Adaptive(QueryStrategy):
    """Learn online which strategy pays off on this task: "active learning by learning".

    A bandit over fixed strategies (the *experts*) in the manner of EXP4.P, as in Hsu &
    Lin (2015, "Active learning by learning", AAAI): no strategy wins on every task
    (uncertainty sampling beat random on one real task of four and lost on another),
    so the weights follow the evidence of this task instead of a prior choice.

    One :meth:`select` of ``k`` rows: every expert proposes its ``k`` rows (random:
    all rows); the mixture ``pi`` of the experts' normalised weights, with at least
    ``explore`` given to uniform random sampling, draws ``k`` times an expert and takes
    its best row not yet taken (a uniform random one once all its proposals are
    taken). ``q_i = sum_j pi_j a_j(i)`` is the probability of row ``i`` under this
    mixture (``a_j`` = uniform over expert ``j``'s proposals), and ``1 / (n q_i)`` its
    importance weight; drawing a batch without replacement makes this the one-draw
    approximation of the inclusion probability.

    Reward (:meth:`learn`, given the labels of those rows): the importance-weighted
    accuracy of the model that made the selection, on the rows it selected, which is
    an unbiased estimate of that model's accuracy on the pool and honest (those rows
    were not learnt yet). It rewards the experts whose proposals trained that model,
    i.e. the previous batch's: ``r_hat_j = (r - baseline) * mean_i a_j(i) / q_i`` with
    ``baseline`` the running mean reward (it removes the shared level of accuracy and
    keeps the shares that did better), then ``log w_j += learning_rate * r_hat_j``.
    Because random sampling keeps at least ``explore`` of every batch and the weights
    move only on evidence, the mixture cannot collapse onto a strategy that hurts.

    The log-weights start from a prior (``log`` of each expert's relative share) rather
    than flat: with a few dozen labels there are too few rounds for the rewards to tell
    the experts apart, and a flat start then spends most of the batch on the weaker
    experts (on the real alerts it lagged uncertainty sampling by 0.018 F1 at 28
    labels). The prior is a head start, not a floor: the same evidence moves it.

    :meth:`score` (and the stream :meth:`priority`) is the ``pi``-weighted mean of the
    experts' scores, so the stream follows the same mixture. In the stream the caller
    passes labels that came back through :meth:`learn` the same way.

    Parameters
    ----------
    experts
        Names of the strategies to choose among (built with this seed plus their
        position, so each draws its own stream).
    explore
        Share of every batch left to uniform random sampling, in (0, 1].
    learning_rate
        Step of the log-weights per unit of (centred, importance-weighted) reward. The
        reward moves by a few hundredths per round, so the step is large: the prior must
        be undone within the ten or so rounds of a labelling evening.
    prior
        ``{expert: relative share}`` the log-weights start from (experts not named: 1;
        ``{}`` is the flat start of EXP4.P); default :data:`ADAPTIVE_PRIOR`, which
        trusts uncertainty sampling until the rewards say otherwise.
    seed
        Seed of the private generator.

    Attributes
    ----------
    weights_
        ``{expert: share}``: the mixture ``pi`` the next selection uses.
    choices_
        The expert that proposed each row of the last selection, in its order.
    history_
        One dict per :meth:`learn`: round, reward, counts of the experts' picks and the
        weights afterwards (what :func:`finkvra.tracking.log_adaptive` logs).
    """

    name = "adaptive"
    needs_features = True

    def __init__(
        self,
        experts: tuple[str, ...] | list[str] = ADAPTIVE_EXPERTS,
        explore: float = 0.1,
        learning_rate: float = 4.0,
        prior: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        self.experts = experts
        self.explore = explore
        self.learning_rate = learning_rate
        self.prior = dict(ADAPTIVE_PRIOR if prior is None else prior)
        self._experts: list[QueryStrategy] | None = None
        self._log_weights = np.zeros(0)
        self._pending: dict[str, Any] | None = None
        self._trained_by: np.ndarray | None = None
        self._rewards: list[float] = []
        self.choices_: tuple[str, ...] = ()
        self.history_: list[dict[str, Any]] = []

    def _params(self) -> dict[str, Any]:
        return {
            "experts": tuple(self.experts),
            "explore": self.explore,
            "learning_rate": self.learning_rate,
            "prior": dict(self.prior),
            "seed": self.seed,
        }

    def _built(self) -> list[QueryStrategy]:
        if self._experts is None:
            names = [str(name) for name in self.experts]
            if not names:
                raise ValueError("adaptive needs at least one expert strategy")
            if not 0 < float(self.explore) <= 1:
                raise ValueError(f"explore must lie in (0, 1], got {self.explore}")
            built = []
            for i, name in enumerate(names):
                if make_strategy(name).name == self.name:
                    raise ValueError("adaptive cannot be one of its own experts")
                built.append(make_strategy(name, seed=int(self.seed) * 1009 + i + 1))
            self._experts = built
            self._log_weights = prior_log_weights([e.name for e in built], self.prior)
        return self._experts

    @property
    def expert_names_(self) -> tuple[str, ...]:
        """The experts' canonical names, in order."""
        return tuple(e.name for e in self._built())

    def _mixture(self) -> np.ndarray:
        """``pi``: the experts' shares, a uniform-random floor of ``explore`` included.

        The floor goes to the ``random`` expert if there is one; otherwise it is an
        extra, last component (uniform random rows).
        """
        experts = self._built()
        shares = np.exp(self._log_weights - self._log_weights.max())
        shares /= shares.sum()
        explore = float(self.explore)
        mixture = np.append((1.0 - explore) * shares, explore)
        random_at = [i for i, e in enumerate(experts) if e.name == RandomStrategy.name]
        if random_at:
            mixture[random_at[0]] += mixture[-1]
            mixture[-1] = 0.0
        return mixture

    @property
    def weights_(self) -> dict[str, float]:
        """``{expert: share}`` of the next selection (``explore`` folded into ``random``)."""
        mixture = self._mixture()
        shares = {name: float(w) for name, w in zip(self.expert_names_, mixture, strict=False)}
        if mixture[-1] > 0:
            shares["uniform"] = float(mixture[-1])
        return shares

    def _score(self, proba: np.ndarray) -> np.ndarray:
        mixture = self._mixture()
        total = mixture[-1] * self._rng.random(proba.shape[0])
        for weight, expert in zip(mixture, self._built(), strict=False):
            total = total + weight * expert._score(proba)
        return np.clip(total, 0.0, 1.0)

    def select(self, proba: Any, k: int, X: Any = None) -> np.ndarray:
        """``k`` rows drawn from the experts' proposals by the mixture; best score first.

        Experts that need features (``diverse``) fall back to their score ranking when
        ``X`` is not given. Remembers what :meth:`learn` needs.
        """
        batch = self._check_k(k)
        proba = as_proba(proba)
        scores = self._score(proba)
        n = proba.shape[0]
        size = min(batch, n)
        experts = self._built()
        mixture = self._mixture()
        proposals: list[np.ndarray] = []
        advice = np.zeros((len(mixture), n))
        for j, expert in enumerate(experts):
            if expert.name == RandomStrategy.name:
                proposals.append(np.empty(0, dtype=np.intp))
                advice[j] = 1.0 / max(n, 1)
                continue
            if expert.needs_features and X is None:
                picks = expert._rank(expert.score(proba))[:size]
            else:
                picks = expert.select(proba, size, X=X)
            proposals.append(np.asarray(picks, dtype=np.intp))
            if size:
                advice[j, picks] = 1.0 / size
        proposals.append(np.empty(0, dtype=np.intp))
        advice[-1] = 1.0 / max(n, 1)
        query = mixture @ advice  # q_i, sums to 1

        names = (*self.expert_names_, "uniform")
        taken = np.zeros(n, dtype=bool)
        picks, chosen_by = [], []
        cursor = [0] * len(mixture)
        for _ in range(size):
            j = int(self._rng.choice(len(mixture), p=mixture))
            row = -1
            own = proposals[j]
            while cursor[j] < own.shape[0] and row < 0:
                candidate = int(own[cursor[j]])
                cursor[j] += 1
                if not taken[candidate]:
                    row = candidate
            if row < 0:  # random, or an expert whose proposals are all taken
                row = int(self._rng.choice(np.flatnonzero(~taken)))
            taken[row] = True
            picks.append(row)
            chosen_by.append(names[j])
        picks_arr = np.asarray(picks, dtype=np.intp)
        order = np.argsort(-scores[picks_arr], kind="stable")
        picks_arr = picks_arr[order]
        self.choices_ = tuple(chosen_by[i] for i in order)
        self._pending = {
            "predicted": proba[picks_arr].argmax(axis=1),
            "weight": 1.0 / (n * query[picks_arr]) if size else np.zeros(0),
            "ratio": (advice[:, picks_arr] / query[picks_arr]) if size else advice[:, :0],
            "mixture": mixture,
        }
        return picks_arr

    def learn(self, y: Any) -> Adaptive:
        """Reward the experts with the labels of the last selection (see the class doc)."""
        if self._pending is None:
            raise ValueError("adaptive.learn needs a select() first")
        pending, self._pending = self._pending, None
        labels = np.asarray(y).ravel()
        if labels.shape[0] != pending["predicted"].shape[0]:
            raise ValueError(
                f"learn got {labels.shape[0]} labels for {pending['predicted'].shape[0]} picks"
            )
        record: dict[str, Any] = {"round": len(self.history_) + 1, "n": int(labels.shape[0])}
        counts = {name: 0 for name in (*self.expert_names_, "uniform")}
        for name in self.choices_:
            counts[name] += 1
        record["picks"] = counts
        reward = float("nan")
        if labels.shape[0]:
            correct = (labels.astype(np.int64) == pending["predicted"]).astype(float)
            weight = pending["weight"]
            reward = float((weight * correct).sum() / weight.sum())
            if self._trained_by is not None and self._rewards:
                centred = reward - float(np.mean(self._rewards))
                credit = centred * self._trained_by.mean(axis=1)
                # The uniform floor is not an expert: its credit is dropped.
                self._log_weights = self._log_weights + float(self.learning_rate) * credit[:-1]
            self._rewards.append(reward)
            self._trained_by = pending["ratio"]
        record["reward"] = reward
        record["weights"] = self.weights_
        self.history_.append(record)
        return self


_REGISTRY: dict[str, type[QueryStrategy]] = {
    cls.name: cls
    for cls in (
        RandomStrategy,
        Uncertainty,
        Entropy,
        Margin,
        TopKRandom,
        Diverse,
        Discovery,
        Adaptive,
    )
}

#: The strategy the library uses when none is named (experiments).
DEFAULT_STRATEGY = Adaptive.name

#: Names accepted by :func:`make_strategy`.
STRATEGIES: tuple[str, ...] = tuple(_REGISTRY)


def make_strategy(name: str, seed: int = 0, **params: Any) -> QueryStrategy:
    """Build a strategy by name (``'topk_random'`` is read as ``'topk-random'``).

    Names come from configuration files and the command line, hence the error that
    lists the valid ones.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise ValueError(f"unknown query strategy {name!r}: use one of {', '.join(STRATEGIES)}")
    cls = _REGISTRY[key]
    try:
        return cls(seed=seed, **params)
    except TypeError as error:
        raise TypeError(f"bad parameters {params} for query strategy {key!r}: {error}") from None


_COMBINERS = {"max": np.nanmax, "mean": np.nanmean, "min": np.nanmin}


def combine_scores(scores: Mapping[str, Any], how: str = "max") -> np.ndarray:
    """One priority per alert from several models' scores (e.g. ``gal`` and ``real``).

    ``max`` (default) queues an alert that any model finds informative; ``mean``
    favours alerts that confuse several models; ``min`` only those that confuse all.
    A NaN score (a model that could not score the alert) is ignored; an alert no
    model scored stays NaN.
    """
    if how not in _COMBINERS:
        raise ValueError(f"unknown combination {how!r}: use one of {', '.join(_COMBINERS)}")
    if not scores:
        raise ValueError("combine_scores needs at least one model's scores")
    arrays = [np.asarray(v, dtype=float) for v in scores.values()]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 1:
        raise ValueError(
            f"every model must give one score per alert; got shapes "
            f"{ {name: np.shape(v) for name, v in scores.items()} }"
        )
    stacked = np.vstack(arrays)
    result = np.full(stacked.shape[1], np.nan)
    scored = ~np.isnan(stacked).all(axis=0)
    if scored.any():
        result[scored] = _COMBINERS[how](stacked[:, scored], axis=0)
    return result


class StreamBudget:
    """Decide, batch by batch, which alerts go to the labelling queue.

    A labeller labels about ``capacity`` alerts a night out of ``n`` arriving
    (``target_rate = capacity / n``, e.g. 200 / 2000 = 0.1). Sending everything would
    bury the few informative alerts under a queue nobody empties; sending a fixed
    top fraction of each batch ignores that batches differ in size and quality.

    The threshold is the ``1 - r`` quantile of the last ``window`` priorities plus
    the current batch, where ``r = target_rate + (target_rate * seen - admitted) / window``
    corrects for the realised share so far (an integral controller: under drifting
    priorities the long-run share still converges to the target). Alerts exactly at
    the threshold are admitted at random with the probability that hits ``r``, so
    constant priorities (e.g. a saturated model) still give the right share.

    Parameters
    ----------
    target_rate
        Share of alerts to admit, in (0, 1].
    window
        Number of recent priorities that set the threshold.
    seed
        Seed of the private generator for ties at the threshold.

    Attributes
    ----------
    n_seen_, n_admitted_
        Alerts seen and admitted so far.
    threshold_
        The threshold used for the last batch.

    Examples
    --------
    >>> budget = StreamBudget(target_rate=0.1, seed=0)
    >>> rng = np.random.default_rng(1)
    >>> admitted = np.concatenate([budget.admit(rng.random(100)) for _ in range(50)])
    >>> round(budget.rate_, 2)
    0.1
    """

    def __init__(self, target_rate: float, window: int = 1000, seed: int = 0) -> None:
        self.target_rate = target_rate
        self.window = window
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._recent = np.empty(0)
        self.n_seen_ = 0
        self.n_admitted_ = 0
        self.threshold_ = float("nan")

    def __repr__(self) -> str:
        return (
            f"StreamBudget(target_rate={self.target_rate!r}, window={self.window!r}, "
            f"seed={self.seed!r})"
        )

    @property
    def rate_(self) -> float:
        """Realised share of alerts admitted so far (NaN before the first alert)."""
        return self.n_admitted_ / self.n_seen_ if self.n_seen_ else float("nan")

    def admit(self, priorities: Any) -> np.ndarray:
        """Boolean mask of the alerts of this batch to queue; updates the budget's state."""
        if not 0 < float(self.target_rate) <= 1:
            raise ValueError(f"target_rate must be in (0, 1], got {self.target_rate}")
        if int(self.window) < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        batch = np.asarray(priorities, dtype=float).ravel()
        if not np.isfinite(batch).all():
            raise ValueError("priorities must be finite")
        if batch.size == 0:
            return np.zeros(0, dtype=bool)
        target = float(self.target_rate)
        owed = target * self.n_seen_ - self.n_admitted_
        rate = float(np.clip(target + owed / int(self.window), 0.0, 1.0))

        reference = np.concatenate((self._recent, batch))
        m = reference.shape[0]
        wanted = rate * m
        # The smallest admitted value when the `wanted` largest are admitted.
        rank_desc = int(np.clip(np.ceil(wanted) - 1, 0, m - 1))
        threshold = float(np.partition(reference, m - 1 - rank_desc)[m - 1 - rank_desc])
        n_above = int((reference > threshold).sum())
        n_at = int((reference == threshold).sum())
        tie_share = float(np.clip((wanted - n_above) / n_at, 0.0, 1.0))

        at = batch == threshold
        mask = batch > threshold
        if at.any():
            mask[at] = self._rng.random(int(at.sum())) < tie_share

        self._recent = reference[-int(self.window) :].copy()
        self.threshold_ = threshold
        self.n_seen_ += batch.size
        self.n_admitted_ += int(mask.sum())
        return mask

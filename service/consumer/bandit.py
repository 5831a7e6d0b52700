"""The adaptive strategy in the stream: a bandit over query strategies, fed by the labels.

`finkvra.strategies.Adaptive` picks batches from a pool; the service has no pool, only a
stream of alerts scored one batch at a time and labels that come back later. This is
the same "active learning by learning" bandit (EXP4.P-style, Hsu & Lin 2015) laid out
for that stream:

* **Asking** (`StreamBandit.priorities`, in every scorer): for each alert an expert ``j``
  is drawn from the mixture ``pi`` (the experts' normalised weights, at least
  ``explore`` of it uniform random), and the alert's priority is that expert's
  priority. The item records ``{"expert": j, "p": pi_j}`` in ``vetting["queued_by"]``
  and its label event carries it back.
* **Learning** (`StreamBandit.learn`, in the trainer after a round): the reward is the
  importance-weighted accuracy (weights ``1 / p``) of the models' honest, prequential
  predictions on the labels that came back since the last update; as in the library,
  the credit goes to the experts whose labels trained the model that was judged, i.e.
  the previous update's, ``r_hat_j = (r - mean past r) * mean_i 1[e_i = j] / p_i``,
  and ``log w_j += learning_rate * r_hat_j``, from the same prior as the library's
  (``log`` of `finkvra.strategies.ADAPTIVE_PRIOR`'s relative shares: uncertainty trusted
  until the rewards say otherwise).

The state (`StreamBandit.state`) is plain JSON, kept in Redis (`LabelQueue.bandit_state`),
so that it survives restarts and every replica's scorer uses the trainer's weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from finkvra.strategies import (
    ADAPTIVE_EXPERTS,
    ADAPTIVE_PRIOR,
    QueryStrategy,
    RandomStrategy,
    make_strategy,
    prior_log_weights,
)

__all__ = ["StreamBandit"]

UNIFORM = "uniform"


class StreamBandit:
    """The stream form of `finkvra.strategies.Adaptive` (see the module docstring).

    Parameters
    ----------
    experts, explore, learning_rate, prior, seed
        As `finkvra.strategies.Adaptive` (the experts' names; the uniform-random share;
        the step of the log-weights; the experts' initial relative shares, which the
        log-weights start from; the seed of the private generator).

    Attributes
    ----------
    log_weights_
        ``{expert: log-weight}``.
    history_
        One record per `learn` (round, n, reward, picks, weights): what
        `finkvra.tracking.log_adaptive` logs.
    learnt_
        How many label-store events the updates have consumed (the trainer's cursor).
    """

    def __init__(
        self,
        experts: Sequence[str] = ADAPTIVE_EXPERTS,
        explore: float = 0.1,
        learning_rate: float = 4.0,
        prior: Mapping[str, float] | None = None,
        seed: int | None = 0,
    ) -> None:
        self.experts = tuple(make_strategy(name).name for name in experts)
        if not self.experts:
            raise ValueError("the adaptive strategy needs at least one expert")
        if not 0 < float(explore) <= 1:
            raise ValueError(f"explore must lie in (0, 1], got {explore}")
        self.explore = float(explore)
        self.learning_rate = float(learning_rate)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        base = int(self._rng.integers(2**31)) if seed is None else int(seed) * 1009
        self._strategies: list[QueryStrategy] = [
            make_strategy(name, seed=base + i + 1) for i, name in enumerate(self.experts)
        ]
        self.prior = dict(ADAPTIVE_PRIOR if prior is None else prior)
        start = prior_log_weights(self.experts, self.prior)
        self._start = dict(zip(self.experts, start.tolist(), strict=True))
        self.log_weights_: dict[str, float] = dict(self._start)
        self.rewards_: list[float] = []
        self.trained_by_: dict[str, float] | None = None
        self.history_: list[dict[str, Any]] = []
        self.learnt_ = 0

    def __repr__(self) -> str:
        return f"StreamBandit(experts={self.experts!r}, explore={self.explore})"

    # ------------------------------------------------------------------ the mixture

    @property
    def weights_(self) -> dict[str, float]:
        """``{expert: share}`` of the next draws (``explore`` folded into ``random``)."""
        logs = np.array([self.log_weights_[name] for name in self.experts])
        shares = np.exp(logs - logs.max())
        shares = (1.0 - self.explore) * shares / shares.sum()
        mixture = dict(zip(self.experts, shares.tolist(), strict=True))
        if RandomStrategy.name in mixture:
            mixture[RandomStrategy.name] += self.explore
        else:
            mixture[UNIFORM] = self.explore
        return mixture

    def priorities(
        self, probas: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
        """Per alert: ``(priority, model, queued_by)`` from the expert drawn for it.

        ``probas`` maps each model to its ``(n, 2)`` probabilities. An expert's priority
        for an alert is the highest any model gives it (as `combine_scores` ``max``);
        ``model`` says which model that was.
        """
        models = list(probas)
        n = int(np.asarray(probas[models[0]]).shape[0])
        mixture = self.weights_
        names = list(mixture)
        shares = np.array([mixture[name] for name in names])
        drawn = self._rng.choice(len(names), size=n, p=shares / shares.sum())
        columns = []  # one (n_models, n) block per expert, plus uniform if present
        for name in names:
            if name == UNIFORM:
                columns.append(np.tile(self._rng.random(n), (len(models), 1)))
                continue
            strategy = self._strategies[self.experts.index(name)]
            columns.append(np.vstack([strategy.priority(probas[m]) for m in models]))
        stacked = np.nan_to_num(np.stack(columns), nan=-np.inf)  # (experts, models, n)
        rows = np.arange(n)
        chosen = stacked[drawn, :, rows]  # (n, models)
        best = np.argmax(chosen, axis=1)
        priority = chosen[rows, best]
        priority = np.where(np.isfinite(priority), priority, 0.0)
        queued_by = [{"expert": names[j], "p": float(shares[j])} for j in drawn.tolist()]
        return priority, [models[i] for i in best.tolist()], queued_by

    # ------------------------------------------------------------------ learning

    def learn(self, rows: Sequence[tuple[str, float, float]], *, consumed: int = 0) -> dict:
        """Update the weights from ``(expert, p, correct)`` per returned label and model.

        ``correct`` is 1.0 when the model's honest prediction of that label was right.
        Rows of experts this bandit does not know (renamed settings) are left out.
        ``consumed`` advances `learnt_`. Returns the record appended to `history_`.
        """
        known = set(self.weights_)
        rows = [(e, float(p), float(c)) for e, p, c in rows if e in known and float(p) > 0]
        counts = {name: 0 for name in self.weights_}
        for expert, _, _ in rows:
            counts[expert] += 1
        reward = float("nan")
        if rows:
            weight = np.array([1.0 / p for _, p, _ in rows])
            correct = np.array([c for _, _, c in rows])
            reward = float((weight * correct).sum() / weight.sum())
            if self.trained_by_ is not None and self.rewards_:
                centred = reward - float(np.mean(self.rewards_))
                for name in self.experts:
                    credit = centred * float(self.trained_by_.get(name, 0.0))
                    self.log_weights_[name] += self.learning_rate * credit
            self.rewards_.append(reward)
            self.trained_by_ = {
                name: float(sum(1.0 / p for e, p, _ in rows if e == name) / len(rows))
                for name in self.experts
            }
        self.learnt_ += int(consumed)
        record = {
            "round": len(self.history_) + 1,
            "n": len(rows),
            "reward": reward,
            "picks": counts,
            "weights": self.weights_,
        }
        self.history_.append(record)
        return record

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """Plain JSON of what was learnt (history capped to the last 1000 records)."""
        return {
            "experts": list(self.experts),
            "explore": self.explore,
            "learning_rate": self.learning_rate,
            "log_weights": dict(self.log_weights_),
            "rewards": [r for r in self.rewards_[-1000:]],
            "trained_by": self.trained_by_,
            "history": [
                {**h, "reward": None if h["reward"] != h["reward"] else h["reward"]}
                for h in self.history_[-1000:]
            ],
            "learnt": self.learnt_,
        }

    def load(self, state: Mapping[str, Any] | None) -> StreamBandit:
        """Take over a stored state; experts it does not know start at their prior."""
        if not state:
            return self
        stored = state.get("log_weights") or {}
        self.log_weights_ = {
            name: float(stored.get(name, self._start[name])) for name in self.experts
        }
        self.rewards_ = [float(r) for r in state.get("rewards") or []]
        trained_by = state.get("trained_by")
        self.trained_by_ = dict(trained_by) if trained_by is not None else None
        self.history_ = [
            {**h, "reward": float("nan") if h.get("reward") is None else h["reward"]}
            for h in state.get("history") or []
        ]
        self.learnt_ = int(state.get("learnt") or 0)
        return self

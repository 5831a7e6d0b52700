"""The labels stream, read: typed label events for the trainer, the CLI and the web app.

Why one reader: the trainer reads the stream through its consumer group
(`LabelQueue.read_labels`), ``finkvra queue`` and the web workbench read it from an id
(`stream_events`); both parse an entry here, the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from finkvra.features import feature_record
from service.queue.items import _text

__all__ = ["stream_entries", "stream_events"]


def _parse_entry(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """`_parse_label_fields`, or for an entry that does not parse its raw fields with the
    reason under ``invalid``: one bad entry must not hold back the good ones."""
    try:
        return _parse_label_fields(fields)
    except (ValueError, TypeError, KeyError) as error:
        raw = {_text(k): _text(v) for k, v in fields.items()}
        return {**raw, "invalid": f"{type(error).__name__}: {error}"}


def _parse_label_fields(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """A label event with typed values: candid int, features dict or None, JSON decoded."""
    event: dict[str, Any] = {_text(k): _text(v) for k, v in fields.items()}
    event["candid"] = int(event["candid"])
    features = event.get("features", "")
    event["features"] = feature_record(json.loads(features)) if features else None
    for name in ("model_version", "scores"):
        text = event.get(name, "")
        event[name] = json.loads(text) if text else {}
    priority = event.get("priority", "")
    event["priority"] = float(priority) if priority else None
    return event


def stream_entries(
    client: Any, key: str, *, start: str = "-", chunk: int = 10_000
) -> Iterator[tuple[str, dict[str, str]]]:
    """Every entry of stream ``key`` from id ``start`` on, oldest first, as text fields.

    ``start`` is an XRANGE bound: ``-`` (the beginning), an id (inclusive) or ``(id``
    (exclusive). Trimmed (empty) entries are skipped; read in chunks of ``chunk`` so that
    a long stream never comes in one reply.
    """
    while True:
        rows = client.xrange(key, min=start, max="+", count=chunk)
        for entry_id, fields in rows:
            if fields:
                yield _text(entry_id), {_text(k): _text(v) for k, v in fields.items()}
        if len(rows) < chunk:
            return
        start = f"({_text(rows[-1][0])}"


def stream_events(queue: Any, *, since_ms: int | None = None, chunk: int = 10_000) -> list[dict]:
    """Label events of the queue's stream (all, or since a unix time in ms), oldest first.

    Each is a dict of the entry's text fields plus ``stream_id``, with ``candid`` an int.
    """
    start = "-" if since_ms is None else f"{int(since_ms)}-0"
    entries = stream_entries(queue.client, queue.key("labels"), start=start, chunk=chunk)
    return [
        {**fields, "candid": int(fields["candid"]), "stream_id": entry_id}
        for entry_id, fields in entries
    ]

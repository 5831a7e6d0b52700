"""Every label event so far, by object: the label store of record plus the stream's tail.

Why both: the trainer writes the store (`service.training.label_store.LabelStore`) some time after
a label is posted, and the Redis stream may be trimmed; the union by stream id holds every
event once, including the one posted a second ago. The store is read again when its file
changes; the stream is read incrementally from the last id seen, so showing an item's
earlier labels costs one XRANGE of the new entries, not a scan.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from service.queue.labels import stream_entries

__all__ = ["LabelHistory", "effective_labels"]


def effective_labels(store_dir: Path, queue: Any) -> Any:
    """One row per labelled candid, as ``finkvra queue stats`` counts them (store + stream)."""
    from service.training.label_store import LabelStore
    from service.training.label_store import effective_labels as merged

    labels, _, _ = merged(LabelStore(store_dir, readonly=True), queue)
    return labels


class LabelHistory:
    """The label events of ``queue``'s stream and of the store in ``store_dir``."""

    def __init__(self, queue: Any, store_dir: Path) -> None:
        self.queue = queue
        self.store_dir = Path(store_dir)
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self._by_object: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._last_stream_id = "0-0"
        self._store_stamp: tuple[float, int] | None = None

    def _add(self, event: dict[str, Any]) -> None:
        sid = str(event.get("stream_id") or "")
        if not sid or sid in self._ids:
            return
        self._ids.add(sid)
        object_id = event.get("objectId") or ""
        self._by_object[str(object_id)].append(
            {
                "candid": int(event["candid"]),
                "label": event.get("label") or None,
                "labeller": event.get("labeller") or "unknown",
                "kind": event.get("kind") or "label",
                "timestamp": str(event.get("timestamp") or ""),
            }
        )

    def refresh(self) -> None:
        """Read the store again if its file changed, and the stream's new entries."""
        from service.training.label_store import LABELS_FILE, LabelStore

        with self._lock:
            path = self.store_dir / LABELS_FILE
            try:
                stat = path.stat()
                stamp = (stat.st_mtime, stat.st_size)
            except OSError:
                stamp = None
            if stamp is not None and stamp != self._store_stamp:
                for event in LabelStore(self.store_dir, readonly=True).events():
                    self._add(event)
                self._store_stamp = stamp
            entries = stream_entries(
                self.queue.client, self.queue.keys.labels, start=f"({self._last_stream_id}",
                chunk=5000,
            )  # fmt: skip
            for sid, fields in entries:
                self._last_stream_id = sid
                self._add({**fields, "stream_id": sid})

    def of_object(self, object_id: str) -> list[dict[str, Any]]:
        """The object's label events, oldest first (every candid of the object)."""
        self.refresh()
        with self._lock:
            return sorted(self._by_object.get(object_id, []), key=lambda e: e["timestamp"])

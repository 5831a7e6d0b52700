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

__all__ = ["LabelHistory", "effective_labels"]


def effective_labels(store_dir: Path, queue: Any) -> Any:
    """One row per labelled candid, as ``finkvra queue stats`` counts them (store + stream)."""
    from service.commands.queue import effective_labels as merged
    from service.training.label_store import LabelStore

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
            key = self.queue.key("labels")
            while True:
                rows = self.queue.client.xrange(
                    key, min=f"({self._last_stream_id}", max="+", count=5000
                )
                for entry_id, fields in rows:
                    sid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    self._last_stream_id = sid
                    if fields:
                        event = {
                            (k.decode() if isinstance(k, bytes) else k): (
                                v.decode() if isinstance(v, bytes) else v
                            )
                            for k, v in fields.items()
                        }
                        self._add({**event, "stream_id": sid})
                if len(rows) < 5000:
                    break

    def of_object(self, object_id: str) -> list[dict[str, Any]]:
        """The object's label events, oldest first (every candid of the object)."""
        self.refresh()
        with self._lock:
            return sorted(self._by_object.get(object_id, []), key=lambda e: e["timestamp"])

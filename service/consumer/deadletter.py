"""Messages the service could not use, kept whole with the reason, one JSON file each.

An undecodable or invalid message must never stop the stream, nor vanish: it is written
here and its offset is committed with its batch. The file is named by the message's Kafka
coordinates, ``<root>/<topic>-<partition>-<offset>.json``, so a batch replayed after a
crash rewrites the same files instead of adding copies. Key and value are stored in
base64 as they came, so the message can be decoded again once the bug is fixed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["DeadLetterStore"]

_TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")
_NAME_PATTERN = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)-(?P<partition>\d+)-(?P<offset>\d+)\.json$")


class DeadLetterStore:
    """A directory of dead letters (local path; created on first ``put``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DeadLetterStore({str(self.root)!r})"

    def path_for(self, topic: str, partition: int, offset: int) -> Path:
        """The file of the message at these coordinates."""
        if not _TOPIC_PATTERN.match(str(topic)):
            raise ValueError(f"topic {topic!r} is not a Kafka topic name")
        if int(partition) < 0 or int(offset) < 0:
            raise ValueError(f"partition and offset must be >= 0, got {partition}, {offset}")
        return self.root / f"{topic}-{int(partition)}-{int(offset)}.json"

    def put(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: str,
    ) -> Path:
        """Store one message with the error that stopped it; rewrites it on a replay."""
        path = self.path_for(topic, partition, offset)
        record = {
            "topic": str(topic),
            "partition": int(partition),
            "offset": int(offset),
            "time": datetime.now(UTC).isoformat(),
            "error": str(error),
            "key_size": len(key) if key is not None else None,
            "value_size": len(value) if value is not None else None,
            "key_base64": _b64(key),
            "value_base64": _b64(value),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                json.dump(record, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        return path

    def get(self, topic: str, partition: int, offset: int) -> dict[str, Any]:
        """One dead letter, with ``key`` and ``value`` decoded back to bytes."""
        return _load(self.path_for(topic, partition, offset))

    def list(self) -> list[dict[str, Any]]:
        """Every dead letter, ordered by topic, partition and offset."""
        return [_load(path) for path in self._paths()]

    def count(self) -> int:
        """How many messages are stored."""
        return len(self._paths())

    def _paths(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        named = []
        for path in self.root.iterdir():
            match = _NAME_PATTERN.match(path.name)
            if match:
                key = (match["topic"], int(match["partition"]), int(match["offset"]))
                named.append((key, path))
        return [path for _, path in sorted(named)]


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def _load(path: Path) -> dict[str, Any]:
    record = json.loads(path.read_text(encoding="utf-8"))
    for name in ("key", "value"):
        encoded = record.get(f"{name}_base64")
        record[name] = base64.b64decode(encoded) if encoded is not None else None
    return record

"""What each labeller's keys do to the queue, for the page (the terminal's rules, `service.labelling.session`).

``r x g a b v``  ``submit_label``: the item leaves the queue, the label goes to the trainer.
``s``            ``release``: the item goes back to the queue; this labeller is not shown it again.
``u``            withdraws this labeller's last label (`withdraw_label`); the item comes back
                 leased to them, and their next key labels it again.
relabel          (review page) a ``correction``, which supersedes the earlier labels.

Leases keep two labellers, terminal or web, from ever getting the same item
(`LabelQueue.lease` is one atomic ZPOPMAX). The page leases one item ahead of the one on
screen so that a key shows the next item at once; a page closed without a word loses its
leases after ``lease_seconds`` and the items return to the queue.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from finkvra.labels import LABEL_KEYS, normalise_label

__all__ = ["LabellerState", "WebLabelling", "withdraw_label"]

#: Items leased at once while looking past the ones this labeller skipped.
_MAX_LOOKAHEAD = 50


def withdraw_label(queue: Any, candid: int, labeller: str) -> Any:
    """Take back the label of ``candid``; the restored item, leased to ``labeller``, or None.

    The one place the web's undo touches the queue: today the queue's own undo (a
    ``kind="undo"`` event); a dedicated "withdraw" event replaces it here alone.
    """
    return queue.undo(int(candid), labeller, lease=True)


@dataclass
class LabellerState:
    """One labeller's session memory: what they skipped and what they labelled, in order."""

    skipped: set[int] = field(default_factory=set)
    history: list[tuple[int, str]] = field(default_factory=list)  # (candid, label)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class WebLabelling:
    """The queue actions of the labelling page, per labeller."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self._states: dict[str, LabellerState] = defaultdict(LabellerState)

    def state(self, labeller: str) -> LabellerState:
        return self._states[labeller]

    def next_item(
        self,
        labeller: str,
        holding: set[int] | frozenset[int] = frozenset(),
        queue: str = "teach",
    ) -> Any:
        """Lease the best item of ``queue`` this labeller has not skipped; None when none.

        ``holding`` are the items the page already holds (on screen, fetched ahead).
        Skipped items at the top of the queue are leased past and given straight back.
        ``queue`` is teach, discover or second-look (never an item this labeller labelled).
        """
        state = self.state(labeller)
        chosen, _passed = self.queue.lease_first(
            labeller,
            state.skipped | set(holding),
            lookahead=min(len(state.skipped) + 1, _MAX_LOOKAHEAD),
            keep=holding,
            queue=queue,
        )
        return chosen

    def label(self, labeller: str, candid: int, label: str, object_id: str | None = None) -> str:
        """Post a label (a key or a name); its stream id. Raises `AlreadyLabelledError`."""
        label = normalise_label(LABEL_KEYS.get(label, label))
        stream_id = self.queue.submit_label(int(candid), label, labeller, objectId=object_id)
        state = self.state(labeller)
        with state.lock:
            state.history.append((int(candid), label))
        return stream_id

    def skip(self, labeller: str, candid: int) -> bool:
        """Give the item back to the queue; False when this labeller no longer held it."""
        state = self.state(labeller)
        with state.lock:
            state.skipped.add(int(candid))
        return self.queue.release(int(candid), labeller)

    def release(self, labeller: str, candids: list[int]) -> int:
        """Give back items the page held (it is closing); the number released."""
        return sum(bool(self.queue.release(int(c), labeller)) for c in candids)

    def renew(self, labeller: str, candids: list[int]) -> list[int]:
        """Extend the leases of the items on the page; the candids no longer held."""
        return [int(c) for c in candids if not self.queue.renew(int(c), labeller)]

    def undo(self, labeller: str) -> tuple[int | None, Any]:
        """Withdraw this labeller's last label: ``(candid, restored item or None)``.

        ``(None, None)`` when there is nothing to undo in this session.
        """
        from service.queue.label_queue import NotLabelledError

        state = self.state(labeller)
        with state.lock:
            if not state.history:
                return None, None
            candid, _ = state.history.pop()
        try:
            return candid, withdraw_label(self.queue, candid, labeller)
        except NotLabelledError:
            return candid, None

    def relabel(self, labeller: str, candid: int, label: str, object_id: str | None = None) -> str:
        """Correct the label of ``candid`` (the review page); the correction's stream id."""
        label = normalise_label(LABEL_KEYS.get(label, label))
        return self.queue.submit_label(
            int(candid), label, labeller, objectId=object_id, kind="correction"
        )

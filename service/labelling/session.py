"""The labelling loop: lease an item, show it, read one key, act; until the labeller quits.

What each key does to the queue (`service.queue.label_queue.LabelQueue`):

``r x g a b v``
    ``submit_label`` (kind ``label``): the item leaves the queue, the label goes to the
    trainer through the labels stream.
``s``
    ``release``: the item goes back to the queue (for another labeller, or later); this
    session does not show it again.
``u``
    withdraws the label given last, at once (`LabelQueue.undo`: an ``undo`` event in the
    labels stream, which the trainer, the label store, ``queue export`` and ``queue
    stats`` honour), and shows that item again, leased to this labeller (the item in
    hand goes back to the queue). A label key then labels it anew; ``s`` leaves it
    unlabelled, back in the queue; ``u`` again leaves it unlabelled and goes one further
    back.
``w``
    switches queue: teach → discover → second-look → teach (the item in hand goes back
    to its queue; the screen names the queue worked). ``finkvra label --queue`` picks
    the first one.
``q`` (or Ctrl-D, end of input)
    releases the item in hand and ends the session.

The screen also shows the trainer's stopping signal for each model (the ``message`` of
`ModelPublisher.status`: "the gal model has been stable for the last 40 labels").

Leases keep two labellers from ever getting the same item: `LabelQueue.lease` is one
atomic ZPOPMAX. A labeller who vanishes loses the lease after ``lease_seconds`` and the
item returns to the queue.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from finkvra.labels import LABEL_KEYS, LABEL_MAPS
from service.labelling.keys import HELP_KEY, QUIT_KEY, KeyReader
from service.labelling.screen import ScreenState, render_item

__all__ = ["LabellingSession", "SessionResult"]

#: Redis errors that end a session with a message rather than a traceback (a lost
#: connection, a server out of memory or loading: nothing the labeller can fix here).
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError,)

#: Items whose cutouts are fetched ahead, while the labeller looks at the current one.
PREFETCH = 3
#: Seconds the screen waits for cutouts before drawing placeholders (terminal only).
CUTOUT_WAIT_S = 0.15
#: Seconds between two reads of everyone's labels (an object's earlier labels).
LABELS_REFRESH_S = 30.0
#: The key that switches queue, and the queues in its order.
SWITCH_KEY = "w"
QUEUE_ORDER = ("teach", "discover", "second-look")


def status_lines(status: Any) -> list[str]:
    """One line per model from `ModelPublisher.status`: its ``message`` (or version)."""
    lines = []
    for model, info in sorted(dict(status or {}).items()):
        info = info if isinstance(info, dict) else {}
        message = info.get("message") or ""
        if not message and info.get("version") is not None:
            message = f"version {info['version']} on {info.get('labels', '?')} labels"
        if message:
            lines.append(f"{model}: {message}")
    return lines


@dataclass
class SessionResult:
    """What a session did, and why it ended (``quit``, ``empty``, ``interrupted``, ``redis``)."""

    tally: Counter = field(default_factory=Counter)
    skipped: int = 0
    undone: int = 0  # labels withdrawn with u
    corrected: int = 0  # undone, then labelled otherwise
    kept: int = 0  # undone, then labelled the same again
    events: list[tuple[int, str, str, str]] = field(default_factory=list)  # candid, label, kind, id
    reason: str = "quit"
    error: str = ""

    @property
    def labelled(self) -> int:
        return sum(self.tally.values())

    def summary(self, labeller: str = "") -> str:
        """One line for the end of a session."""
        parts = [f"{label} {n}" for label, n in self.tally.items() if n]
        text = f"{labeller + ': ' if labeller else ''}{self.labelled} labelled"
        if parts:
            text += f" ({', '.join(parts)})"
        return text + f", {self.undone} undone, {self.corrected} corrected, {self.skipped} skipped"


class LabellingSession:
    """One labeller working through a `LabelQueue` (see the module docstring).

    Parameters
    ----------
    queue
        The `service.queue.label_queue.LabelQueue` to lease from and post labels to.
    labeller
        Who labels (goes with every label and lease).
    cutouts
        A cutout source (`service.labelling.cutouts.ArchiveCutouts` or `MemoryCutouts`),
        or None to show none.
    keys
        Where keys come from (default: a `KeyReader` on stdin).
    console
        The rich console drawn on (default: stdout). A terminal gets one screen
        redrawn in place; anything else gets the screens one after the other.
    models
        Models whose probabilities are shown first, and whose classes the messages name.
    open_url
        Called with the Lasair URL of each new item (``--open``).
    wait
        When the queue is empty, wait for items (with a spinner) instead of ending.
    poll_s
        Seconds between two looks at an empty queue.
    title
        The screen's title line.
    prefetch
        Items after the current one whose cutouts are fetched while the labeller looks
        (0: none; each item's are then fetched when it comes).
    queue_name
        The queue to work first (teach, discover, second-look); ``w`` switches.
    status
        Returns the trainer's model status (`ModelPublisher.status`), shown on screen.
    """

    def __init__(
        self,
        queue: Any,
        labeller: str,
        *,
        cutouts: Any = None,
        keys: KeyReader | None = None,
        console: Any = None,
        models: Sequence[str] = (),
        open_url: Callable[[str], Any] | None = None,
        wait: bool = False,
        poll_s: float = 1.0,
        title: str = "finkvra label",
        prefetch: int = PREFETCH,
        queue_name: str = "teach",
        status: Callable[[], Any] | None = None,
    ) -> None:
        from rich.console import Console

        if queue_name not in QUEUE_ORDER:
            raise ValueError(f"unknown queue {queue_name!r}: use one of {', '.join(QUEUE_ORDER)}")

        self.queue = queue
        self.labeller = labeller
        self.cutouts = cutouts
        self.keys = keys or KeyReader()
        self.console = console or Console()
        self.models = tuple(models) or tuple(LABEL_MAPS)
        self.open_url = open_url
        self.wait = wait
        self.poll_s = float(poll_s)
        self.title = title
        self.prefetch = int(prefetch)
        self.result = SessionResult()
        self.status = status
        self.state = ScreenState(
            tally=self.result.tally,
            labeller=labeller,
            models=self.models,
            title=title,
            queue_name=queue_name,
        )
        self._current: Any = None  # the item on screen
        self._leased = False  # whether this session holds the current item's lease
        self._history: list[tuple[Any, str]] = []  # (item, label) labelled this session
        self._skipped: set[int] = set()
        self._labels_read_at = -math.inf  # when the object labels were last read

    def __repr__(self) -> str:
        return f"LabellingSession(labeller={self.labeller!r}, queue={self.queue.prefix!r})"

    # ------------------------------------------------------------------ the loop

    def run(self) -> SessionResult:
        """Label until the labeller quits or (without ``wait``) the queue is empty."""
        terminal = self.console.is_terminal and self.keys.interactive
        try:
            with self.keys:
                if terminal:
                    self.console.set_alt_screen(True)
                try:
                    self._loop()
                finally:
                    if terminal:
                        self.console.set_alt_screen(False)
        except KeyboardInterrupt:
            self.result.reason = "interrupted"
            self._give_back()
        except REDIS_ERRORS as error:
            self.result.reason = "redis"
            self.result.error = f"{type(error).__name__}: {error}"
        finally:
            if self.cutouts is not None:
                self.cutouts.close()
        return self.result

    def _loop(self) -> None:
        # The galactic rotation (astropy, ~1 s) is made while the first item is leased.
        from service.labelling.screen import galactic_latitude

        threading.Thread(target=galactic_latitude, args=(0.0, 0.0), daemon=True).start()
        self._read_object_labels()
        while True:
            if self._current is None:
                item = self._next()
                if item is None and self.wait:
                    item = self._wait_for_item()
                    if item is None:  # the labeller quit while waiting
                        return
                if item is None:
                    self.result.reason = "empty"
                    return
                self._show_new(item)
            key = self._draw_and_read()
            if not self._act(key):
                return

    def _show_new(self, item: Any) -> None:
        self._current, self._leased = item, True
        self.state.correcting = None
        if self.open_url is not None:
            url = (item.links or {}).get("lasair")
            if url:
                self.open_url(url)

    def _act(self, key: str) -> bool:
        """Do what ``key`` asks; False when the session ends."""
        state = self.state
        if key != HELP_KEY:
            state.show_help = False
        if key in LABEL_KEYS:
            self._label(LABEL_KEYS[key])
        elif key == "s":
            self._skip()
        elif key == "u":
            self._undo()
        elif key == SWITCH_KEY:
            self._switch()
        elif key == HELP_KEY:
            state.show_help = not state.show_help
            self._say("")
        elif key == QUIT_KEY:
            self._give_back()
            self.result.reason = "quit"
            return False
        else:
            shown = repr(key) if key else "that key"
            self._say(f"{shown} is not a key here: press ? for help", "bold red")
        state.skipped, state.corrected = self.result.skipped, self.result.corrected
        state.undone = self.result.undone
        return True

    # ------------------------------------------------------------------ keys

    def _label(self, label: str) -> None:
        from service.queue.label_queue import AlreadyLabelledError

        item, undone = self._current, self.state.correcting  # undone: the withdrawn label
        try:
            stream_id = self.queue.submit_label(
                item.candid, label, self.labeller, objectId=item.objectId
            )
        except AlreadyLabelledError as error:
            # Our lease expired and someone else labelled it meanwhile.
            self._say(f"not labelled: {error}", "bold red")
        else:
            self.result.events.append((item.candid, label, "label", stream_id))
            self.result.tally[label] += 1
            self._history.append((item, label))
            self._remember_label(item, label)
            classes = self._classes(label)
            if undone is None:
                self._say(f"✓ {item.objectId} labelled {label} ({classes})", "green")
            elif undone == label:
                self.result.kept += 1
                self._say(f"✓ {item.objectId} labelled {label} again ({classes})", "green")
            else:
                self.result.corrected += 1
                self._say(f"✓ corrected {item.objectId}: {undone} → {label} ({classes})", "green")
        self._current, self._leased = None, False
        self.state.correcting = None

    def _skip(self) -> None:
        item = self._current
        if self._leased:
            self.queue.release(item.candid, self.labeller)
        self._skipped.add(item.candid)
        self.result.skipped += 1
        if self.state.correcting is not None:
            self._say(f"left {item.objectId} unlabelled: back in the queue", "yellow")
        else:
            self._say(f"skipped {item.objectId}: back in the queue", "yellow")
        self._current, self._leased = None, False
        self.state.correcting = None

    def _undo(self) -> None:
        from service.queue.label_queue import NotLabelledError

        if not self._history:
            self._say("nothing to undo in this session", "yellow")
            return
        if self._current is not None and self._leased:
            # The item in hand (or one undone before, now unlabelled) waits in the queue.
            self.queue.release(self._current.candid, self.labeller)
        self._current, self._leased = None, False
        item, label = self._history.pop()
        self.result.tally[label] -= 1
        self._remember_label(item, None)
        try:
            restored = self.queue.undo(item.candid, self.labeller, lease=True)
        except NotLabelledError:  # withdrawn meanwhile (another session, an operator)
            restored = None
            self._say(f"undo: {item.objectId} had no label any more; label it again", "yellow")
        else:
            self.result.undone += 1
            self.result.events.append((item.candid, label, "undo", ""))
            self._say(
                f"undo: your {label!r} for {item.objectId} is withdrawn; a label key labels "
                "it again, s leaves it unlabelled",
                "yellow",
            )
        self._current, self._leased = restored or item, restored is not None
        self.state.correcting = label

    def _switch(self) -> None:
        """Work the next queue; the item in hand goes back where it waited."""
        if self._current is not None and self._leased and self.state.correcting is None:
            self.queue.release(self._current.candid, self.labeller)
            self._current, self._leased = None, False
        names = QUEUE_ORDER
        self.state.queue_name = names[(names.index(self.state.queue_name) + 1) % len(names)]
        self._say(f"now working the {self.state.queue_name} queue", "cyan")

    def _give_back(self) -> None:
        """Release the item in hand (quit, interrupt); never raises."""
        if self._current is not None and self._leased:
            try:
                self.queue.release(self._current.candid, self.labeller)
            except REDIS_ERRORS:
                pass  # the lease expires on its own
            self._leased = False

    # ------------------------------------------------------------------ queue

    def _next(self) -> Any:
        """Lease the best item this session has not skipped; None when there is none.

        Items skipped earlier may sit at the top of the queue: lease enough to get past
        them, keep the first other one and give the skipped ones straight back.
        """
        chosen, held = self.queue.lease_first(
            self.labeller,
            self._skipped,
            lookahead=min(len(self._skipped) + 1, 50),
            queue=self.state.queue_name,
        )
        if chosen is None and held:
            self._say(f"only the {held} item(s) you skipped are left in the queue", "yellow")
        return chosen

    def _wait_for_item(self) -> Any:
        """Poll the queue until an item arrives; None when the labeller quits meanwhile."""
        interactive = self.keys.interactive
        status = None
        said = f"{self.state.message} · " if self.state.message else ""
        if self.console.is_terminal:
            status = self.console.status(
                f"{said}queue empty: waiting for alerts… (q to quit)", spinner="dots"
            )
            status.start()
        else:
            self.console.print(f"{said}queue empty: waiting for alerts…")
        try:
            while True:
                if interactive:
                    if self.keys.read_key(timeout=self.poll_s) == QUIT_KEY:
                        self.result.reason = "quit"
                        return None
                else:
                    time.sleep(self.poll_s)
                item = self._next()
                if item is not None:
                    return item
        finally:
            if status is not None:
                status.stop()

    def _prefetch(self) -> None:
        """While the labeller looks: fetch the next items' cutouts, re-read object labels."""
        if time.monotonic() - self._labels_read_at > LABELS_REFRESH_S:
            self._read_object_labels()
        if self.cutouts is None or self.prefetch < 1:
            return
        upcoming = self.queue.items(self.prefetch, queue=self.state.queue_name)
        upcoming = [i for i in upcoming if i.candid not in self._skipped]
        self.cutouts.prefetch(upcoming)

    def _read_object_labels(self) -> None:
        """Everyone's labels by objectId, for "labelled before" (other labellers' too),
        and the trainer's model status (the stopping signal)."""
        self.state.object_labels = self.queue.object_labels()
        if self.status is not None:
            self.state.model_status = status_lines(self.status())
        self._labels_read_at = time.monotonic()

    def _remember_label(self, item: Any, label: str | None) -> None:
        """Keep "labelled before" right between two reads: ``label`` None forgets one."""
        labels = dict(self.state.object_labels)
        entries = [e for e in labels.get(item.objectId, ()) if e["candid"] != item.candid]
        if label is not None:
            entries.append({"candid": item.candid, "label": label, "labeller": self.labeller})
        labels[item.objectId] = entries
        self.state.object_labels = labels

    # ------------------------------------------------------------------ screen

    def _say(self, message: str, style: str = "") -> None:
        self.state.message, self.state.message_style = message, style

    def _classes(self, label: str) -> str:
        parts = []
        for model in self.models:
            cls = LABEL_MAPS.get(model, {}).get(label)
            parts.append(f"{model}: {'excluded' if cls is None else f'class {cls}'}")
        return ", ".join(parts)

    def _draw_and_read(self) -> str:
        """Draw the current item; return the labeller's key (redrawing as cutouts arrive)."""
        item = self._current
        interactive = self.console.is_terminal and self.keys.interactive
        cutouts = None
        if self.cutouts is not None:
            self.cutouts.request_item(item)  # first in line, before the ones after it
        self._prefetch()  # the next items' stamps come while this one is drawn and looked at
        if self.cutouts is not None:
            cutouts = self.cutouts.get(item, timeout=CUTOUT_WAIT_S if interactive else None)
        self.state.waiting = self.queue.waiting(self.state.queue_name)
        self.draw(item, cutouts)
        if not interactive:  # a blocking read
            return self.keys.read_key()
        renew_every = max(1.0, self.queue.lease_seconds / 3)
        renewed_at = time.monotonic()
        while True:
            key = self.keys.read_key(timeout=0.05)
            if key is not None:
                return key
            if time.monotonic() - renewed_at > renew_every:  # still looking: keep the lease
                self.queue.renew(item.candid, self.labeller)
                renewed_at = time.monotonic()
            if cutouts is None and self.cutouts is not None:
                cutouts = self.cutouts.cached(item.candid)
                if cutouts is not None:
                    self.draw(item, cutouts)

    def draw(self, item: Any, cutouts: Any) -> None:
        """Draw one screen: in place on a terminal, appended elsewhere."""
        console = self.console
        width, height = console.size
        if not console.is_terminal:
            height = None  # screens follow each other: no height to fit
        screen = render_item(item, cutouts, self.state, width=width, height=height)
        if console.is_terminal:
            with console:  # one write: no flicker
                console.clear()
                console.print(screen, end="")
        else:
            console.print(screen)
            console.file.flush()


def run_screen(
    queue: Any,
    labeller: str,
    *,
    cutouts: Any = None,
    models: list[str] | None = None,
    open_browser: bool = False,
    wait: bool = False,
    title: str = "finkvra label",
    keys: Any = None,
    console: Any = None,
    queue_name: str = "teach",
    status: Callable[[], Any] | None = None,
) -> tuple[int, Any]:
    """Run a labelling session and say how it ended: ``(exit code, SessionResult)``.

    The terminal end of ``finkvra label`` and ``finkvra round`` (on its private queue):
    the session, then one line on how it ended (130 after Ctrl-C, 1 when Redis was lost).
    """
    from rich.console import Console

    console = console or Console()
    open_url = None
    if open_browser:
        open_url, problem = _browser()
        if problem:
            print(f"finkvra label: {problem}", file=sys.stderr)
    session = LabellingSession(
        queue,
        labeller,
        cutouts=cutouts,
        keys=keys,
        console=console,
        models=models or (),
        open_url=open_url,
        wait=wait,
        title=title,
        queue_name=queue_name,
        status=status,
    )
    result = session.run()
    if result.reason == "redis":
        print(
            f"finkvra label: lost the connection to Redis ({result.error}); the labels "
            "posted so far are safe, the item in hand returns to the queue when its lease "
            f"expires ({queue.lease_seconds:.0f} s)",
            file=sys.stderr,
        )
        print(result.summary(labeller))
        return 1, result
    if result.reason == "empty" and not result.events and not result.skipped:
        print(
            f"the queue is empty ({session.state.queue_name}): nothing to label "
            "(--wait waits for alerts)"
        )
        return 0, result
    if result.reason == "empty":
        print("the queue is empty: that was the last item")
    print(result.summary(labeller))
    return (130 if result.reason == "interrupted" else 0), result


def _browser() -> tuple[Any, str]:
    """``(open_url, problem)``: a function opening a URL in a graphical browser, or why not.

    Over SSH there is no display, and Python's webbrowser would start a text browser in
    the very terminal the screen is drawn on; the links are on screen anyway.
    """
    import os
    import sys
    import webbrowser

    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return None, "--open: no graphical display here (over SSH?); follow the links on screen"

    def open_url(url: str) -> None:
        try:
            webbrowser.open(url, new=2, autoraise=False)
        except webbrowser.Error:
            pass

    return open_url, ""

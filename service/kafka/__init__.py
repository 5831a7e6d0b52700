"""Kafka in and out: the consumer source, the replayer and the embedded mock cluster.

`source` is the one consumer configuration and the one decode-a-batch function (Avro
bytes to records, with dead messages set aside); `replayer` produces recorded or
generated alerts onto a topic; `mock_cluster` starts librdkafka's mock cluster for the
demo and the tests. May import `finkvra`, `service.config`, `service.secrets` and
`service.retry`; never the queue, the consumer pipeline or the commands.
"""

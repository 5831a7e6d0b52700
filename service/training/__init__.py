"""The trainer process: labels from the stream become fitted, evaluated, published models.

`trainer` is the loop (ingest labels, predict before learning, retrain, publish),
`label_store` the durable record of labels, features and predictions on disk. May import
`finkvra`, `service.queue` (labels stream, registry) and `service.consumer.archive`
(features of labelled alerts); never the commands or the web app.
"""

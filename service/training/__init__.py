"""The trainer process: labels from the stream become fitted, evaluated, published models.

`trainer` is the loop (ingest labels, predict before learning, retrain, publish), `rounds`
one retrain (fit → evaluate → explain → log),
`label_store` the durable record of labels, features and predictions on disk, and
`manual_round` the engine of ``finkvra round`` (select, label on the screen, train). May
import `finkvra`, `service.queue` (labels stream, registry), `service.consumer` (the
archive's features, the scorer) and `service.secrets`; `manual_round` also the labelling
screen and `service.wiring`. Never the commands or the web app.
"""

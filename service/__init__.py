"""The finkvra service: daemon, command-line interface and web app, on the ``finkvra`` library.

By process and concept: `service.kafka` (alerts in), `service.consumer` (batch → archive
and queue), `service.queue` (everything in Redis, and the only code that writes it),
`service.training` (labels → models), `service.labelling` (the terminal screen),
`service.web` (the browser workbench), `service.commands` (one module per sub-command).
Beside them: `config` (the one settings class), `wiring` (the only place settings become
parts), `daemon` (the loops and signals), `demo`, `secrets` (masking), `logs`, `retry`,
`telemetry` and `http_server` (health and metrics). Everything here may import
``finkvra``; the import rules of each package are in its docstring (and checked by
``tests/test_layout.py``).
"""

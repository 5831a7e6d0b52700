"""The labelling screen: one alert, one key (``finkvra label``, ``finkvra round``).

Modules, each with one job: `keys` reads one key from a terminal (or a line from a pipe),
`cutouts` turns the FITS stamps into terminal pictures and fetches them from the archive,
`plots` draws the light curve in characters, `screen` lays one item out with rich, and
`session` is the loop (lease, show, read a key, act) with its tally and undo, and
`run_screen` the terminal end of ``finkvra label`` and ``finkvra round``. May import
``finkvra``, `service.queue` (the queue it leases from) and `service.consumer.archive`
(the cutouts of archived alerts); never the commands, the trainer or the web app.
"""

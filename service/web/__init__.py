"""The web workbench (``finkvra web``): label, review and watch the models learn in a browser.

The same queue, leases, labels stream and trainer as the terminal screen (`service.labelling`);
only the drawing differs. Modules, each with one job: `app` builds the ASGI app from the
settings, `pages` holds the routes (pages and their JSON API), `auth` the labeller accounts,
sessions and cross-site request forgery checks, `labelling` the per-labeller state (skips, undo)
over `service.queue.label_queue.LabelQueue`, `images` the cutouts as PNG, `plots` the light curve as
JSON for ``static/plot.js``, `history` the labels given so far (store + stream), and
`dashboard` the numbers of the dashboard. Everything the browser runs is in ``static/``:
no build step and no CDN (observatory networks are often closed). May import ``finkvra``,
`service.queue`, `service.training.label_store`, `service.consumer` (archive, dead letters:
the dashboard's numbers), `service.labelling` (cutouts, plots),
`service.wiring` and `service.secrets`; never the commands or the daemon.
"""

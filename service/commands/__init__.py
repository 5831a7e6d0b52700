"""One module per ``finkvra`` sub-command: argument parsing and exit codes only.

Each module defines ``add_parser(subparsers)`` which registers its sub-command and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an
exit code). Heavy imports belong inside ``func``, so ``finkvra --help`` stays fast.
A command imports `service.wiring` for its parts, `_common` for what several commands
do alike (settings or exit code 2, the queue, the user's name) and the package that does
the work; it never imports another command module.
"""

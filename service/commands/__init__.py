"""One module per ``finkvra`` sub-command.

Each module defines ``add_parser(subparsers)`` which registers its sub-command and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an
exit code). Heavy imports belong inside ``func``, so ``finkvra --help`` stays fast.
"""

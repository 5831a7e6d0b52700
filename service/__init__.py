"""The finkvra daemon and command-line interface, built on the ``finkvra`` library."""

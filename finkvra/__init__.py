"""finkvra: active learning over the Fink ZTF alert stream (the library).

Importing this package loads nothing heavy and starts nothing: the submodules
(``finkvra.alerts``, ``finkvra.features``, ...) are imported on demand. A pure library:
functions and estimators, no daemons, no global state, no environment reads. It may
import only itself and third-party packages; it never imports ``service``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]

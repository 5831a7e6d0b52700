"""The Avro schema of the alerts finkvra writes: Fink's ZTF alert, field for field.

``finkvra/schemas/fink_ztf_alert.avsc`` is the project's own schema file. It has the same
field names, types and nesting as the schema Fink sends in its Kafka keys (ZTF alert
schema 4.02 plus Fink's added values: ``cdsxmatch``, ``roid``, ``mangrove``,
``lc_features_g``/``_r``, ...), so the synthetic stream decodes, and converts to parquet,
exactly like the real one.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["SCHEMA_RESOURCE", "alert_schema"]

#: Location of the schema file inside the ``finkvra`` package.
SCHEMA_RESOURCE = "schemas/fink_ztf_alert.avsc"


def alert_schema() -> dict[str, Any]:
    """A fresh copy of the alert schema (a dict, as in the ``.avsc`` file).

    Read from the package each call (17 KB, well under a millisecond): callers that need
    it repeatedly keep their own copy, so nothing global can be mutated by accident.
    """
    text = resources.files("finkvra").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)

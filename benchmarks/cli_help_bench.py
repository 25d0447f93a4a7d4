"""Wall time of `bra --help` against `yolo help` (goal: bra ≤ 0.25× yolo).

`bra --help` must not import torch or ultralytics; `yolo help` imports both. Each command runs as a fresh
process, `--repeat` times after one warm-up run (so both read their files from the page cache), and the
medians are compared.

    .venv/bin/python benchmarks/cli_help_bench.py --repeat 15
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(cmd: list[str], repeat: int, env: dict[str, str]) -> list[float]:
    subprocess.run(cmd, capture_output=True, env=env, check=True)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    env = {**os.environ, "YOLO_OFFLINE": "1"}  # keep yolo's DNS probe out of its time
    bra = timed([str(BIN / "bra"), "--help"], args.repeat, env)
    yolo = timed([str(BIN / "yolo"), "help"], args.repeat, env)
    b, y = statistics.median(bra), statistics.median(yolo)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print("| command | median s | min s | max s |")
    print("|---|---|---|---|")
    print(f"| `bra --help` | {b:.3f} | {min(bra):.3f} | {max(bra):.3f} |")
    print(f"| `yolo help` | {y:.3f} | {min(yolo):.3f} | {max(yolo):.3f} |")
    print(f"| ratio bra / yolo | {b / y:.2f}× | | |")


if __name__ == "__main__":
    main()

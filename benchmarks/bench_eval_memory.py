"""Peak memory of ``advseg eval-seg`` on 20 and on 60 phantom subjects (issue 8, defect 2).

Subjects are streamed (made, segmented and dropped one at a time), so the two peaks should lie
within 100 MB of each other. Each run is its own process; its peak resident set size comes from
``os.wait4``, which reports the resource use of that one child.

Run: ``.venv/bin/python benchmarks/bench_eval_memory.py [--subjects 20 60] [--threads 2]``.
Prints each peak and their difference; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

GOAL_MB = 100.0


def peak_rss_mb(subjects: int, threads: int) -> tuple[float, float]:
    """Peak RSS (MB) and wall time (s) of ``eval-seg`` on ``subjects`` phantom subjects."""
    command = [
        sys.executable,
        "-m",
        "napari_advseg.cli",
        "eval-seg",
        "--sample",
        "phantom",
        "--split",
        "all",
        "--subjects",
        str(subjects),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=environment)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {process.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs=2, default=[20, 60])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    peaks = []
    for count in args.subjects:
        peak, seconds = peak_rss_mb(count, args.threads)
        peaks.append(peak)
        print(f"eval-seg --subjects {count:>3}: peak RSS {peak:7.1f} MB  ({seconds:.0f} s)")
    difference = peaks[1] - peaks[0]
    verdict = "within" if abs(difference) <= GOAL_MB else "NOT within"
    print(f"difference: {difference:+.1f} MB ({verdict} the {GOAL_MB:.0f} MB goal)")


if __name__ == "__main__":
    main()

"""What every benchmark shares: the command line, running it several times, printing figures."""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

# Benchmarks run as `python bench/NAME.py` from the repository root; make the project importable.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parser(description: str, *, default_n: int, default_cap: float) -> argparse.ArgumentParser:
    """Return a parser with the usual -n, --cap and --runs options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-n", type=int, default=default_n, help=f"amount of work (default {default_n})")
    parser.add_argument(
        "--cap",
        type=float,
        default=default_cap,
        help=f"overall rate limit in msg/s, 0 = none (default {default_cap:g})",
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    return parser


def figure(name: str, values: Sequence[float], digits: int = 2) -> str:
    """Format a figure as `name: median (min …, max …)`, or just the value for one run."""
    fmt = f"{{:.{digits}f}}"
    median = fmt.format(statistics.median(values))
    if len(values) == 1:
        return f"{name}: {median}"
    return f"{name}: {median} (min {fmt.format(min(values))}, max {fmt.format(max(values))})"


def peak_rss_mb() -> float:
    """Return this process's peak resident memory in MB.

    /proc's VmHWM belongs to the process image, so a child started by a big parent reports its own peak;
    getrusage's ru_maxrss survives exec on Linux and would report the parent's.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

"""`python -m bench [--quick] [NAME ...]` (`make bench`): every benchmark, each figure beside its baseline.

Each benchmark starts its own private redis-server, API and workers, measures
the raw baseline in the same run, and reports a ratio. `--quick` runs each one
small, to check that they work (CI does that); the figures then mean little.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time

from bench.common import Figure

BENCHMARKS = ["latency", "idle_streams", "fanout", "stalled_clients", "throughput", "progress_loop", "get_rps",
              "memory", "emit_cost", "redis_cost", "first_progress", "batches"]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def show(figures: list[Figure]) -> None:
    print(f"{'figure':<48} {'value':>12} {'baseline':>12} {'ratio':>7}  target{'':<14} ok")
    for f in figures:
        base = f"{f.baseline:,.2f}" if f.baseline is not None else "-"
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else "-"
        print(f"{f.name:<48} {f.value:>10,.2f} {f.unit:<2}{base:>11} {ratio:>7}  {f.target:<20} "
              f"{'yes' if f.ok else 'NO'}  {f.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small runs, to check the benchmarks work")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"which ones (default: all): {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}; there are {', '.join(BENCHMARKS)}")
    print(f"machine: {machine()}")
    figures: list[Figure] = []
    for name in args.names or BENCHMARKS:
        t0 = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        got = module.run(args.quick)
        print(f"-- {name}: {time.monotonic() - t0:.1f}s", flush=True)
        show(got)
        figures += got
    print("\nall figures" + (" (quick mode: sizes too small to mean much)" if args.quick else ""))
    show(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run benchmarks: python -m bench [--quick] [NAME ...] (default: all)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path

from .common import RESULTS


def main() -> int:
    here = Path(__file__).resolve().parent
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)])
                   if m.name.startswith("bench_"))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(names)})")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = ap.parse_args()
    chosen = args.names or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; available: {names}")
    for name in chosen:
        t0 = time.time()
        mod = importlib.import_module(f"bench.bench_{name}")
        result = mod.run(quick=args.quick)
        path = result.write(RESULTS)
        print(result.markdown())
        print(f"[{name}: {time.time() - t0:.1f} s, written to {path}]\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

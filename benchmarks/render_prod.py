"""Benchmark: program time of the prod stack under Pulumi's mocks (goal: under 1 s).

Prints the import time, the first render in a fresh process (which also pays the SDK's lazy
type introspection) and the median of further renders.
Run: .venv/bin/python benchmarks/render_prod.py
"""

from __future__ import annotations

import statistics
import time

started = time.perf_counter()
from stacks.render import render_stack  # noqa: E402

imports = time.perf_counter() - started


def main() -> None:
    first = render_stack("prod")
    warm = [render_stack("prod").program_seconds for _ in range(5)]
    print(f"imports:               {imports * 1000:7.0f} ms")
    print(f"prod program, first:   {first.program_seconds * 1000:7.0f} ms "
          f"({len(first.manifests)} objects)")
    print(f"prod program, warm:    {statistics.median(warm) * 1000:7.0f} ms (median of 5)")


if __name__ == "__main__":
    main()

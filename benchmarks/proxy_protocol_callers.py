"""Benchmark: does every call reach the ACM engine as its own caller, under concurrency?

Many callers at once (64 in flight), each from its own loopback address and port, each call on
its own TCP (or TLS) connection through HAProxy (the local stack's rendered config,
`send-proxy`) into the real OpenSIPS 4.0.1's PROXY-protocol socket; the recording engine
stand-in tells, for every call, which caller address and port reached it
(tests/sip/callers.py). Printed per case: connections, calls a second, wrong addresses, PROXY
parse errors, 405s, lost calls (no final answer), answers misdelivered to another caller.

Cases, in one run:
  patched, the stacks' I/O threads (1)     what the platform deploys: everything must be 0
  patched, 8 I/O threads                   the parser under a race: addresses must be right
  unpatched, 8 I/O threads                 upstream 4.0.1: shows what the patch fixes
and the first and last over TLS (fewer connections: each is a TLS 1.3 handshake).

Run: .venv/bin/python benchmarks/proxy_protocol_callers.py [--connections 100000]
     [--tls-connections 10000]    (about 10 minutes with the defaults; the unpatched build is
     made on first use, about 3 minutes)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.opensips.settings import DEFAULT_TCP_IO_THREADS
from tests.sip.callers import CallerLab, Tally, opensips_build

RACING_IO_THREADS = 8


def run_case(unpatched: bool, io_threads: int, transport: str, connections: int) -> Tally:
    with tempfile.TemporaryDirectory(prefix="acm-callers-") as work:
        lab = CallerLab(Path(work), opensips_build(unpatched=unpatched), io_threads)
        try:
            lab.start()
            return lab.run(transport, connections)
        finally:
            lab.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--tls-connections", type=int, default=10_000)
    options = parser.parse_args()
    cases = [
        ("patched", False, DEFAULT_TCP_IO_THREADS, "tcp", options.connections),
        ("patched", False, RACING_IO_THREADS, "tcp", options.connections),
        ("unpatched", True, RACING_IO_THREADS, "tcp", options.connections),
        ("patched", False, DEFAULT_TCP_IO_THREADS, "tls", options.tls_connections),
        ("unpatched", True, RACING_IO_THREADS, "tls", options.tls_connections),
    ]
    rows = []
    for build, unpatched, threads, transport, connections in cases:
        tally = run_case(unpatched, threads, transport, connections)
        row = (f"{build:9} | {threads:2} I/O threads | {transport} | {tally.connections:7,} | "
               f"{tally.connections / tally.seconds:6,.0f}/s | wrong {tally.wrong_address:4} | "
               f"parse errors {tally.parse_errors:3} | 405 {tally.method_not_allowed:3} | "
               f"lost {tally.lost:3} | misdelivered {tally.misdelivered:3}")
        rows.append(row)
        print(row, flush=True)
        for example in tally.examples[:3]:
            print(f"    {example}", flush=True)
    print("\nbuild     | I/O threads     | transport | connections | rate | counts (all 0 wanted)")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

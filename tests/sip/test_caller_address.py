"""The caller's address is the evidence ACM screens on: under concurrency, every call reaches
the engine with its own caller's address and port, exactly once, whatever the caller wrote
itself. The real OpenSIPS (scripts/opensips, patch series applied) behind the local stack's
rendered HAProxy, many callers at once from their own loopback addresses, each call on its own
TCP or TLS connection (tests/sip/callers.py).

OpenSIPS 4.0.1 parsed PROXY headers in static buffers shared by its TCP I/O threads
(images/opensips/patches/0001-*): on the unpatched build the first test fails (measured: 26
wrong addresses, 2 parse errors and 3 lost calls in 20,000 connections with 8 I/O threads).
To see it fail: ACM_OPENSIPS_UNPATCHED=1 .venv/bin/pytest tests/sip/test_caller_address.py
(builds the unpatched variant on first use, about 3 minutes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.opensips.settings import DEFAULT_TCP_IO_THREADS
from tests.conftest import rendering_of
from tests.sip.callers import CallerLab, Tally, opensips_build

pytestmark = pytest.mark.slow

# The parser's race needs several I/O threads reading connections at once; 8 on 2 cores gave
# it its chances (measured on the unpatched build, above).
RACING_IO_THREADS = 8
CONNECTIONS = 20_000
TLS_CONNECTIONS = 2_000


def lab_with(tmp_path: Path, io_threads: int) -> Iterator[CallerLab]:
    unpatched = os.environ.get("ACM_OPENSIPS_UNPATCHED") == "1"
    lab = CallerLab(tmp_path, opensips_build(unpatched=unpatched), io_threads)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def racing_lab(tmp_path: Path) -> Iterator[CallerLab]:
    yield from lab_with(tmp_path, RACING_IO_THREADS)


@pytest.fixture
def deployed_lab(tmp_path: Path) -> Iterator[CallerLab]:
    # What the stacks deploy (the local stack's setting, the default).
    threads = rendering_of("local").config.opensips.tcp_threads
    assert threads == DEFAULT_TCP_IO_THREADS
    yield from lab_with(tmp_path, threads)


def evidence_failures(tally: Tally) -> str:
    return f"{tally.line()}\n" + "\n".join(tally.examples)


def test_every_call_names_its_own_caller_with_many_io_threads(racing_lab: CallerLab) -> None:
    tally = racing_lab.run("tcp", CONNECTIONS)
    print(tally.line())
    # With several I/O threads OpenSIPS 4.0.1 also loses final answers in its threaded TCP
    # writes (not the parser: on the patched build too, never with one thread, which is why
    # the stacks run one): 61 in 100,000 in the benchmark, 14 in 20,000 in one CI run. The
    # evidence must hold regardless, for at least 99 % of the calls answered.
    assert (tally.wrong_address, tally.parse_errors, tally.method_not_allowed,
            tally.misdelivered, tally.repeated_evidence, tally.missing_evidence) == \
        (0, 0, 0, 0, 0, 0), evidence_failures(tally)
    assert tally.answered[603] >= CONNECTIONS * 99 // 100, evidence_failures(tally)
    assert tally.answered[603] + tally.lost == CONNECTIONS, evidence_failures(tally)


@pytest.mark.parametrize(("transport", "connections"),
                         [("tcp", CONNECTIONS), ("tls", TLS_CONNECTIONS)])
def test_the_deployed_configuration_loses_no_call_and_names_every_caller(
        deployed_lab: CallerLab, transport: str, connections: int) -> None:
    tally = deployed_lab.run(transport, connections)
    print(tally.line())
    assert tally.failures == 0, evidence_failures(tally)
    assert tally.answered[603] == connections


FORGED = [
    "X-ACM-Caller-IP: 192.0.2.66",
    "x-acm-caller-ip:192.0.2.67",  # compact spacing, lower case
    "X-ACM-CALLER-IP  :  192.0.2.68, 192.0.2.69",  # space before the colon, two values
    "X-Acm-Caller-Port: 5060",
    "X-ACM-Verdict: clean",  # not one the proxy sends, but under its prefix
]


def test_a_callers_own_evidence_headers_never_reach_the_engine(deployed_lab: CallerLab) -> None:
    tally = deployed_lab.run("tcp", 500, concurrency=16, forged=FORGED)
    # Each call's engine INVITE carries exactly one X-ACM-Caller-IP and one X-ACM-Caller-Port,
    # the proxy's (its caller's true source), and no other X-ACM-* header.
    assert tally.failures == 0, evidence_failures(tally)
    assert tally.answered[603] == 500


def test_an_ipv4_mapped_tcp6_header_names_the_ipv4_caller(deployed_lab: CallerLab) -> None:
    # A dual-stack HAProxy bind writes an IPv4 caller as ::ffff:a.b.c.d in a TCP6 line, which
    # OpenSIPS 4.0.1 could not parse (the patch reads it as the IPv4 address); a plain IPv6
    # caller keeps its address.
    port = deployed_lab.ports.proxy
    tally = deployed_lab.proxied([
        (f"PROXY TCP6 ::ffff:127.101.7.8 ::ffff:127.0.0.1 40123 {port}\r\n",
         ("127.101.7.8", 40123)),
        (f"PROXY TCP6 2001:db8::7 2001:db8::1 40124 {port}\r\n", ("2001:db8::7", 40124)),
        (f"PROXY TCP4 127.101.7.9 127.0.0.1 40125 {port}\r\n", ("127.101.7.9", 40125)),
    ])
    assert tally.failures == 0, evidence_failures(tally)
    assert tally.answered[603] == 3

"""Many callers at once, each from its own loopback address and port, each call on its own TCP
(or TLS) connection through HAProxy (the stack's rendered config, `send-proxy`) into the real
OpenSIPS's PROXY-protocol socket, and the recording engine stand-in
(tests/sip/recording_engine.py) telling which caller address and port reached it for every
call. The caller's address is the evidence ACM screens on: each call's X-ACM-Caller-IP and
X-ACM-Caller-Port must be that call's true source, exactly once.

Used by tests/sip/test_caller_address.py (a bounded run in the test command) and by
benchmarks/proxy_protocol_callers.py (100,000 connections, patched and unpatched builds).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from components.opensips.memory import opensips_memory_mib
from components.opensips.settings import SCREENED_CPS_PER_CORE, LoadShedding
from tests.conftest import REPO, rendering_of
from tests.sip.lab import (
    FRAUD_NUMBER,
    Ports,
    Processes,
    check_config,
    free_port,
    loopback_config,
    loopback_haproxy,
    wait_for_port,
)

PARSE_ERROR = "could not parse proxy_protocol header"
# Callers come from 127.101.0.1 to 127.101.199.254, a fixed-width address each (the PROXY
# header's length then depends only on the port), so that two headers of equal length, the
# case in which a shared parse buffer fails silently, are the rule.
CALLER_NETWORK_OCTET = 101


def caller_address(index: int) -> str:
    return f"127.{CALLER_NETWORK_OCTET}.{100 + index // 100 % 100}.{100 + index % 100}"


@dataclass
class Tally:
    """What the calls of one run met. Every count but `connections` and `answered` should be 0."""

    transport: str
    connections: int
    seconds: float = 0.0
    answered: Counter[int] = field(default_factory=Counter)
    wrong_address: int = 0  # the engine saw another address or port than the caller's
    missing_evidence: int = 0  # answered 603, but the engine has no INVITE with its Call-ID
    # More than one value of an evidence header reached the engine, or an X-ACM-* header that
    # is not the proxy's (a caller's own, passed on).
    repeated_evidence: int = 0
    lost: int = 0  # no final answer (connection closed, reset or timed out)
    misdelivered: int = 0  # answers to one call that arrived on another caller's connection
    parse_errors: int = 0  # OpenSIPS's "could not parse proxy_protocol header" lines
    examples: list[str] = field(default_factory=list)

    @property
    def method_not_allowed(self) -> int:
        return self.answered[405]

    @property
    def failures(self) -> int:
        other_answers = sum(n for status, n in self.answered.items() if status != 603)
        return (self.wrong_address + self.missing_evidence + self.repeated_evidence + self.lost
                + self.misdelivered + self.parse_errors + other_answers)

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)

    def line(self) -> str:
        other = {s: n for s, n in sorted(self.answered.items()) if s not in (603, 405)}
        rate = self.connections / self.seconds if self.seconds else 0.0
        return (f"{self.transport}: {self.connections:,} connections in {self.seconds:.1f} s "
                f"({rate:,.0f}/s): wrong address {self.wrong_address}, parse errors "
                f"{self.parse_errors}, 405s {self.method_not_allowed}, lost {self.lost}, "
                f"misdelivered answers {self.misdelivered}, "
                f"no evidence {self.missing_evidence}, repeated evidence "
                f"{self.repeated_evidence}, other answers {other or 0}")


@dataclass(frozen=True)
class Call:
    index: int
    call_id: str
    source: tuple[str, int]
    status: int | None  # the final answer, None when none came
    problem: str = ""
    strangers: tuple[str, ...] = ()  # Call-IDs of other calls' answers that came here


def sip_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def invite(call_id: str, source: tuple[str, int], transport: str, forged: list[str]) -> bytes:
    host, port = sip_host(source[0]), source[1]
    return ("\r\n".join([
        f"INVITE sip:{FRAUD_NUMBER}@opensips.invalid SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {host}:{port};branch=z9hG4bK-{call_id};rport",
        "Max-Forwards: 70",
        f"From: <sip:caller@{host}>;tag=caller-{call_id}",
        f"To: <sip:{FRAUD_NUMBER}@opensips.invalid>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:caller@{host}:{port};transport={transport}>",
        *forged,
        "Content-Length: 0", "", ""])).encode()


def ack(call_id: str, source: tuple[str, int], transport: str, to_tag: str) -> bytes:
    host, port = sip_host(source[0]), source[1]
    return ("\r\n".join([
        f"ACK sip:{FRAUD_NUMBER}@opensips.invalid SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {host}:{port};branch=z9hG4bK-{call_id};rport",
        "Max-Forwards: 70",
        f"From: <sip:caller@{host}>;tag=caller-{call_id}",
        f"To: <sip:{FRAUD_NUMBER}@opensips.invalid>;tag={to_tag}",
        f"Call-ID: {call_id}",
        "CSeq: 1 ACK",
        "Content-Length: 0", "", ""])).encode()


def header_value(head: str, *names: str) -> str:
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in names:
            return value.strip()
    return ""


async def final_answer(reader: asyncio.StreamReader, call_id: str,
                       strangers: list[str]) -> tuple[int, str]:
    """The first final answer to `call_id` on the connection: its status and its To tag; the
    Call-IDs of answers that arrived there for other calls go to `strangers`."""
    while True:
        head = (await reader.readuntil(b"\r\n\r\n")).decode(errors="replace")
        answered = header_value(head, "call-id", "i")
        if answered != call_id:
            strangers.append(answered)
            continue
        status = int(head.split(" ", 2)[1])
        if status >= 200:
            to_tag = header_value(head, "to", "t").partition(";tag=")[2].split(";")[0]
            return status, to_tag


async def one_call(index: int, host: str, port: int, transport: str,
                   tls: ssl.SSLContext | None, forged: list[str], timeout: float) -> Call:
    address = caller_address(index)
    call_id = f"{uuid.uuid4().hex}-{index}@callers.invalid"
    source = (address, 0)
    strangers: list[str] = []
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            host, port, local_addr=(address, 0), ssl=tls,
            server_hostname="opensips.lab.invalid" if tls else None), timeout)
    except (TimeoutError, OSError) as error:
        return Call(index, call_id, source, None, f"connect: {error!r}")
    try:
        source = writer.get_extra_info("sockname")[:2]
        writer.write(invite(call_id, source, transport, forged))
        await writer.drain()
        status, to_tag = await asyncio.wait_for(final_answer(reader, call_id, strangers),
                                                timeout)
        writer.write(ack(call_id, source, transport, to_tag))
        await writer.drain()
        return Call(index, call_id, source, status, strangers=tuple(strangers))
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
        return Call(index, call_id, source, None, repr(error), tuple(strangers))
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def proxied_call(index: int, port: int, proxy_header: str, claimed: tuple[str, int],
                       timeout: float = 10.0) -> Call:
    """One call written straight to OpenSIPS's PROXY socket on `port`, behind `proxy_header`
    (what HAProxy would send, e.g. a TCP6 line), claiming `claimed` as its source."""
    call_id = f"{uuid.uuid4().hex}-proxied@callers.invalid"
    strangers: list[str] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(proxy_header.encode() + invite(call_id, claimed, "tcp", []))
        await writer.drain()
        status, to_tag = await asyncio.wait_for(final_answer(reader, call_id, strangers),
                                                timeout)
        writer.write(ack(call_id, claimed, "tcp", to_tag))
        await writer.drain()
        return Call(index, call_id, claimed, status, strangers=tuple(strangers))
    finally:
        writer.close()
        await writer.wait_closed()


async def place_calls(count: int, concurrency: int, host: str, port: int, transport: str,
                      tls: ssl.SSLContext | None, forged: list[str],
                      timeout: float) -> list[Call]:
    slots = asyncio.Semaphore(concurrency)

    async def limited(index: int) -> Call:
        async with slots:
            return await one_call(index, host, port, transport, tls, forged, timeout)

    return list(await asyncio.gather(*(limited(index) for index in range(count))))


def tls_client() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The lab's certificate is made for the run; the server's identity is not what this tests.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def read_engine_record(path: Path) -> dict[str, tuple[str, str, str]]:
    """Call-ID -> (X-ACM-Caller-IP values, X-ACM-Caller-Port values, other X-ACM-* names)."""
    seen: dict[str, tuple[str, str, str]] = {}
    for line in path.read_text().splitlines():
        call_id, caller_ip, caller_port, others = ([*line.split("\t"), "", "", ""])[:4]
        seen[call_id] = (caller_ip, caller_port, others)
    return seen


def same_address(written: str, expected: str) -> bool:
    """OpenSIPS writes IPv6 addresses in its own form (upper case, uncompressed)."""
    try:
        return ipaddress.ip_address(written) == ipaddress.ip_address(expected)
    except ValueError:
        return False


def tally_of(transport: str, calls: list[Call], seen: dict[str, tuple[str, str, str]],
             opensips_log: str, seconds: float) -> Tally:
    tally = Tally(transport, len(calls), seconds)
    tally.parse_errors = opensips_log.count(PARSE_ERROR)
    for call in calls:
        if call.strangers:
            tally.misdelivered += len(call.strangers)
            tally.note(f"call {call.index} from {call.source} got answers to other calls: "
                       f"{', '.join(call.strangers)}")
        if call.status is None:
            tally.lost += 1
            tally.note(f"call {call.index} from {call.source}: no final answer ({call.problem})")
            continue
        tally.answered[call.status] += 1
        if call.status != 603:
            tally.note(f"call {call.index} from {call.source}: answered {call.status}")
            continue
        if call.call_id not in seen:
            tally.missing_evidence += 1
            tally.note(f"call {call.index}: the engine saw no INVITE with its Call-ID")
            continue
        caller_ip, caller_port, others = seen[call.call_id]
        if "," in caller_ip or "," in caller_port or others:
            tally.repeated_evidence += 1
            tally.note(f"call {call.index} from {call.source}: the engine got "
                       f"X-ACM-Caller-IP {caller_ip!r}, X-ACM-Caller-Port {caller_port!r}"
                       f"{', and ' + others if others else ''}")
        elif not same_address(caller_ip, call.source[0]) or caller_port != str(call.source[1]):
            tally.wrong_address += 1
            tally.note(f"call {call.index} from {call.source[0]}:{call.source[1]} reached the "
                       f"engine as {caller_ip}:{caller_port}")
    return tally


@dataclass
class CallerLab:
    """OpenSIPS (`binary`, the local stack's config) behind the rendered HAProxy, the recording
    engine; `tcp_threads` sets OpenSIPS's I/O threads (more threads, more chances for a race)."""

    directory: Path
    binary: str
    tcp_threads: int
    ports: Ports = field(default_factory=Ports)
    front_tcp: int = field(default_factory=free_port)
    front_tls: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.processes = Processes(self.directory / "processes.log")
        self.opensips_log = self.directory / "opensips.log"
        self.engine_record = self.directory / "engine-record.tsv"

    def start(self) -> None:
        import trustme

        issued = trustme.CA().issue_cert("opensips.lab.invalid")
        issued.private_key_pem.write_to_path(self.directory / "key.pem")
        issued.cert_chain_pems[0].write_to_path(self.directory / "cert.pem")
        # A CPU limit that allows the I/O threads asked for, and a shedding ceiling at what
        # that limit carries: screening capacity is not what this measures, no call is shed.
        resources = rendering_of("local").config.opensips.resources
        resources = resources.model_copy(update={"limits": resources.limits.model_copy(
            update={"cpu": str(max(self.tcp_threads, 8))})})
        config = loopback_config(
            "local", self.directory, self.ports,
            tls=(self.directory / "cert.pem", self.directory / "key.pem"),
            resources=resources, tcp_io_threads=self.tcp_threads,
            load_shedding=LoadShedding(
                calls_per_second=SCREENED_CPS_PER_CORE * max(self.tcp_threads, 8)))
        checked = check_config(config)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self.processes.start("engine", [sys.executable, "-m", "tests.sip.recording_engine",
                                        "--port", str(self.ports.engine),
                                        "--out", str(self.engine_record)])
        self.processes.start_redis(self.ports.redis)
        settings = rendering_of("local").config.opensips
        shared, private = opensips_memory_mib(settings.resources.limits.memory,
                                              settings.max_udp_workers, settings.tcp_workers)
        with self.opensips_log.open("ab") as out:
            self.processes.running["opensips"] = subprocess.Popen(
                [self.binary, "-F", "-f", str(config), "-m", str(shared), "-M", str(private)],
                stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.ports.proxy)
        haproxy = self.directory / "haproxy.cfg"
        haproxy.write_text(loopback_haproxy(
            "local", {"sip_tcp": self.front_tcp, "sip_tls": self.front_tls},
            {"opensips_sip_tcp": self.ports.proxy, "opensips_sip_tls": self.ports.proxy_tls},
            check_port=self.ports.proxy))
        self.processes.start("haproxy", [haproxy_binary(), "-db", "-f", str(haproxy)])
        wait_for_port(self.front_tcp)
        wait_for_port(self.front_tls)
        time.sleep(2)  # HAProxy's first health checks, the dispatcher's first probes

    def run(self, transport: str, count: int, concurrency: int = 64,
            forged: list[str] | None = None, timeout: float = 10.0) -> Tally:
        """`count` calls over `transport` ("tcp" or "tls"), `concurrency` at a time; the
        engine's record is read when the lab stops, so one lab serves one run."""
        port = self.front_tcp if transport == "tcp" else self.front_tls
        tls = tls_client() if transport == "tls" else None
        started = time.monotonic()
        calls = asyncio.run(place_calls(count, concurrency, "127.0.0.1", port, transport, tls,
                                        forged or [], timeout))
        seconds = time.monotonic() - started
        time.sleep(0.5)  # the last ACKs
        self.processes.stop("engine")
        return tally_of(transport, calls, read_engine_record(self.engine_record),
                        self.opensips_log.read_text(errors="replace"), seconds)

    def proxied(self, headers: list[tuple[str, tuple[str, int]]]) -> Tally:
        """Calls each written straight to the PROXY socket behind its own header line, with the
        source that header claims; one lab serves one such run."""
        started = time.monotonic()

        async def all_calls() -> list[Call]:
            return [await proxied_call(index, self.ports.proxy, line, claimed)
                    for index, (line, claimed) in enumerate(headers)]

        calls = asyncio.run(all_calls())
        time.sleep(0.5)
        self.processes.stop("engine")
        return tally_of("tcp", calls, read_engine_record(self.engine_record),
                        self.opensips_log.read_text(errors="replace"),
                        time.monotonic() - started)

    def stop(self) -> None:
        self.processes.stop_all()


def haproxy_binary() -> str:
    import shutil

    found = shutil.which("haproxy")
    assert found, "haproxy is not installed: run ./scripts/setup"
    return found


def opensips_build(unpatched: bool = False) -> str:
    """The binary scripts/opensips built (`--unpatched`: without the patch series; built on
    first use, about 3 minutes)."""
    variant = ["--unpatched"] if unpatched else []
    script = REPO / "scripts" / "opensips"
    if unpatched:
        subprocess.run([script, "build", *variant], check=True, stdout=subprocess.DEVNULL)
    answer = subprocess.run([script, "bin", *variant], capture_output=True, text=True,
                            check=False)
    assert answer.returncode == 0, f"OpenSIPS is not built: {answer.stderr.strip()}"
    return answer.stdout.strip()

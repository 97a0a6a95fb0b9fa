"""A caller that sends a burst of INVITEs over UDP at a fixed rate and keeps, per call, what
came back and when: the final status, its headers, the time from INVITE to final answer, and
whether the call completed (200, ACK, the gateway's BYE answered). It never retransmits, so
what it counts is what the proxy did with each request, once.

SIPp measures rates and percentiles for the benchmark; this is for the test that needs each
call's own answer (a 503's Retry-After, its latency)."""

from __future__ import annotations

import re
import socket
import time
import uuid
from dataclasses import dataclass, field

_STATUS = re.compile(r"^SIP/2\.0 (\d{3}) ")


@dataclass
class Call:
    call_id: str
    branch: str
    sent_at: float
    status: int | None = None
    answered_at: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    completed: bool = False  # the gateway's BYE arrived and was answered

    @property
    def latency(self) -> float | None:
        return None if self.answered_at is None else self.answered_at - self.sent_at


def _headers(message: str) -> tuple[str, dict[str, str], list[str]]:
    lines = message.split("\r\n")
    headers: dict[str, str] = {}
    record_routes: list[str] = []
    for line in lines[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        key = name.strip().lower()
        if key == "record-route":
            record_routes += [part.strip() for part in value.split(",")]
        headers.setdefault(key, value.strip())
    return lines[0], headers, record_routes


def _uri(value: str) -> str:
    match = re.search(r"<([^>]+)>", value)
    return match.group(1) if match else value.split(";")[0].strip()


class BurstCaller:
    def __init__(self, proxy: tuple[str, int], address: str = "127.0.0.2",
                 number: str = "+2348031234567") -> None:
        self.proxy = proxy
        self.number = number
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((address, 0))
        self.socket.settimeout(0.05)
        self.local = self.socket.getsockname()
        self.calls: dict[str, Call] = {}

    def close(self) -> None:
        self.socket.close()

    def _send(self, text: str, to: tuple[str, int] | None = None) -> None:
        self.socket.sendto(text.encode(), to or self.proxy)

    def _invite(self, index: int) -> None:
        call_id, branch = f"burst-{uuid.uuid4().hex}", f"z9hG4bK-{uuid.uuid4().hex[:16]}"
        host, port = self.local
        target = f"sip:{self.number}@{self.proxy[0]}:{self.proxy[1]}"
        self.calls[call_id] = Call(call_id, branch, time.monotonic())
        self._send(
            f"INVITE {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport\r\n"
            f"From: <sip:+2348030000001@{host}:{port}>;tag=burst{index}\r\n"
            f"To: <{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@{host}:{port}>\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n")

    def _ack(self, call: Call, headers: dict[str, str], record_routes: list[str]) -> None:
        host, port = self.local
        if call.status == 200:
            # ACK of a 2xx: to the callee's Contact, along the recorded route.
            request_uri = _uri(headers["contact"])
            routes = "".join(f"Route: {route}\r\n" for route in record_routes)
            branch = f"z9hG4bK-{uuid.uuid4().hex[:16]}"
        else:
            # ACK of a non-2xx final answer: part of the INVITE transaction.
            request_uri = f"sip:{self.number}@{self.proxy[0]}:{self.proxy[1]}"
            routes, branch = "", call.branch
        self._send(
            f"ACK {request_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch={branch}"
            f";rport\r\nFrom: {headers['from']}\r\nTo: {headers['to']}\r\n"
            f"Call-ID: {call.call_id}\r\nCSeq: 1 ACK\r\n{routes}Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n")

    def _answer_bye(self, message: str, sender: tuple[str, int]) -> None:
        _, headers, _ = _headers(message)
        vias = [line.split(":", 1)[1].strip() for line in message.split("\r\n")
                if line.lower().startswith("via:")]
        self._send("SIP/2.0 200 OK\r\n" + "".join(f"Via: {via}\r\n" for via in vias)
                   + f"From: {headers['from']}\r\nTo: {headers['to']}\r\n"
                   f"Call-ID: {headers['call-id']}\r\nCSeq: {headers['cseq']}\r\n"
                   "Content-Length: 0\r\n\r\n", sender)
        call = self.calls.get(headers["call-id"])
        if call is not None:
            call.completed = True

    def _receive(self, until: float) -> None:
        while time.monotonic() < until:
            try:
                data, sender = self.socket.recvfrom(65535)
            except TimeoutError:
                return
            message = data.decode(errors="replace")
            first, headers, record_routes = _headers(message)
            if first.startswith("BYE "):
                self._answer_bye(message, sender)
                continue
            status = _STATUS.match(first)
            call = self.calls.get(headers.get("call-id", ""))
            if status is None or call is None or int(status.group(1)) < 200:
                continue
            if call.status is None:
                call.status, call.answered_at = int(status.group(1)), time.monotonic()
                call.headers = headers
            self._ack(call, headers, record_routes)

    def run(self, rate: int, seconds: float, settle: float) -> list[Call]:
        """Send `rate` INVITEs a second for `seconds`, then wait `settle` for answers and BYEs."""
        started = time.monotonic()
        total = int(rate * seconds)
        for index in range(total):
            due = started + index / rate
            while (now := time.monotonic()) < due:
                self._receive(until=min(due, now + 0.005))
            self._invite(index)
        self._receive_for(settle)
        return list(self.calls.values())

    def _receive_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._receive(until=end)

"""An ACM engine stand-in that records, for every INVITE it screens, the evidence headers it
received, so that a concurrency test can compare them call by call with each caller's true
source. It answers every INVITE 603 (a fraud verdict: one transaction per call, no media
gateway) and the dispatcher's OPTIONS probes 200.

    python -m tests.sip.recording_engine --port P --out FILE

FILE gets one line per INVITE, written when the process ends (SIGTERM): the Call-ID, the
values of every X-ACM-Caller-IP header and of every X-ACM-Caller-Port header it carried (any
case, any spacing), and the names of any other X-ACM-* headers, tab-separated, values of one
name joined by commas.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from pathlib import Path
from typing import cast

HEADER = re.compile(r"^([!-9;-~]+)[ \t]*:[ \t]*(.*?)[ \t]*$")
EVIDENCE = ("x-acm-caller-ip", "x-acm-caller-port")
ECHOED = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")


def headers(message: str) -> list[tuple[str, str]]:
    head = message.split("\r\n\r\n", 1)[0]
    found = []
    for line in head.split("\r\n")[1:]:
        matched = HEADER.match(line)
        if matched:
            found.append((matched.group(1), matched.group(2)))
    return found


def answer(message: str, status: str) -> bytes:
    lines = [f"SIP/2.0 {status}"]
    for name, value in headers(message):
        if name.lower() in ECHOED:
            if name.lower() in ("to", "t") and ";tag=" not in value:
                value += ";tag=engine"
            lines.append(f"{name}: {value}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


class Engine(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.seen: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        assert self.transport is not None
        message = data.decode(errors="replace")
        if message.startswith("INVITE "):
            fields = headers(message)
            call_id = next((v for n, v in fields if n.lower() in ("call-id", "i")), "")
            values = [",".join(v for n, v in fields if n.lower() == name) for name in EVIDENCE]
            others = ",".join(n for n, _ in fields
                              if n.lower().startswith("x-acm-") and n.lower() not in EVIDENCE)
            self.seen.append("\t".join([call_id, *values, others]))
            self.transport.sendto(answer(message, "603 Decline"), addr)
        elif message.startswith("OPTIONS "):
            self.transport.sendto(answer(message, "200 OK"), addr)


async def serve(port: int, out: Path) -> None:
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stopped.set_result, None)
    loop.add_signal_handler(signal.SIGINT, stopped.set_result, None)
    transport, engine = await loop.create_datagram_endpoint(
        Engine, local_addr=("127.0.0.1", port))
    try:
        await stopped
    finally:
        transport.close()
        out.write_text("".join(line + "\n" for line in engine.seen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.out))


if __name__ == "__main__":
    main()

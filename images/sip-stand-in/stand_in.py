"""Supervisor of a SIPp stand-in in a pod: runs SIPp with one scenario on the SIP port, serves
/health (200 while SIPp runs, to anyone: the kubelet's probe) and, given an account, /metrics
(basic auth, as the ACM engine's contract asks) on the HTTP port, and stops SIPp on SIGTERM (a
Python PID 1 would otherwise ignore it and the pod would wait out its grace period).

    stand_in.py engine|gateway [--sip-port 5060] [--http-port 8080] [--trace /tmp/messages.log]
                [--metrics-user USER --metrics-password-file FILE]

Every SIP message is written to the trace file (SIPp's -trace_msg, two files of 10 MB at most),
so that a test can read what the stand-in received, such as OpenSIPS's X-ACM-Caller-IP header.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

SCENARIOS = {"engine": "acm_engine.xml", "gateway": "media_gateway.xml"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=sorted(SCENARIOS))
    parser.add_argument("--sip-port", type=int, default=5060)
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--trace", default="/tmp/messages.log")
    parser.add_argument("--metrics-user")
    parser.add_argument("--metrics-password-file")
    options = parser.parse_args()
    # The pod's own address: SIPp writes it into Contact headers.
    address = socket.gethostbyname(socket.gethostname())
    sipp = subprocess.Popen([
        "sipp", "-sf", f"/opt/stand-in/scenarios/{SCENARIOS[options.role]}",
        "-i", address, "-p", str(options.sip_port), "-nostdin", "-buff_size", "4194304",
        # SIPp's control socket (it takes commands such as "quit") and its media sockets stay
        # on the pod's loopback: only SIP is open to the network.
        "-ci", "127.0.0.1", "-mi", "127.0.0.1",
        "-trace_msg", "-message_file", options.trace,
        "-ringbuffer_size", "10000000", "-ringbuffer_files", "2",
    ])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            alive = sipp.poll() is None
            if self.path == "/health":
                self._answer(200 if alive else 503, "ok\n" if alive else "sipp stopped\n")
            elif self.path == "/metrics" and options.metrics_password_file:
                if not self._authorized():
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="acm-engine"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._answer(200, f'acm_stand_in_up{{role="{options.role}"}} {int(alive)}\n')
            else:
                self._answer(404, "not found\n")

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization") or ""
            try:
                given = base64.b64decode(header.removeprefix("Basic "), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            name, _, offered = given.partition(":")
            # Read on every request: a rotated password is taken without a restart.
            with open(options.metrics_password_file, encoding="utf-8") as file:
                expected = file.read().strip()
            return header.startswith("Basic ") & hmac.compare_digest(
                name, options.metrics_user or "") & hmac.compare_digest(offered, expected)

        def _answer(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds: no access log

    server = ThreadingHTTPServer(("0.0.0.0", options.http_port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(signum: int, frame: FrameType | None) -> None:
        sipp.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = sipp.wait()
    server.shutdown()
    return 0 if status in (0, -signal.SIGTERM, 1) else status


if __name__ == "__main__":
    sys.exit(main())

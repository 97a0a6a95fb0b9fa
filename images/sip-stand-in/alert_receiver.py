"""The webhook receiver stand-in of the local stack: where Alertmanager's webhook receivers send
in place of an operator's on-call tool, compliance pager and ticket queue. It asks for the
account the webhook configs send, records each notification it accepts, and shows them to
whoever has the same account (the cluster tests).

    alert_receiver.py --username NAME --password-file FILE [--port 8080]

    POST /<receiver>  basic auth as Alertmanager's webhook_configs send it: 200, recorded;
                      401 without the account, 400 for a body that is not a JSON object
    GET  /received    the same account: every notification recorded, oldest first, as
                      [{"receiver": ..., "received_at": unix seconds, "body": {...}}]
    GET  /health      200 "ok" for the kubelet's probes: says alive, shows nothing

Notifications are kept in memory (the newest 10,000): a restarted stand-in starts empty, as a
test that reads it expects of a fresh deployment.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import hmac
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

KEPT = 10_000
LARGEST_BODY = 1 << 20  # Alertmanager's payloads are kilobytes; anything bigger is refused


class Notifications:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEPT)

    def add(self, receiver: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._kept.append({"receiver": receiver, "received_at": time.time(), "body": body})

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._kept)


def authorized(header: str | None, username: str, password: str) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header.removeprefix("Basic "), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    name, _, offered = given.partition(":")
    # Both compared whatever the first gives: the time taken says nothing about either.
    return hmac.compare_digest(name, username) & hmac.compare_digest(offered, password)


def handler(notifications: Notifications, username: str, password: str) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self._answer(200, "ok\n", "text/plain")
            elif not self._authorized():
                return
            elif self.path == "/received":
                self._answer(200, json.dumps(notifications.all()), "application/json")
            else:
                self._answer(404, "not found\n", "text/plain")

        def do_POST(self) -> None:
            if not self._authorized():
                return
            receiver = self.path.strip("/")
            length = int(self.headers.get("Content-Length") or 0)
            if not receiver or "/" in receiver or length > LARGEST_BODY:
                self._answer(400, "POST a JSON object to /<receiver>\n", "text/plain")
                return
            try:
                body = json.loads(self.rfile.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = None
            if not isinstance(body, dict):
                self._answer(400, "the body is not a JSON object\n", "text/plain")
                return
            notifications.add(receiver, body)
            self._answer(200, "recorded\n", "text/plain")

        def _authorized(self) -> bool:
            if authorized(self.headers.get("Authorization"), username, password):
                return True
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="alert receiver stand-in"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False

        def _answer(self, status: int, text: str, content_type: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds: no access log

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password-file", type=Path, required=True)
    options = parser.parse_args()
    try:
        password = options.password_file.read_text().strip()
    except OSError as error:
        print(f"alert_receiver: cannot read --password-file: {error}", file=sys.stderr)
        return 2
    if not password:
        print(f"alert_receiver: --password-file {options.password_file} is empty",
              file=sys.stderr)
        return 2
    server = ThreadingHTTPServer(
        ("0.0.0.0", options.port), handler(Notifications(), options.username, password))
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    # PID 1 in the pod: without these, SIGTERM would be ignored and the pod would wait out its
    # grace period.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

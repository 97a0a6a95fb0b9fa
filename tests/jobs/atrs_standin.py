"""A stand-in for the regulator's ATRS API, following the contract in the spec and our
documented reading of it (README, "NCC compliance jobs"), failure modes included.

It runs over TLS with a certificate from a throwaway CA (trustme), so the client's
verification is exercised, and it can be told to fail: expired tokens, 429 with
`X-RateLimit-Reset`, bursts of 5xx, slow responses, rejected payloads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import trustme

HEX64 = re.compile(r"^[0-9a-f]{64}$")
FILE_NAME = re.compile(r"^ACM_[A-Z_]+_(?P<license>[A-Z0-9-]+)_(?P<stamp>\d{6,8})\.(csv|json|pdf)$")


@dataclass
class Fault:
    """Answer the next `times` requests whose path starts with `path` this way."""

    path: str
    status: int | None = None  # None: no error, only the delay
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    # After processing: the request takes effect, then the delay, and the answer is this
    # fault's status and body (or the real answer when status is None).
    after: bool = False
    # Sent as the body instead of `body` as JSON (an answer that is not JSON).
    raw: bytes | None = None


@dataclass
class Accepted:
    kind: str
    period: str
    key: str
    reference: str
    body: dict[str, Any]


class AtrsStandin:
    def __init__(self, ca: trustme.CA, directory: Path, *, license_number: str,
                 client_id: str = "acm-client", client_secret: str = "s3cret/+=",
                 sftp_root: Path | None = None, host: str = "127.0.0.1") -> None:
        self.license_number = license_number
        self.client_id, self.client_secret = client_id, client_secret
        # int seconds; a string (some servers send one); None: no expires_in at all.
        self.token_lifetime: int | str | None = 3600
        self.tokens: dict[str, float] = {}
        self.faults: list[Fault] = []
        self.accepted: list[Accepted] = []
        self.replies: dict[str, tuple[int, dict[str, Any]]] = {}
        self.incident_status: dict[str, str] = {}
        self.issued_tokens: list[str] = []
        self.log: list[tuple[str, str, int]] = []
        self.sftp_root = sftp_root
        # False: a regulator that ignores Idempotency-Key and stores every POST it receives
        # (what the job must not assume without the regulator's word).
        self.honours_idempotency_key = True
        self._lock = threading.Lock()
        self.ca_file = directory / "atrs-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(host, "localhost").configure_cert(context)
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self.base_url = f"https://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> AtrsStandin:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- controls -------------------------------------------------------------------------

    def fail(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def expire_tokens(self) -> None:
        """Every token issued so far is now invalid on the server's side."""
        with self._lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    def accepted_for(self, kind: str, period: str) -> list[Accepted]:
        return [item for item in self.accepted if item.kind == kind and item.period == period]

    def calls(self, method: str, path_prefix: str) -> list[int]:
        return [status for m, path, status in self.log if m == method
                and path.startswith(path_prefix)]

    # -- protocol -------------------------------------------------------------------------

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if path.startswith(fault.path) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _token(self, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        authorization = headers.get("Authorization", "")
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if not authorization.startswith("Basic "):
            return 401, {"error": "invalid_client"}
        supplied = base64.b64decode(authorization[6:]).decode()
        user, _, password = supplied.partition(":")
        if (unquote_plus(user), unquote_plus(password)) != (self.client_id, self.client_secret):
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        token = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()
        lifetime = self.token_lifetime
        # A token without a usable stated lifetime lives an hour on this server.
        seconds = float(lifetime) if isinstance(lifetime, int) or (
            isinstance(lifetime, str) and lifetime.isdigit()) else 3600.0
        with self._lock:
            self.tokens[token] = time.monotonic() + seconds
            self.issued_tokens.append(token)
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if lifetime is not None:
            answer["expires_in"] = lifetime
        return 200, answer

    def _authorized(self, headers: Any) -> bool:
        value = headers.get("Authorization", "")
        token = value[7:] if value.startswith("Bearer ") else ""
        with self._lock:
            return self.tokens.get(token, 0.0) > time.monotonic()

    def _check_files(self, files: Any, problems: list[str]) -> None:
        if not isinstance(files, list) or not files:
            problems.append("files: a non-empty list is required")
            return
        for index, item in enumerate(files):
            name, digest = item.get("name", ""), item.get("sha256", "")
            match = FILE_NAME.match(name)
            if not match or match["license"] != self.license_number:
                problems.append(f"files[{index}].name: {name!r} is not a file of this licence")
            if not HEX64.match(digest):
                problems.append(f"files[{index}].sha256: not a SHA-256")
            if self.sftp_root is not None and match:
                # Like the regulator: the files named must be on the SFTP server, intact.
                path = self.sftp_root / name
                if not path.is_file():
                    problems.append(f"files[{index}]: {name} was not delivered by SFTP")
                elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                    problems.append(f"files[{index}]: {name} on SFTP does not match its sha256")

    def _report(self, kind: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        problems: list[str] = []
        if body.get("licenseNumber") != self.license_number:
            problems.append("licenseNumber: not the licence of this client")
        if body.get("reportType") != kind:
            problems.append(f"reportType: expected {kind}")
        if not isinstance(body.get("period"), str):
            problems.append("period: required")
        self._check_files(body.get("files"), problems)
        if problems:
            return 422, {"errors": problems}
        with self._lock:
            for item in self.accepted:
                if item.kind == kind and item.period == body["period"] and \
                        self.honours_idempotency_key:
                    return 409, {"reference": item.reference, "status": "DUPLICATE"}
            reference = f"ATRS-{kind.upper()}-{len(self.accepted) + 1:06d}"
            self.accepted.append(Accepted(kind, body["period"], key, reference, body))
        return 201, {"reference": reference, "status": "ACCEPTED"}

    def _incident(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        missing = [name for name in ("licenseNumber", "alertId", "detectedAt", "severity",
                                     "fraudType", "aNumber", "bNumber") if name not in body]
        if missing:
            return 422, {"errors": [f"{name}: required" for name in missing]}
        with self._lock:
            for item in self.accepted:
                if item.kind == "incident" and item.period == body["alertId"] and \
                        self.honours_idempotency_key:
                    return 409, {"incidentId": item.reference, "status": "DUPLICATE"}
            incident_id = f"INC-{len(self.accepted) + 1:06d}"
            self.accepted.append(Accepted("incident", body["alertId"], key, incident_id, body))
            self.incident_status[incident_id] = "RECEIVED"
        return 201, {"incidentId": incident_id, "status": "RECEIVED"}

    def handle(self, method: str, path: str, headers: Any,
               body: bytes) -> tuple[int, dict[str, Any] | bytes, dict[str, str], float]:
        fault = self._take_fault(path)
        if fault and fault.status is not None and not fault.after:
            return fault.status, fault.raw or fault.body, fault.headers, fault.delay
        status, answer, extra, delay = self._answer(method, path, headers, body, fault)
        if fault and fault.after and fault.status is not None:
            return fault.status, fault.raw or fault.body, fault.headers, delay
        return status, answer, extra, delay

    def _answer(self, method: str, path: str, headers: Any, body: bytes,
                fault: Fault | None) -> tuple[int, dict[str, Any], dict[str, str], float]:
        delay = fault.delay if fault else 0.0
        if method == "POST" and path == "/oauth/token":
            status, answer = self._token(headers, body)
            return status, answer, {}, delay
        if method == "GET" and path == "/health":
            return 200, {"status": "ok"}, {}, delay
        if not self._authorized(headers):
            return 401, {"error": "invalid_token"}, {"WWW-Authenticate": "Bearer"}, delay
        if method == "GET" and path.startswith("/fraud/incidents/"):
            incident_id = path.rsplit("/", 1)[1]
            if incident_id not in self.incident_status:
                return 404, {"error": "unknown incident"}, {}, delay
            return 200, {"incidentId": incident_id,
                         "status": self.incident_status[incident_id]}, {}, delay
        if method != "POST":
            return 404, {"error": "not found"}, {}, delay
        key = headers.get("Idempotency-Key")
        if not key:
            return 400, {"error": "Idempotency-Key header required"}, {}, delay
        with self._lock:
            if key in self.replies and self.honours_idempotency_key:
                status, answer = self.replies[key]
                return (200 if status == 201 else status), answer, {}, delay
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, {"error": "body is not JSON"}, {}, delay
        if path.startswith("/compliance/reports/"):
            kind = path.rsplit("/", 1)[1]
            if kind not in ("daily", "weekly", "monthly"):
                return 404, {"error": "not found"}, {}, delay
            status, answer = self._report(kind, key, payload)
        elif path == "/fraud/incidents":
            status, answer = self._incident(key, payload)
        else:
            return 404, {"error": "not found"}, {}, delay
        if status in (201, 409):
            with self._lock:
                self.replies[key] = (status, answer)
        return status, answer, {}, delay

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, answer, extra, delay = standin.handle(method, self.path, self.headers,
                                                              body)
                if delay:
                    time.sleep(delay)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                with standin._lock:
                    standin.log.append((method, self.path, status))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the client gave up waiting (a timeout test)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler

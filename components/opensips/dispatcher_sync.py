"""Keep OpenSIPS's dispatcher table equal to the ACM engine pods behind a headless Service.

Runs as a native sidecar next to OpenSIPS (stdlib only, so any pinned Python image serves).
Every interval it resolves each set's headless Service name to the ready pods' addresses,
writes the db_text `dispatcher` table atomically when the set changed, and asks OpenSIPS to
`ds_reload` over the HTTP MI. Each engine is its own destination, so OpenSIPS probes and fails
over per engine; an empty answer (DNS hiccup) never empties a set that had engines.

It also serves /metrics (basic auth, OpenSIPS's control account) with the UDP receive buffer
a socket in this pod is granted when it asks for what OpenSIPS asks for (`maxbuffer`): the
node's net.core.rmem_max caps it, a host-wide sysctl no pod can raise, and a capped buffer
drops INVITEs in bursts (alert AcmUdpReceiveBufferCapped).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import os
import shutil
import socket
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def resolve(domain: str, port: int) -> list[str]:
    try:
        answers = socket.getaddrinfo(domain, port, type=socket.SOCK_DGRAM)
    except socket.gaierror:
        return []
    return sorted({str(answer[4][0]) for answer in answers})


def table_rows(sets: dict[int, list[str]], port: int) -> list[str]:
    rows = []
    row_id = 1
    for setid in sorted(sets):
        for address in sets[setid]:
            host = f"[{address}]" if ":" in address else address
            destination = f"sip\\:{host}\\:{port}"
            # state 0 = active, probe_mode 0 = probe when the module probes all (ds_probing_mode 1)
            rows.append(f"{row_id}:{setid}:{destination}::0:0:1:0::acm-engine-set-{setid}")
            row_id += 1
    return rows


def write_atomically(path: Path, text: str) -> bool:
    """Write `text` to `path` through a rename; False when the content is already there.

    db_text reloads a table only when the file's mtime, in whole seconds, is greater than when
    it last read it: two changes within one second (engines starting together) left OpenSIPS
    with the first one. Each new version's mtime is therefore a second past the last one's."""
    previous = None
    if path.exists():
        if path.read_text() == text:
            return False
        previous = int(path.stat().st_mtime)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    stamp = int(time.time())
    if previous is not None and stamp <= previous:
        stamp = previous + 1
    os.utime(temporary, (stamp, stamp))
    os.replace(temporary, path)
    return True


def mi_command(url: str, method: str, user: str, password_file: str) -> dict[str, Any]:
    """One MI call with the httpd's basic-auth account; the password is read from its mounted
    Secret on every call, so a rotated one is picked up without a restart."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "id": 1}).encode()
    account = f"{user}:{Path(password_file).read_text().strip()}"
    request = urllib.request.Request(url, data=body, headers={
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(account.encode()).decode()})
    with urllib.request.urlopen(request, timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def granted_receive_buffer(wanted: int) -> int:
    """The receive buffer the kernel grants a UDP socket of this pod that asks for `wanted`
    bytes with SO_RCVBUF, as OpenSIPS's probe does (socket_info.c, probe_max_sock_buff): the
    kernel caps the request at net.core.rmem_max and reports twice what it keeps (the other
    half is its bookkeeping), so half the report is the buffer OpenSIPS gets."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
        return int(probe.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) // 2


def metrics_text(settings: dict[str, Any]) -> str:
    wanted = int(settings["udp_receive_buffer_bytes"])
    return (
        "# HELP acm_opensips_udp_receive_buffer_bytes UDP receive buffer a socket of this pod "
        "gets when it asks for OpenSIPS's maxbuffer (capped by the node's net.core.rmem_max)\n"
        "# TYPE acm_opensips_udp_receive_buffer_bytes gauge\n"
        f"acm_opensips_udp_receive_buffer_bytes {granted_receive_buffer(wanted)}\n"
        "# HELP acm_opensips_udp_receive_buffer_wanted_bytes OpenSIPS's maxbuffer: the UDP "
        "receive buffer it asks for\n"
        "# TYPE acm_opensips_udp_receive_buffer_wanted_bytes gauge\n"
        f"acm_opensips_udp_receive_buffer_wanted_bytes {wanted}\n"
    )


def authorized(header: str | None, user: str, password_file: str) -> bool:
    """Whether `header` carries the control account; the password file is read on every call,
    so a rotated one is taken without a restart."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header.removeprefix("Basic "), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    name, _, offered = given.partition(":")
    expected = Path(password_file).read_text().strip()
    return hmac.compare_digest(name, user) & hmac.compare_digest(offered, expected)


def serve_metrics(settings: dict[str, Any]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not authorized(self.headers.get("Authorization"), settings["mi_user"],
                              settings["mi_password_file"]):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="dispatcher-sync"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path != "/metrics":
                self._answer(404, b"not found\n")
                return
            self._answer(200, metrics_text(settings).encode())

        def _answer(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scraped every few seconds: no access log

    server = ThreadingHTTPServer(("0.0.0.0", int(settings["metrics_port"])), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def sync_once(settings: dict[str, Any], known: dict[int, list[str]]) -> bool:
    current: dict[int, list[str]] = {}
    for entry in settings["sets"]:
        addresses = resolve(entry["domain"], settings["port"])
        setid = int(entry["setid"])
        # Keep the last known engines rather than empty a set on a failed lookup.
        current[setid] = addresses or known.get(setid, [])
    known.update(current)
    text = "\n".join([settings["columns"], *table_rows(current, settings["port"])]) + "\n"
    return write_atomically(Path(settings["table_path"]), text)


def install_static_tables(settings: dict[str, Any]) -> None:
    source = Path(settings["static_tables_dir"])
    for table in sorted(source.iterdir()):
        if table.is_file() and not table.name.startswith("."):
            shutil.copyfile(table, Path(settings["db_dir"]) / table.name)


def check(settings: dict[str, Any]) -> int:
    table = Path(settings["table_path"])
    if not table.exists():
        print(f"{table} does not exist", file=sys.stderr)
        return 1
    age = time.time() - table.stat().st_mtime
    stamp = table.with_name(".synced")
    if stamp.exists():
        age = time.time() - stamp.stat().st_mtime
    if age > 3 * float(settings["interval_seconds"]) + 30:
        print(f"last sync {age:.0f}s ago", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", required=True, type=Path)
    parser.add_argument("--check", action="store_true", help="liveness: is the table fresh?")
    parser.add_argument("--once", action="store_true", help="sync once and exit")
    options = parser.parse_args(argv)
    settings = json.loads(options.settings.read_text())
    if options.check:
        return check(settings)
    install_static_tables(settings)
    if not options.once:
        serve_metrics(settings)
    known: dict[int, list[str]] = {}
    reload_pending = False
    while True:
        reload_pending = sync_once(settings, known) or reload_pending
        Path(settings["table_path"]).with_name(".synced").touch()
        if reload_pending:
            try:
                mi_command(settings["mi_url"], "ds_reload", settings["mi_user"],
                           settings["mi_password_file"])
                reload_pending = False
                print(json.dumps({"event": "ds_reload", "sets": known}), flush=True)
            except OSError as error:
                # OpenSIPS not listening yet, or busy: try again on the next round.
                print(json.dumps({"event": "ds_reload_failed", "error": str(error)}), flush=True)
        if options.once:
            return 0
        time.sleep(float(settings["interval_seconds"]))


if __name__ == "__main__":
    sys.exit(main())

"""The dispatcher-sync sidecar: the table follows the engines, and a DNS hiccup empties nothing."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from components.opensips import dispatcher_sync
from components.opensips.config_files import DISPATCHER_COLUMNS


def settings(tmp_path: Path, mi_url: str = "http://127.0.0.1:9/mi") -> dict[str, Any]:
    static = tmp_path / "static"
    static.mkdir()
    (static / "version").write_text("table_name(string) table_version(int)\ndispatcher:9\n")
    db = tmp_path / "db"
    db.mkdir()
    password = tmp_path / "mi-password"
    password.write_text("sidecar-test-password\n")
    return {"mi_user": "acm-control", "mi_password_file": str(password),
            "sets": [{"setid": 1, "domain": "engines"}, {"setid": 2, "domain": "backup"}],
            "port": 5060, "table_path": str(db / "dispatcher"), "static_tables_dir": str(static),
            "db_dir": str(db), "columns": DISPATCHER_COLUMNS, "mi_url": mi_url,
            "interval_seconds": 5}


def test_each_engine_is_its_own_destination(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"engines": ["10.1.0.7", "10.1.0.5"], "backup": ["10.1.0.9"]}
    monkeypatch.setattr(dispatcher_sync, "resolve", lambda domain, port: sorted(answers[domain]))
    config = settings(tmp_path)
    assert dispatcher_sync.sync_once(config, {}) is True
    rows = Path(config["table_path"]).read_text().splitlines()
    assert rows[0] == DISPATCHER_COLUMNS
    assert rows[1:] == [
        "1:1:sip\\:10.1.0.5\\:5060::0:0:1:0::acm-engine-set-1",
        "2:1:sip\\:10.1.0.7\\:5060::0:0:1:0::acm-engine-set-1",
        "3:2:sip\\:10.1.0.9\\:5060::0:0:1:0::acm-engine-set-2",
    ]
    # Unchanged engines: no rewrite, no reload.
    assert dispatcher_sync.sync_once(config, {}) is False


def test_a_failed_lookup_keeps_the_known_engines(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(tmp_path)
    known: dict[int, list[str]] = {}
    monkeypatch.setattr(dispatcher_sync, "resolve", lambda domain, port: ["10.1.0.5"])
    dispatcher_sync.sync_once(config, known)
    monkeypatch.setattr(dispatcher_sync, "resolve", lambda domain, port: [])
    assert dispatcher_sync.sync_once(config, known) is False
    assert "10.1.0.5" in Path(config["table_path"]).read_text()


def test_scaling_changes_the_table_and_reloads_over_mi(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    authorizations: list[str | None] = []

    class MiHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            calls.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            authorizations.append(self.headers.get("Authorization"))
            body = b'{"jsonrpc": "2.0", "result": "OK", "id": 1}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), MiHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = settings(tmp_path, f"http://127.0.0.1:{server.server_port}/mi")
        config_file = tmp_path / "settings.json"
        config_file.write_text(json.dumps(config))
        monkeypatch.setattr(dispatcher_sync, "resolve", lambda domain, port: ["10.1.0.5"])
        assert dispatcher_sync.main(["--settings", str(config_file), "--once"]) == 0
        assert [call["method"] for call in calls] == ["ds_reload"]
        # The httpd's account, the password read from its mounted file (newline stripped).
        assert authorizations == [
            "Basic " + base64.b64encode(b"acm-control:sidecar-test-password").decode()]
        assert (Path(config["db_dir"]) / "version").exists()
        assert dispatcher_sync.main(["--settings", str(config_file), "--check"]) == 0
    finally:
        server.shutdown()


def test_two_changes_within_a_second_are_two_mtimes(tmp_path: Path) -> None:
    # db_text rereads a table only when its mtime, in whole seconds, went up: engines that
    # start together change the table twice within one second (found on the real node, where
    # OpenSIPS kept the first, sometimes empty, set).
    table = tmp_path / "dispatcher"
    stamps = []
    for engines in (["10.1.0.5"], ["10.1.0.5", "10.1.0.6"], ["10.1.0.6"]):
        assert dispatcher_sync.write_atomically(table, "\n".join(engines) + "\n")
        stamps.append(int(table.stat().st_mtime))
    assert stamps[0] < stamps[1] < stamps[2]
    assert not dispatcher_sync.write_atomically(table, "10.1.0.6\n")
    assert int(table.stat().st_mtime) == stamps[2]


def test_the_probe_reports_the_buffer_the_kernel_grants_a_pod_socket() -> None:
    # What OpenSIPS's maxbuffer asks for, against this machine's real net.core.rmem_max: the
    # kernel grants the smaller of the two (and reports twice that, which the probe halves).
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    wanted = 4 * 1024 * 1024
    assert dispatcher_sync.granted_receive_buffer(wanted) == min(wanted, rmem_max)
    # Asked for more than the node allows, it is capped: what the alert compares.
    assert dispatcher_sync.granted_receive_buffer(rmem_max + 65536) == rmem_max


def test_the_sidecar_metrics_ask_for_the_control_account(tmp_path: Path) -> None:
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {**settings(tmp_path), "udp_receive_buffer_bytes": 1 << 20, "metrics_port": port}
    server = dispatcher_sync.serve_metrics(config)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        for header in (None, "Basic " + base64.b64encode(b"acm-control:wrong").decode(),
                       "Basic " + base64.b64encode(b"someone:sidecar-test-password").decode(),
                       "Bearer sidecar-test-password"):
            request = urllib.request.Request(url, headers={"Authorization": header}
                                             if header else {})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 401, header
        account = base64.b64encode(b"acm-control:sidecar-test-password").decode()
        with urllib.request.urlopen(urllib.request.Request(
                url, headers={"Authorization": f"Basic {account}"}), timeout=5) as answer:
            text = answer.read().decode()
        values = dict(line.split() for line in text.splitlines() if not line.startswith("#"))
        assert values == {"acm_opensips_udp_receive_buffer_bytes": str(1 << 20),
                          "acm_opensips_udp_receive_buffer_wanted_bytes": str(1 << 20)}
        # A rotated password is read from its file at the next request.
        Path(config["mi_password_file"]).write_text("rotated-sidecar-password\n")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(urllib.request.Request(
                url, headers={"Authorization": f"Basic {account}"}), timeout=5)
    finally:
        server.shutdown()

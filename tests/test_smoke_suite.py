"""The smoke suite proven on real daemons on loopback: HAProxy running the rendered local
haproxy.cfg (addresses moved to loopback, DNS discovery replaced by a static OpenSIPS stand-in,
checks every 200 ms, maxconn lowered),
Redis for Dragonfly, PostgreSQL, and a compliance secrets directory. Healthy, every check
passes; broken one way at a time, exactly the relevant checks fail."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socketserver
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from components.datastores import acl_file
from components.haproxy import CONTROL_USER, USERLIST_FILE, control_userlist
from tests.conftest import rendering_of
from tests.jobs.servers import SUPERUSER_PASSWORD, free_port, postgres_server
from tests.sip.lab import basic_authorization

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# The control account of HAProxy (its userlist) and of OpenSIPS's MI (the stand-in's check).
CONTROL_PASSWORD = "smoke-test-control-password"
CONTROL_AUTHORIZATION = basic_authorization(CONTROL_PASSWORD)
SECRETS = ["database-password", "atrs-client-id", "sftp-private-key"]


def serve_in_background(server: socketserver.BaseServer) -> int:
    """Serve on a daemon thread; the loopback port the server bound."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


class OpenSipsStandIn(socketserver.ThreadingTCPServer):
    """Answers HAProxy's checks as OpenSIPS would: SIP OPTIONS (after a PROXY header) with
    200; the management backend's check only connects."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = self.request.recv(4096)
                if data.startswith(b"PROXY "):
                    data = data.split(b"\r\n", 1)[1] or self.request.recv(4096)
                if data.startswith(b"GET "):
                    self.request.sendall(
                        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                elif b"OPTIONS" in data:
                    self.request.sendall(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = serve_in_background(self)
        self.udp = UdpOptions()


class UdpOptions(socketserver.ThreadingUDPServer):
    """OpenSIPS's UDP socket, as far as OPTIONS go."""

    def __init__(self) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, reply = self.request
                if data.startswith(b"OPTIONS"):
                    reply.sendto(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                                 self.client_address)

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = serve_in_background(self)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def loopback_haproxy_config(rendered: str, stub_port: int, directory: Path
                            ) -> tuple[str, dict[int, int]]:
    ports: dict[int, int] = {}

    def rebind(match: re.Match[str]) -> str:
        ports[int(match[1])] = free_port()
        return f"bind 127.0.0.1:{ports[int(match[1])]}"

    text = re.sub(r"bind :(\d+)", rebind, rendered)
    text = text.replace("/var/run/haproxy/admin.sock", str(directory / "admin.sock"))
    text = re.sub(r"server-template (\S+) \d+ \S+ resolvers cluster_dns init-addr none",
                  rf"server \1-0 127.0.0.1:{stub_port}", text)
    text = re.sub(r" port \d+$", f" port {stub_port}", text, flags=re.MULTILINE)
    text = re.sub(r"inter 10s fastinter 1s downinter 1s rise 2 fall 3",
                  "inter 200ms fastinter 200ms downinter 200ms rise 1 fall 1", text)
    # Production's maxconn needs more file descriptors than a test process may open.
    text = re.sub(r"^(\s*)maxconn \d+$", r"\1maxconn 1000", text, flags=re.MULTILINE)
    return text, ports


class HttpStandIn(ThreadingHTTPServer):
    """OpenSIPS's HTTP MI (JSON-RPC `version`) and an ACM engine's /health, as far as the
    smoke checks go; `healthy = False` makes /health answer 503."""

    daemon_threads = True

    def __init__(self) -> None:
        self.healthy = True
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.headers.get("Authorization") != CONTROL_AUTHORIZATION:
                    self._answer(401, b"Unauthorized")
                    return
                call = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body = json.dumps({"jsonrpc": "2.0", "id": call["id"],
                                   "result": {"Server": "OpenSIPS (4.0.1 (x86_64/linux))"}})
                self._answer(200, body.encode())

            def do_GET(self) -> None:
                self._answer(200 if stand_in.healthy else 503, b'{"status": "ok"}')

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = serve_in_background(self)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# A process OpenSIPS's check can find: named `opensips` (the kernel takes a process's name
# from the file it executes) and holding its two SIP sockets.
SOCKET_HOLDER = """
import socket, sys, time
held = []
for kind, port in ((socket.SOCK_DGRAM, int(sys.argv[1])), (socket.SOCK_STREAM, int(sys.argv[2]))):
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", port))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    held.append(sock)
time.sleep(3600)
"""


class Environment:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "opensips").symlink_to(sys.executable)
        self.opensips_ports = (free_port(), free_port())
        self.opensips = subprocess.Popen(
            [directory / "opensips", "-c", SOCKET_HOLDER, *map(str, self.opensips_ports)])
        self.stub = OpenSipsStandIn()
        self.mi = HttpStandIn()
        self.engine = HttpStandIn()
        rendered = rendering_of("local").rendered_files()["haproxy.cfg"]
        config, self.ports = loopback_haproxy_config(rendered, self.stub.port, directory)
        self.haproxy_cfg = directory / "haproxy.cfg"
        self.haproxy_cfg.write_text(config)
        self.userlist = directory / USERLIST_FILE
        self.userlist.write_text(control_userlist(CONTROL_PASSWORD))
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(self.userlist),
                                         "-f", str(self.haproxy_cfg)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.redis_port = free_port()
        # As the platform's store runs: its default user off (components/datastores.py).
        self.redis_acl = directory / "users.acl"
        self.redis_acl.write_text(acl_file([]))
        self.redis = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
             "--save", "", "--appendonly", "no", "--aclfile", str(self.redis_acl)],
            stdout=subprocess.DEVNULL)
        self.secrets = directory / "secrets"
        self.secrets.mkdir()
        self.mi_password = directory / "mi-password"
        self.mi_password.write_text(CONTROL_PASSWORD + "\n")
        for name in SECRETS:
            (self.secrets / name).write_text("value\n")
            (self.secrets / name).chmod(0o440)

    def plan(self, database_address: str) -> Path:
        plan = {
            "environment": "local",
            "hosts": {role: "local://"
                      for role in ("haproxy", "compliance", "opensips", "opensips-mi")},
            "opensips": {"mi_url": f"http://127.0.0.1:{self.mi.port}/mi",
                         "mi_user": CONTROL_USER, "mi_password_file": str(self.mi_password),
                         "listen": [f"udp://127.0.0.1:{self.opensips_ports[0]}",
                                    f"tcp://127.0.0.1:{self.opensips_ports[1]}"]},
            "acm_engine_health_urls": [f"http://127.0.0.1:{self.engine.port}/health"],
            "haproxy": {
                "listen": [f"tcp://127.0.0.1:{self.ports[5060]}",
                           f"tcp://127.0.0.1:{self.ports[5061]}"],
                "stats_csv_url": f"http://127.0.0.1:{self.ports[8404]}/stats;csv",
                "stats_user": CONTROL_USER, "stats_password_env": "SMOKE_HAPROXY_PASSWORD",
                "backends": ["opensips_sip_tcp", "opensips_sip_tls", "opensips_mi"],
            },
            "front_door": {"sip_tcp_address": f"127.0.0.1:{self.ports[5060]}",
                           "sip_udp_address": f"127.0.0.1:{self.stub.udp.port}"},
            "dragonfly_address": f"127.0.0.1:{self.redis_port}",
            "database": {"address": database_address, "dbname": "postgres",
                         "user": "postgres", "password_env": "SMOKE_DB_PASSWORD"},
            "compliance": {"secrets_dir": str(self.secrets), "files": SECRETS},
            "config_files": [{
                "role": "haproxy", "path": str(self.haproxy_cfg),
                "sha256": hashlib.sha256(self.haproxy_cfg.read_bytes()).hexdigest()}],
        }
        path = self.directory / "plan.json"
        path.write_text(json.dumps(plan, indent=2))
        return path

    def stop(self) -> None:
        for process in (self.haproxy, self.redis, self.opensips):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        self.stub.shutdown()
        self.stub.server_close()
        self.stub.udp.stop()
        self.mi.stop()
        self.engine.stop()


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Environment, Path]]:
    environment = Environment(tmp_path_factory.mktemp("smoke"))
    with postgres_server() as database:
        try:
            plan = environment.plan(f"{database.host}:{database.port}")
            time.sleep(1.5)  # HAProxy's first health checks (every 200 ms)
            yield environment, plan
        finally:
            environment.stop()


def run_suite(plan: Path, directory: Path) -> dict[str, str]:
    """Run `pytest tests/smoke` as the platform team would; outcome by test name."""
    report = directory / f"junit-{time.monotonic_ns()}.xml"
    subprocess.run([sys.executable, "-m", "pytest", "tests/smoke", f"--smoke-plan={plan}",
                    f"--junitxml={report}", "-q", "-p", "no:cacheprovider"], cwd=ROOT,
                   env={**os.environ, "SMOKE_DB_PASSWORD": SUPERUSER_PASSWORD,
                        "SMOKE_HAPROXY_PASSWORD": CONTROL_PASSWORD},
                   capture_output=True, text=True, timeout=120)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        outcomes[case.attrib["name"]] = "failed" if failed else "skipped" if skipped else "passed"
    return outcomes


def failures(outcomes: dict[str, str]) -> set[str]:
    return {name for name, outcome in outcomes.items() if outcome == "failed"}


def test_haproxy_stats_and_metrics_ask_for_the_control_account(
        environment: tuple[Environment, Path]) -> None:
    """(Runs before the break-by-break test, which stops HAProxy at its end.) The rendered
    frontends on the real HAProxy: 401 without credentials or with a wrong
    password, 200 with the control account from the userlist file."""
    import urllib.error
    import urllib.request

    env, _ = environment
    wrong = basic_authorization("wrong-password")
    for port, path in ((8404, "/stats;csv"), (8406, "/metrics")):
        url = f"http://127.0.0.1:{env.ports[port]}{path}"
        for authorization in (None, wrong):
            request = urllib.request.Request(
                url, headers={"Authorization": authorization} if authorization else {})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 401, url
            assert "Basic" in refused.value.headers.get("WWW-Authenticate", ""), url
        request = urllib.request.Request(url, headers={"Authorization": CONTROL_AUTHORIZATION})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200, url
            assert answer.read(), url


def test_smoke_suite_tells_healthy_from_broken(environment: tuple[Environment, Path]) -> None:
    env, plan = environment
    healthy = run_suite(plan, env.directory)
    passed = {name for name, outcome in healthy.items() if outcome == "passed"}
    assert len(passed) == 12 and failures(healthy) == set(), healthy
    # This plan has no cluster: the Kubernetes-API checks say so instead of passing.
    assert {name for name, outcome in healthy.items() if outcome == "skipped"} == {
        name for name in healthy if name not in passed}
    assert "test_autoscalers_as_configured" not in passed

    # A changed config file: only the config identity check.
    original = env.haproxy_cfg.read_text()
    env.haproxy_cfg.write_text(original + "\n# hand edit\n")
    assert failures(run_suite(plan, env.directory)) == {
        f"test_config_file_is_the_rendered_one[haproxy:{env.haproxy_cfg}]"}
    env.haproxy_cfg.write_text(original)

    # An ACM engine reporting unhealthy.
    env.engine.healthy = False
    assert failures(run_suite(plan, env.directory)) == {"test_acm_engines_report_healthy"}
    env.engine.healthy = True

    # The OpenSIPS process gone.
    env.opensips.terminate()
    env.opensips.wait(timeout=10)
    assert failures(run_suite(plan, env.directory)) == {
        "test_opensips_runs_and_listens_on_its_sip_sockets"}
    env.opensips = subprocess.Popen(
        [env.directory / "opensips", "-c", SOCKET_HOLDER, *map(str, env.opensips_ports)])
    time.sleep(1)

    # OpenSIPS's MI not answering.
    env.mi.stop()
    assert failures(run_suite(plan, env.directory)) == {"test_opensips_mi_answers"}
    env.mi = HttpStandIn()
    plan.write_text(plan.read_text().replace(
        json.loads(plan.read_text())["opensips"]["mi_url"],
        f"http://127.0.0.1:{env.mi.port}/mi"))

    # The MI's password wrong where the check reads it: OpenSIPS's httpd says 401.
    env.mi_password.write_text("not-the-control-password\n")
    assert failures(run_suite(plan, env.directory)) == {"test_opensips_mi_answers"}
    env.mi_password.write_text(CONTROL_PASSWORD + "\n")

    # A secret readable by everyone.
    (env.secrets / SECRETS[1]).chmod(0o644)
    assert failures(run_suite(plan, env.directory)) == {
        "test_compliance_secrets_are_mounted_restrictively"}
    (env.secrets / SECRETS[1]).chmod(0o440)

    # Dragonfly down.
    env.redis.terminate()
    env.redis.wait(timeout=10)
    assert failures(run_suite(plan, env.directory)) == {
        "test_dragonfly_answers_and_refuses_strangers"}

    # OpenSIPS's UDP socket silent: only the UDP front door.
    env.stub.udp.stop()
    assert failures(run_suite(plan, env.directory)) == {
        "test_dragonfly_answers_and_refuses_strangers", "test_sip_options_over_the_udp_service"}

    # Every OpenSIPS behind HAProxy down: HAProxy runs and listens, but has no backend UP
    # and OPTIONS through it go unanswered.
    env.stub.shutdown()
    env.stub.server_close()
    time.sleep(1.5)
    assert failures(run_suite(plan, env.directory)) == {
        "test_dragonfly_answers_and_refuses_strangers", "test_sip_options_over_the_udp_service",
        "test_haproxy_sees_opensips_backends_up", "test_sip_options_through_haproxy_tcp"}

    # HAProxy itself stopped.
    env.haproxy.terminate()
    env.haproxy.wait(timeout=10)
    assert failures(run_suite(plan, env.directory)) == {
        "test_dragonfly_answers_and_refuses_strangers", "test_sip_options_over_the_udp_service",
        "test_haproxy_sees_opensips_backends_up", "test_sip_options_through_haproxy_tcp",
        "test_haproxy_process_runs", "test_haproxy_listens_on_its_sip_sockets"}


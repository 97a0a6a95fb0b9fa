"""The real OpenSIPS 4.0.1 on loopback: the binary scripts/opensips built, a stack's own config
rendered with its addresses moved to loopback, and the processes around it (Redis for the
breaker state, SIPp stand-ins for the engines and gateways).

There is no skip here: a missing binary is a failure that says to run the set-up.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from components.base.images import PinnedImages
from components.base.templating import render
from components.datastores import StoreUser, acl_file
from components.opensips.args import OpenSipsArgs
from components.opensips.config_files import (
    CACHEDB_CREDENTIALS_FILE,
    CONTROL_USER,
    DISPATCHER_COLUMNS,
    HTTPD_CREDENTIALS_FILE,
    STORE_COMMANDS,
    STORE_KEY_PATTERNS,
    STORE_USER,
    cachedb_credentials,
    httpd_credentials,
    load_balancer_table,
    opensips_values,
    version_table,
)
from components.opensips.settings import MediaGateway
from tests.conftest import REPO, rendering_of

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CALLER_ADDRESS = "127.0.0.2"
CLEAN_NUMBER = "+2348031234567"
FRAUD_NUMBER = "+2349000000001"


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: run ./scripts/setup"
    return found


@cache
def opensips_binary() -> str:
    answer = subprocess.run([REPO / "scripts" / "opensips", "bin"], capture_output=True,
                            text=True, check=False)
    assert answer.returncode == 0, f"OpenSIPS is not built: {answer.stderr.strip()}"
    return answer.stdout.strip()


@cache
def opensips_modules() -> str:
    answer = subprocess.run([REPO / "scripts" / "opensips", "modules"], capture_output=True,
                            text=True, check=True)
    return answer.stdout.strip() + "/"


def failing_engine(directory: Path, status: int) -> Path:
    """The failing engine scenario answering `status` (SIPp checks a status when it loads a
    scenario, so a placeholder cannot stand for it)."""
    path = directory / f"acm_engine_failing_{status}.xml"
    path.write_text((SCENARIOS / "acm_engine_failing.xml").read_text().replace(
        "SIP/2.0 STATUS", f"SIP/2.0 {status}"))
    return path


def sipp() -> str:
    return _tool("sipp")


def redis_server() -> str:
    return _tool("redis-server")


def place_call(port: int, number: str = CLEAN_NUMBER, scenario: str = "caller.xml",
               transport: str = "u1", host: str = "127.0.0.1",
               caller: str = CALLER_ADDRESS) -> subprocess.CompletedProcess[str]:
    """One call from the `caller` address to `host`:`port`, played by SIPp."""
    return subprocess.run(
        [sipp(), "-sf", str(SCENARIOS / scenario), "-s", number, "-i", caller,
         "-p", str(free_port()), "-t", transport, "-max_socket", "1000", "-m", "1",
         "-timeout", "20s",
         "-timeout_error", "-nostdin", f"{host}:{port}"],
        capture_output=True, text=True, timeout=60, check=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def listening_tcp_ports() -> set[int]:
    """Ports something listens on, without connecting (a bare connect to a TLS socket is a
    failed handshake in OpenSIPS's log)."""
    listed = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in listed.splitlines() if line}


# The httpd's account in every loopback OpenSIPS (the pods' comes from a Secret).
LAB_CONTROL_PASSWORD = "lab-control-password-0123"
# The lab Redis's users: OpenSIPS's (the platform's ACL rules) and the tests' observer.
LAB_STORE_PASSWORD = "lab-store-password-0123"
LAB_STORE_OBSERVER = "lab-observer"


def redis_cli(port: int, *command: str) -> str:
    """A command to the lab's Redis as its observer user (the default user is off)."""
    cli = redis_server().replace("redis-server", "redis-cli")
    return subprocess.run([cli, "-p", str(port), "--user", LAB_STORE_OBSERVER, "--pass",
                           LAB_STORE_PASSWORD, "--no-auth-warning", "--raw", *command],
                          capture_output=True, text=True, check=True).stdout.strip()


def basic_authorization(password: str, user: str = CONTROL_USER) -> str:
    """The Authorization header value of the platform's control accounts (OpenSIPS's httpd,
    HAProxy's stats and metrics: both users are `acm-control`)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def authorized(url: str, data: bytes | None = None, password: str = LAB_CONTROL_PASSWORD
               ) -> urllib.request.Request:
    """A request to a loopback OpenSIPS's httpd with its basic-auth account."""
    headers = {"Authorization": basic_authorization(password)}
    if data is not None:
        headers["Content-Type"] = "application/json"
    return urllib.request.Request(url, data=data, headers=headers)


@dataclass
class Ports:
    sip: int = field(default_factory=free_port)
    tls: int = field(default_factory=free_port)
    proxy: int = field(default_factory=free_port)
    proxy_tls: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    engine: int = field(default_factory=free_port)
    gateway: int = field(default_factory=free_port)
    redis: int = field(default_factory=free_port)


def dispatcher_table(engine_ports: list[int], backup_ports: list[int] | None = None) -> str:
    """The table dispatcher-sync writes: set 1 the active engines, set 2 the standby ones."""
    destinations = [(1, port) for port in engine_ports] + [(2, port) for port in
                                                           backup_ports or []]
    rows = [f"{index}:{setid}:sip\\:127.0.0.1\\:{port}::0:0:1:0::engine{index}"
            for index, (setid, port) in enumerate(destinations, start=1)]
    return "\n".join([DISPATCHER_COLUMNS, *rows]) + "\n"


def loopback_config(stack: str, directory: Path, ports: Ports, tls: tuple[Path, Path] | None,
                    engine_ports: list[int] | None = None,
                    backup_ports: list[int] | None = None,
                    gateway_ports: list[int] | None = None,
                    peer_cidrs: tuple[str, ...] = ("127.0.0.0/8",), http_address: str | None = None,
                    **settings: object) -> Path:
    """`stack`'s OpenSIPS config, as its component renders it, with every address on loopback,
    free ports, the built modules, and its tables and certificates in `directory`; keyword
    arguments replace OpenSIPS settings of the stack (e.g. dispatcher_probe_seconds=1)."""
    config = rendering_of(stack).config
    opensips = config.opensips.model_copy(update={
        "ports": config.opensips.ports.model_copy(update={
            "sip_udp": ports.sip, "sip_tcp": ports.sip, "sip_tls": ports.tls,
            "proxy_tcp": ports.proxy, "proxy_tls": ports.proxy_tls, "http": ports.http}),
        "media_gateways": [MediaGateway(host="127.0.0.1", port=port, capacity=1000)
                           for port in gateway_ports or [ports.gateway]],
        **settings,
    })
    features = config.features.model_copy(update={"sip_tls": tls is not None})
    args = OpenSipsArgs(
        images=PinnedImages(), namespace="lab", instance="lab", settings=opensips,
        features=features,
        priority_class="lab", node_topology_key="n", zone_topology_key="z",
        acm_engine_domain="engine.lab.invalid",
        acm_engine_backup_domain="standby.lab.invalid" if backup_ports else None,
        acm_engine_port=ports.engine, dragonfly_host="127.0.0.1", dragonfly_port=ports.redis,
        sidecar_image=config.opensips.dispatcher_sync_image,
        sip_peer_cidrs=list(peer_cidrs), tls_certificate="", tls_private_key="",
        control_password=LAB_CONTROL_PASSWORD, dragonfly_password=LAB_STORE_PASSWORD,
        digest_key="lab-secrets-digest-key-0123456789abcdef",
    )
    db_dir = directory / "db"
    db_dir.mkdir(exist_ok=True)
    (db_dir / "load_balancer").write_text(load_balancer_table(args))
    (db_dir / "version").write_text(version_table())
    engines = engine_ports if engine_ports is not None else [ports.engine]
    (db_dir / "dispatcher").write_text(dispatcher_table(engines, backup_ports))
    tls_dir = directory / "tls"
    if tls is not None:
        tls_dir.mkdir(exist_ok=True)
        shutil.copy(tls[0], tls_dir / "tls.crt")
        shutil.copy(tls[1], tls_dir / "tls.key")
    values = opensips_values(args, str(tls_dir), str(db_dir), str(directory),
                             listen_host="127.0.0.1", module_path=opensips_modules(),
                             http_listen=http_address)
    # Next to opensips.cfg, as the pod's projected volume puts the Secret's file.
    (directory / HTTPD_CREDENTIALS_FILE).write_text(httpd_credentials(LAB_CONTROL_PASSWORD))
    (directory / CACHEDB_CREDENTIALS_FILE).write_text(cachedb_credentials(args))
    path = directory / "opensips.cfg"
    path.write_text(render("opensips.cfg.j2", **values))
    return path


def loopback_haproxy(stack: str, frontends: dict[str, int], backends: dict[str, int],
                     check_port: int | None = None) -> str:
    """`stack`'s rendered haproxy.cfg on loopback: its global and defaults sections, the named
    frontends bound to 127.0.0.1 on their ports, the named backends with one server,
    127.0.0.1 on its port, keeping every option of the rendered server line (send-proxy, the
    checks), with `check_port` for a check the rendered line sends to another port; nothing
    else (no admin socket, no cluster DNS)."""
    rendered = rendering_of(stack).rendered_files()["haproxy.cfg"]
    sections: list[list[str]] = []
    for line in rendered.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
    kept: list[str] = []
    for section in sections:
        kind, _, name = section[0].partition(" ")
        if kind == "global":
            # No admin socket; at most 4,000 connections (the local stack's), which the test
            # process's open-file limit allows (prod's 20,000 does not, and HAProxy would exit).
            kept += [re.sub(r"maxconn \d+", f"maxconn {min(maxconn(line), 4000)}", line)
                     for line in section if "stats socket" not in line]
        elif kind == "defaults":
            kept += section
        elif kind == "frontend" and name in frontends:
            kept += [f"    bind 127.0.0.1:{frontends[name]}" if line.strip().startswith("bind ")
                     else line for line in section]
        elif kind == "backend" and name in backends:
            for line in section:
                if line.strip().startswith("server-template "):
                    options = line.split(" init-addr none", 1)[1]
                    if check_port is not None:
                        options = re.sub(r" port \d+", f" port {check_port}", options)
                    line = f"    server opensips1 127.0.0.1:{backends[name]}{options}"
                kept.append(line)
    missing = (set(frontends) | set(backends)) - {s[0].partition(" ")[2] for s in sections}
    assert not missing, f"{stack}'s haproxy.cfg has no section {sorted(missing)}"
    return "\n".join(kept) + "\n"


def maxconn(line: str) -> int:
    found = re.search(r"maxconn (\d+)", line)
    return int(found.group(1)) if found else 0


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`opensips -C`: the full check, function parameters included (`-c` skips those)."""
    return subprocess.run([opensips_binary(), "-C", "-f", str(path)], capture_output=True,
                          text=True, check=False, cwd=path.parent, timeout=30)


@dataclass
class Processes:
    log: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: list[str],
              cpus: str | None = None) -> subprocess.Popen[bytes]:
        """`cpus` (taskset's list, e.g. "1") pins the process, for benchmarks that give the
        proxy and its load generators cores of their own."""
        if cpus is not None:
            command = [_tool("taskset"), "-c", cpus, *command]
        with self.log.open("ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        self.running[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.running.pop(name)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def start_redis(self, port: int, cpus: str | None = None) -> None:
        """Redis as the breaker store runs: the platform's ACL users (OpenSIPS's, as its room
        renders it), the default user off, and the lab's own observer for the tests' reads."""
        users = self.log.with_name(f"redis-{port}.acl")
        users.write_text(acl_file([
            StoreUser(STORE_USER, LAB_STORE_PASSWORD, STORE_KEY_PATTERNS, STORE_COMMANDS),
            StoreUser(LAB_STORE_OBSERVER, LAB_STORE_PASSWORD, ("*",), ("+@all",))]))
        self.start("redis", [redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--aclfile", str(users)], cpus)
        wait_for_port(port)

    def start_stand_ins(self, ports: Ports, messages: Path | None = None) -> None:
        """Redis (the breaker's store) and the SIPp stand-ins for the ACM engine and the media
        gateway on their ports of `ports`; `messages`: a folder for each one's message trace
        (`engine-messages.log`, `gateway-messages.log`)."""
        self.start_redis(ports.redis)
        for name, scenario in (("engine", "acm_engine.xml"), ("gateway", "media_gateway.xml")):
            trace = (["-trace_msg", "-message_file", str(messages / f"{name}-messages.log")]
                     if messages is not None else [])
            self.start(name, [sipp(), "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
                              "-p", str(getattr(ports, name)), "-nostdin", *trace])

    def start_opensips(self, name: str, config: Path, memory_mib: tuple[int, int] | None = None,
                       cpus: str | None = None) -> subprocess.Popen[bytes]:
        sizes = ["-m", str(memory_mib[0]), "-M", str(memory_mib[1])] if memory_mib else []
        return self.start(name, [opensips_binary(), "-F", "-f", str(config), *sizes], cpus)


def mi(http_port: int, method: str, params: object = None) -> object:
    """One JSON-RPC call to OpenSIPS's HTTP MI on loopback."""
    import json

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       **({"params": params} if params is not None else {})}).encode()
    with urllib.request.urlopen(authorized(f"http://127.0.0.1:{http_port}/mi", body),
                                timeout=5) as answer:
        return json.loads(answer.read())["result"]


def statistic(http_port: int, name: str) -> int:
    """A statistic as the prometheus module exports it (`opensips_<name>`)."""
    with urllib.request.urlopen(authorized(f"http://127.0.0.1:{http_port}/metrics"),
                                timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(f"opensips_{name} "):
                return int(float(line.split()[1]))
    raise KeyError(name)

"""Everything OpenSIPS reads from disk, prepared from typed config and rendered from templates.

Decisions live here (socket lists, breaker keys, table rows); `templates/opensips.cfg.j2` only
prints them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.base.templating import render
from components.opensips.args import OpenSipsArgs
from components.opensips.settings import UDP_RECEIVE_BUFFER_BYTES

SIDECAR_SCRIPT = Path(__file__).resolve().parent / "dispatcher_sync.py"
ACTIVE_SET = 1
BACKUP_SET = 2
GATEWAY_GROUP = 1
# TLS 1.3 suites all use ephemeral (EC)DHE key exchange and are not set through
# `ciphers_list` (an OpenSSL cipher list for TLS 1.2 and below: given 1.3 suite names, OpenSSL
# refuses it and the TLS domain fails). The curve pins the key exchange to ECDHE.
TLS_CURVE = "prime256v1"
# Where the OpenSIPS image (opensips/Dockerfile, Debian packages) keeps its modules.
IMAGE_MODULE_PATH = "/usr/lib/x86_64-linux-gnu/opensips/modules/"
DB_TEXT_VERSIONS = {"dispatcher": 9, "load_balancer": 3}
DISPATCHER_COLUMNS = (
    "id(int,auto) setid(int) destination(string) socket(string,null) state(int) "
    "probe_mode(int) weight(string) priority(int) attrs(string,null) description(string,null)"
)
# The db_text layouts of OpenSIPS 4.0.1 (scripts/dbtext/opensips/ in its source); a missing
# column fails the module's init and OpenSIPS exits.
LOAD_BALANCER_COLUMNS = (
    "id(int,auto) group_id(int) dst_uri(string) resources(string) probe_mode(int) "
    "attrs(string,null) description(string,null)"
)
# Statistics OpenSIPS exports to Prometheus (with the module's "opensips_" prefix).
STATISTICS = {
    "calls_total": "acm_calls_total",
    "fraud_detected": "acm_fraud_detected_total",
    "breaker_open": "acm_breaker_open",
    "failover_events": "acm_failover_events_total",
    "unscreened_calls": "acm_unscreened_calls_total",
    "shed_calls": "acm_shed_calls_total",
}
PROMETHEUS_PREFIX = "opensips"
# What the proxy tells the engine about the call's true source (the engine's copy only). Every
# header under the prefix is the proxy's alone: the ones a caller sends are removed on entry,
# so that a caller cannot choose the address it is screened as.
EVIDENCE_HEADER_PREFIX = "X-ACM-"
EVIDENCE_HEADERS = {
    "caller_ip": f"{EVIDENCE_HEADER_PREFIX}Caller-IP",
    "caller_port": f"{EVIDENCE_HEADER_PREFIX}Caller-Port",
}
# After the breaker store did not answer, calls skip it (breaker read as CLOSED) this long.
BREAKER_STORE_RETRY_SECONDS = 2
# The httpd's basic-auth account (MI and metrics). Its credentials live in a Secret that is
# mounted next to opensips.cfg, which includes it by this relative name (include_file paths
# are relative to the including file's folder): the cfg text itself never holds them.
CONTROL_USER = "acm-control"
CONTROL_REALM = "ACM OpenSIPS"
HTTPD_CREDENTIALS_FILE = "httpd-auth.cfg"
CACHEDB_CREDENTIALS_FILE = "cachedb-auth.cfg"
# OpenSIPS's user in the breaker store, and what its script does there (templates/opensips.cfg.j2):
# its keys, and the commands cachedb_redis sends for cache_fetch, cache_store, cache_add and
# cache_remove (GET, SET, INCRBY/DECRBY with EXPIRE, DEL) and on connecting (PING, SELECT).
STORE_USER = "opensips"
STORE_KEY_PATTERNS = ("acm:breaker:*", "acm:gateway_failures:*")
STORE_COMMANDS = ("+get", "+set", "+incrby", "+decrby", "+del", "+expire", "+ping", "+select")
SIDECAR_PASSWORD_FILE = "/opt/dispatcher-sync/mi-password"
# The sidecar's /metrics (the receive buffer OpenSIPS's sockets get), with the control account.
SIDECAR_METRICS_PORT = 9470
# The listen queue of OpenSIPS's TCP and TLS sockets. OpenSIPS's default is 10: with 64 callers
# connecting through HAProxy at once, the kernel dropped the connections past it, and 54 of
# 5,000 calls were closed by the server before a byte was read (HAProxy `SD`, connect 1 s).
# The kernel caps it at the node's net.core.somaxconn (4096 by default since Linux 5.4).
TCP_SOCKET_BACKLOG = 4096


def exported_metric(statistic: str) -> str:
    """The Prometheus metric name under which OpenSIPS exports one of `STATISTICS`."""
    return f"{PROMETHEUS_PREFIX}_{STATISTICS[statistic]}"


@dataclass(frozen=True)
class OpenSipsFiles:
    config: dict[str, str]
    sidecar: dict[str, str]
    static_tables: list[str]


def _db_text_table(columns: str, rows: list[str]) -> str:
    return "\n".join([columns, *rows]) + "\n"


def _escape(value: str) -> str:
    # db_text separates columns with ':' and escapes it, and the backslash, with '\'.
    return value.replace("\\", "\\\\").replace(":", "\\:")


def load_balancer_table(args: OpenSipsArgs) -> str:
    rows = []
    for index, gateway in enumerate(args.settings.media_gateways, start=1):
        uri = _escape(f"sip:{gateway.host}:{gateway.port}")
        # probe_mode 1: a disabled gateway is probed and comes back when it answers again.
        rows.append(f"{index}:{GATEWAY_GROUP}:{uri}:channels={gateway.capacity}:1::"
                    f"{_escape(gateway.host)}")
    return _db_text_table(LOAD_BALANCER_COLUMNS, rows)


def version_table() -> str:
    rows = [f"{table}:{version}" for table, version in sorted(DB_TEXT_VERSIONS.items())]
    return _db_text_table("table_name(string) table_version(int)", rows)


def opensips_values(
    args: OpenSipsArgs, tls_dir: str, db_dir: str, run_dir: str, listen_host: str = "*",
    module_path: str = IMAGE_MODULE_PATH, http_listen: str | None = None,
) -> dict[str, Any]:
    """Template values; `listen_host` is `*` in a pod, loopback in the SIP test harness, and
    `module_path` the image's module folder there, the built one's in the tests."""
    settings = args.settings
    ports = settings.ports
    breaker = settings.circuit_breaker
    sockets = [
        {"proto": "udp", "port": ports.sip_udp, "options": ""},
        {"proto": "tcp", "port": ports.sip_tcp, "options": ""},
        # Only HAProxy reaches these (NetworkPolicy); they believe the PROXY header's address.
        {"proto": "tcp", "port": ports.proxy_tcp, "options": " allow_proxy_protocol"},
    ]
    if args.features.sip_tls:
        sockets.insert(2, {"proto": "tls", "port": ports.sip_tls, "options": ""})
        sockets.append({"proto": "tls", "port": ports.proxy_tls,
                        "options": " allow_proxy_protocol"})
    return {
        "sockets": [{**socket, "host": listen_host} for socket in sockets],
        "module_path": module_path,
        # Prometheus and HAProxy's MI backend reach httpd over the pod address; the
        # NetworkPolicy lets only those two in (stacks/platform.py::traffic_flows).
        "http_listen": http_listen or listen_host,
        "tls_enabled": args.features.sip_tls,
        "udp_workers": settings.udp_workers,
        "max_udp_workers": settings.max_udp_workers,
        # OpenSIPS refuses a profile whose floor equals its ceiling: fixed workers then.
        "udp_autoscale": settings.max_udp_workers > settings.udp_workers,
        "tcp_workers": settings.tcp_workers,
        "tcp_threads": settings.tcp_threads,
        "tcp_socket_backlog": TCP_SOCKET_BACKLOG,
        "http_port": ports.http,
        "httpd_credentials_file": HTTPD_CREDENTIALS_FILE,
        "db_url": f"text://{db_dir}",
        "run_dir": run_dir,
        "tls_certificate": f"{tls_dir}/tls.crt",
        "tls_private_key": f"{tls_dir}/tls.key",
        "tls_curve": TLS_CURVE,
        "cachedb_credentials_file": CACHEDB_CREDENTIALS_FILE,
        "dispatcher_probe_seconds": settings.dispatcher_probe_seconds,
        "gateway_probe_seconds": settings.gateway_probe_seconds,
        "gateway_failures_before_inactive": settings.gateway_failures_before_inactive,
        # Failures count as consecutive while no success and no probe round came between.
        "gateway_failure_window_seconds": 2 * settings.gateway_probe_seconds,
        "active_set": ACTIVE_SET,
        "backup_set": BACKUP_SET if args.acm_engine_backup_domain else None,
        "gateway_group": GATEWAY_GROUP,
        "breaker_failures": breaker.failure_threshold,
        "breaker_open_seconds": breaker.open_seconds,
        "breaker_half_open_percent": breaker.half_open_percent,
        # Failures older than this no longer count towards opening the breaker.
        "breaker_failure_window_seconds": max(60, 2 * breaker.open_seconds),
        "breaker_store_retry_seconds": BREAKER_STORE_RETRY_SECONDS,
        "shed_calls_per_slot": settings.load_shedding.calls_per_slot,
        # One pipe per slot, named by the slot; unslotted, one pipe whose counter ratelimit's
        # 1-second timer resets (a pipe named by the second would also be reset mid-second by
        # that timer, and admit up to twice its limit).
        "shed_slot_microseconds": (1_000_000 // settings.load_shedding.slots_per_second
                                   if settings.load_shedding.slots_per_second > 1 else None),
        "udp_receive_buffer_bytes": UDP_RECEIVE_BUFFER_BYTES,
        "shed_retry_after_seconds": settings.load_shedding.retry_after_seconds,
        "flood_limit": settings.flood_protection.requests_per_second,
        "trunk_flood_limit": settings.flood_protection.trunk_requests_per_second,
        "trunk_cidrs": list(args.sip_peer_cidrs),
        "statistics": STATISTICS,
        "prometheus_prefix": PROMETHEUS_PREFIX,
        "evidence_headers": EVIDENCE_HEADERS,
        # remove_hf_re matches names in any case (REG_ICASE); remove_hf_glob, as built, only
        # in the case written (no FNM_CASEFOLD): `x-acm-caller-ip` passed it to the engine.
        "evidence_header_pattern": f"^{EVIDENCE_HEADER_PREFIX}",
    }


def httpd_credentials(password: str) -> str:
    """The include file with the httpd's basic-auth account (the Secret's content)."""
    return render("opensips-httpd-auth.cfg.j2", realm=CONTROL_REALM, username=CONTROL_USER,
                  password=password)


def cachedb_credentials(args: OpenSipsArgs) -> str:
    """The include file with the breaker store's URL and OpenSIPS's account in it (the Secret's
    content): the password never appears in opensips.cfg."""
    return render("opensips-cachedb-auth.cfg.j2",
                  url=f"redis:breaker://{STORE_USER}:{args.dragonfly_password}@"
                      f"{args.dragonfly_host}:{args.dragonfly_port}/")


def sidecar_settings(args: OpenSipsArgs, db_dir: str) -> dict[str, Any]:
    sets = [{"setid": ACTIVE_SET, "domain": args.acm_engine_domain}]
    if args.acm_engine_backup_domain:
        sets.append({"setid": BACKUP_SET, "domain": args.acm_engine_backup_domain})
    return {
        "sets": sets,
        "port": args.acm_engine_port,
        "table_path": f"{db_dir}/dispatcher",
        "static_tables_dir": "/opt/dispatcher-sync/tables",
        "db_dir": db_dir,
        "columns": DISPATCHER_COLUMNS,
        "mi_url": f"http://127.0.0.1:{args.settings.ports.http}/mi",
        "mi_user": CONTROL_USER,
        "mi_password_file": SIDECAR_PASSWORD_FILE,
        "interval_seconds": args.settings.dispatcher_probe_seconds,
        "udp_receive_buffer_bytes": UDP_RECEIVE_BUFFER_BYTES,
        "metrics_port": SIDECAR_METRICS_PORT,
    }


def opensips_files(args: OpenSipsArgs, tls_dir: str, db_dir: str, run_dir: str) -> OpenSipsFiles:
    config = {
        "opensips.cfg": render("opensips.cfg.j2", **opensips_values(args, tls_dir, db_dir,
                                                                     run_dir)),
        "load_balancer": load_balancer_table(args),
        "version": version_table(),
    }
    sidecar = {
        "dispatcher_sync.py": SIDECAR_SCRIPT.read_text(),
        "settings.json": json.dumps(sidecar_settings(args, db_dir), indent=2, sort_keys=True)
        + "\n",
    }
    return OpenSipsFiles(config=config, sidecar=sidecar,
                         static_tables=["load_balancer", "version"])

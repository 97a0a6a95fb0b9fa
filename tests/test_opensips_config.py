"""Every rendered opensips.cfg loads what the call path needs and wires it as the topology
spec says; the real OpenSIPS 4.0.1 judges the names (tests/sip/test_opensips_program.py)."""

from __future__ import annotations

import re

from stacks.render import Rendering
from tests.conftest import render_modified

REQUIRED_MODULES = {"proto_udp", "proto_tcp", "dispatcher", "load_balancer", "cachedb_redis",
                    "dialog", "ratelimit", "httpd", "mi_http", "prometheus", "tm", "rr", "maxfwd",
                    "sipmsgops", "statistics"}


def opensips_cfg(rendering: Rendering) -> str:
    return rendering.rendered_files()["opensips.cfg"]


def loaded_modules(config: str) -> set[str]:
    return set(re.findall(r'^loadmodule "([a-z0-9_]+)\.so"', config, re.M))


def test_every_stack_loads_the_modules_the_call_path_needs(any_stack: Rendering) -> None:
    # Intent, not names: OpenSIPS happily starts without a module the platform relies on
    # (whether it accepts the names is for the real binary: tests/sip/test_opensips_program.py).
    assert loaded_modules(opensips_cfg(any_stack)) >= REQUIRED_MODULES


def test_tls_stacks_load_the_whole_tls_stack(prod: Rendering) -> None:
    assert {"proto_tls", "tls_mgm", "tls_openssl"} <= loaded_modules(opensips_cfg(prod))


def test_call_path_behaviour_is_configured(prod: Rendering) -> None:
    config = opensips_cfg(prod)
    settings = prod.config.opensips
    # Dispatcher: round robin (algorithm 4), probing every 5 s, failover on 5xx/408/6xx.
    assert re.search(r"ds_select_dst\(1, 4, \"f\"\)", config)
    assert f'modparam("dispatcher", "ds_ping_interval", {settings.dispatcher_probe_seconds})' \
        in config
    assert 't_check_status("5[0-9][0-9]|408|6[0-9][0-9]")' in config
    # Gateways: load_balancer, probed every 30 s, inactive after 2 failures.
    assert 'lb_start(1, "channels")' in config
    assert f'modparam("load_balancer", "probing_interval", {settings.gateway_probe_seconds})' \
        in config
    assert re.search(rf">= {settings.gateway_failures_before_inactive}\)\n\s+lb_disable_dst\(\);",
                     config)
    # Breaker: shared in Dragonfly, opens after 5 failures for 30 s, 10 % trial calls.
    breaker = settings.circuit_breaker
    # The store's URL, with OpenSIPS's ACL user, comes from the Secret's include file.
    assert 'include_file "cachedb-auth.cfg"' in config and "redis:breaker://" not in config
    assert (f"redis:breaker://opensips:<secret acm-platform:dragonflyOpensipsPassword>@dragonfly."
            f"{prod.config.namespace}.svc.cluster.local:6379/") in \
        prod.rendered_files()["cachedb-auth.cfg"]
    assert f">= {breaker.failure_threshold})\n            route(breaker_open);" in config
    assert f'"acm:breaker:open", "1", {breaker.open_seconds});' in config
    assert f'modparam("cfgutils", "initial_probability", {breaker.half_open_percent})' in config
    # PROXY protocol only on the dedicated sockets.
    proxy_sockets = re.findall(r"^socket = (\S+) allow_proxy_protocol$", config, re.M)
    assert proxy_sockets == [f"tcp:*:{settings.ports.proxy_tcp}",
                             f"tls:*:{settings.ports.proxy_tls}"]
    assert 'modparam("tls_mgm", "tls_method", "[sip]TLSv1_3")' in config


# How the cfg names routes: route(x) calls a request route; the tm module arms the others.
ROUTE_REFERENCES = {
    "route": re.compile(r"\broute\(([A-Za-z0-9_]+)\)"),
    "failure_route": re.compile(r'\bt_on_failure\("([A-Za-z0-9_]+)"\)'),
    "onreply_route": re.compile(r'\bt_on_reply\("([A-Za-z0-9_]+)"\)'),
    "branch_route": re.compile(r'\bt_on_branch\("([A-Za-z0-9_]+)"\)'),
}


def undefined_routes(config: str) -> list[str]:
    """Routes the cfg refers to but never defines. OpenSIPS 4.0.1 accepts such a reference
    silently (`opensips -C` passes, the process starts) and runs an empty route: a
    failure_route misspelt in t_on_failure would make gateway failover quietly do nothing.
    The one check of the retired name list that the binary does not make."""
    missing = []
    for kind, reference in ROUTE_REFERENCES.items():
        defined = set(re.findall(rf"^{kind}\[([A-Za-z0-9_]+)\]", config, re.M))
        missing += [f"{kind}[{name}]" for name in sorted(set(reference.findall(config)))
                    if name not in defined]
    return missing


def test_every_route_the_config_refers_to_is_defined(any_stack: Rendering) -> None:
    config = opensips_cfg(any_stack)
    assert undefined_routes(config) == []
    assert len(ROUTE_REFERENCES["failure_route"].findall(config)) >= 2  # it did find some


def test_a_misspelt_failure_route_is_caught(prod: Rendering) -> None:
    broken = opensips_cfg(prod).replace('t_on_failure("gateway_failover");',
                                        't_on_failure("gw_failover");', 1)
    assert undefined_routes(broken) == ["failure_route[gw_failover]"]


def test_tcp_io_threads_are_set_never_left_to_the_nodes_cpu_count(any_stack: Rendering) -> None:
    # Unset, OpenSIPS starts one I/O thread per CPU of the node, not of the pod.
    config = opensips_cfg(any_stack)
    assert re.search(rf"^tcp_threads = {any_stack.config.opensips.tcp_threads}$", config, re.M)
    assert any_stack.config.opensips.tcp_threads <= any_stack.config.opensips.limit_cores
    # The listen queue is set too: OpenSIPS's default of 10 dropped connections in a burst.
    assert re.search(r"^tcp_socket_backlog = 4096$", config, re.M)


def test_tcp_io_threads_follow_the_setting() -> None:
    rendering = render_modified("prod", "opensips.tcpIoThreads", 2)
    assert re.search(r"^tcp_threads = 2$", opensips_cfg(rendering), re.M)


def test_the_evidence_headers_are_the_proxys_alone(any_stack: Rendering) -> None:
    config = opensips_cfg(any_stack)
    main_route = config.split("\nroute {", 1)[1].split("\n}\n", 1)[0]
    # Removed from every request on entry (any case: remove_hf_re compiles with REG_ICASE),
    # before anything reads or adds them; the engine's copy then gets the proxy's own.
    assert main_route.index('remove_hf_re("^X-ACM-");') < main_route.index("has_totag()")
    engine_branch = config.split("branch_route[to_engine] {", 1)[1].split("\n}", 1)[0]
    assert 'append_hf("X-ACM-Caller-IP: $avp(caller_ip)\\r\\n");' in engine_branch
    assert 'append_hf("X-ACM-Caller-Port: $avp(caller_port)\\r\\n");' in engine_branch

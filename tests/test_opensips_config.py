"""Every rendered opensips.cfg uses only names OpenSIPS 4.0.1 accepts, and does the call path."""

from __future__ import annotations

import re

import pytest

from stacks.render import Rendering
from tests.opensips_names import REFERENCE, SHARED_REFERENCE, check_config

REQUIRED_MODULES = {"proto_udp", "proto_tcp", "dispatcher", "load_balancer", "cachedb_redis",
                    "dialog", "ratelimit", "httpd", "mi_http", "prometheus", "tm", "rr", "maxfwd",
                    "sipmsgops", "statistics"}


def opensips_cfg(rendering: Rendering) -> str:
    return rendering.rendered_files()["opensips.cfg"]


def test_every_stack_passes_the_name_check(any_stack: Rendering) -> None:
    findings = check_config(opensips_cfg(any_stack))
    assert findings.problems == []
    assert set(findings.modules) >= REQUIRED_MODULES
    assert len(findings.calls) > 40  # the checker really walked the routes


def test_tls_stacks_load_the_whole_tls_stack(prod: Rendering) -> None:
    modules = set(check_config(opensips_cfg(prod)).modules)
    assert {"proto_tls", "tls_mgm", "tls_openssl"} <= modules


BROKEN = [
    ('modparam("dispatcher", "ds_ping_interval", 5)',
     'modparam("dispatcher", "ds_ping_intervall", 5)', "has no parameter 'ds_ping_intervall'"),
    ('modparam("dispatcher", "ds_ping_interval", 5)',
     'modparam("dispatcher", "ds_ping_interval", "5")', "takes an integer"),
    ('loadmodule "ratelimit.so"', 'loadmodule "sanity.so"', "unknown module 'sanity'"),
    ('!rl_check("caller:$avp(caller_ip)", $var(flood_limit), "TAILDROP")',
     '!rl_check("caller:$avp(caller_ip)")', "rl_check() takes 2..3"),
    ("udp_workers =", "children =", "unknown core keyword 'children'"),
    ('record_route();', 'record_route();\n    t_set_fr(2);', "t_set_fr() is not exported"),
    ("allow_proxy_protocol", "accept_proxy", "unknown socket option 'accept_proxy'"),
    ('t_on_failure("gateway_failover");', 't_on_failure("gw_failover");',
     "names an undefined failure_route"),
    ('send_reply(603, "Declined");', 'sl_send_reply(603, "Declined");',
     "sl_send_reply() is not allowed in ['failure'] routes"),
    ('loadmodule "load_balancer.so"', '', "not loaded"),
]


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN, ids=[b[2] for b in BROKEN])
def test_the_checker_catches_what_opensips_would_refuse(
    prod: Rendering, old: str, new: str, expected: str
) -> None:
    original = opensips_cfg(prod)
    assert old in original, old
    broken = original.replace(old, new, 1)
    problems = check_config(broken).problems
    assert any(expected in problem for problem in problems), problems


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
    assert f">= {settings.gateway_failures_before_inactive})\n                lb_disable_dst();" \
        in config
    # Breaker: shared in Dragonfly, opens after 5 failures for 30 s, 10 % trial calls.
    breaker = settings.circuit_breaker
    assert f"redis:breaker://dragonfly.{prod.config.namespace}.svc.cluster.local:6379/" in config
    assert f">= {breaker.failure_threshold})\n            route(breaker_open);" in config
    assert f'"acm:breaker:open", "1", {breaker.open_seconds});' in config
    assert f'modparam("cfgutils", "initial_probability", {breaker.half_open_percent})' in config
    # PROXY protocol only on the dedicated sockets.
    proxy_sockets = re.findall(r"^socket = (\S+) allow_proxy_protocol$", config, re.M)
    assert proxy_sockets == [f"tcp:*:{settings.ports.proxy_tcp}",
                             f"tls:*:{settings.ports.proxy_tls}"]
    assert 'modparam("tls_mgm", "tls_method", "[sip]TLSv1_3")' in config


def test_vendored_reference_matches_the_shared_one() -> None:
    if not SHARED_REFERENCE.exists():
        pytest.skip(f"no shared reference at {SHARED_REFERENCE}")
    assert REFERENCE.read_bytes() == SHARED_REFERENCE.read_bytes()

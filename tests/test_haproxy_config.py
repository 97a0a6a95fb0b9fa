"""Every stack's rendered haproxy.cfg passes the real `haproxy -c` (Debian's HAProxy 2.6)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stacks.render import Rendering

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def haproxy_check(config: str, directory: Path) -> subprocess.CompletedProcess[str]:
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed: run scripts/setup (Debian package haproxy)")
    path = directory / "haproxy.cfg"
    path.write_text(config)
    return subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True,
                          check=False, timeout=60)


def test_every_stack_passes_haproxy_check(any_stack: Rendering, tmp_path: Path) -> None:
    result = haproxy_check(any_stack.rendered_files()["haproxy.cfg"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


def test_haproxy_check_rejects_a_broken_config(prod: Rendering, tmp_path: Path) -> None:
    broken = prod.rendered_files()["haproxy.cfg"].replace("balance leastconn",
                                                          "balance least_connections", 1)
    result = haproxy_check(broken, tmp_path)
    assert result.returncode != 0


def test_backends_balance_and_check_opensips_as_specified(prod: Rendering) -> None:
    config = prod.rendered_files()["haproxy.cfg"]
    check = prod.config.haproxy.health_check
    for backend in ("opensips_sip_tcp", "opensips_sip_tls"):
        section = config.split(f"\nbackend {backend}\n", 1)[1].split("\nbackend ", 1)[0]
        assert "balance leastconn" in section
        assert "stick on src" in section
        assert 'tcp-check send "OPTIONS sip:opensips SIP/2.0\\r\\n' in section
        assert 'tcp-check expect rstring "^SIP/2\\.0 200"' in section
        server = re.search(r"^\s*server-template .*$", section, re.M)
        assert server is not None
        line = server.group()
        assert f"inter {check.inter_seconds}s rise {check.rise} fall {check.fall}" in line
        assert " send-proxy " in line and "check-send-proxy" in line
        assert "_proxy-" in line and "resolvers cluster_dns" in line
    # No UDP bind or server anywhere: HAProxy cannot balance it.
    directives = [line.split("#", 1)[0] for line in config.splitlines()]
    assert not [line for line in directives if "udp" in line.lower()]


def test_server_slots_cover_the_hpa_maximum(prod: Rendering) -> None:
    config = prod.rendered_files()["haproxy.cfg"]
    slots = {int(n) for n in re.findall(r"server-template opensips (\d+) ", config)}
    assert slots == {prod.config.opensips.autoscaling.max_replicas}

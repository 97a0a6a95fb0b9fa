"""Every stack's rendered haproxy.cfg passes the real `haproxy -c` (Debian's HAProxy 2.6)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.haproxy import USERLIST_FILE, control_userlist
from stacks.render import Rendering

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def config_files(config: str, directory: Path) -> list[str]:
    """`-f` arguments as the pod gives them: the control userlist (here with a test password),
    then haproxy.cfg."""
    userlist = directory / USERLIST_FILE
    userlist.write_text(control_userlist("haproxy-test-control-password"))
    path = directory / "haproxy.cfg"
    path.write_text(config)
    return ["-f", str(userlist), "-f", str(path)]


def haproxy_check(config: str, directory: Path) -> subprocess.CompletedProcess[str]:
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed: run scripts/setup (Debian package haproxy)")
    return subprocess.run([HAPROXY, "-c", *config_files(config, directory)],
                          capture_output=True, text=True, check=False, timeout=60)


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
        assert (f"inter {check.inter_seconds}s fastinter 1s downinter 1s rise {check.rise} "
                f"fall {check.fall}") in line
        # A refused connection marks the server down at once, and the call goes elsewhere.
        assert "observe layer4 error-limit 1 on-error mark-down" in line
        assert " send-proxy " in line and "check-send-proxy" in line
        assert "_proxy-" in line and "resolvers cluster_dns" in line
    assert "option redispatch" in config and "retries 2" in config
    # No UDP bind or server anywhere: HAProxy cannot balance it.
    directives = [line.split("#", 1)[0] for line in config.splitlines()]
    assert not [line for line in directives if "udp" in line.lower()]


def test_server_slots_cover_the_hpa_maximum(prod: Rendering) -> None:
    config = prod.rendered_files()["haproxy.cfg"]
    slots = {int(n) for n in re.findall(r"server-template opensips (\d+) ", config)}
    assert slots == {prod.config.opensips.autoscaling.max_replicas}


def _on_loopback(config: str) -> str:
    """The rendered config with every bind on a free loopback port and no admin socket."""
    from tests.sip.lab import free_port

    moved = re.sub(r"bind :\d+", lambda _: f"bind 127.0.0.1:{free_port()}", config)
    return moved.replace("stats socket", "# stats socket")


def _run_under_open_files_limit(config: str, limit: int, directory: Path
                                ) -> subprocess.CompletedProcess[str] | None:
    """Start HAProxy under `prlimit --nofile=limit`; None if it was still up after 2 s."""
    process = subprocess.Popen(["prlimit", f"--nofile={limit}:{limit}", HAPROXY, "-db",
                                *config_files(config, directory)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.communicate(timeout=10)
        return None
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


def test_haproxy_starts_under_the_open_files_limit_the_stack_states(
        local: Rendering, tmp_path: Path) -> None:
    settings = local.config.haproxy
    config = _on_loopback(local.rendered_files()["haproxy.cfg"])
    assert f"maxconn {settings.max_connections}" in config
    assert _run_under_open_files_limit(config, settings.open_files_limit, tmp_path) is None
    # Below what maxconn needs, HAProxy exits at start-up: what the validation prevents.
    ended = _run_under_open_files_limit(config, 2 * settings.max_connections - 1, tmp_path)
    assert ended is not None and "Cannot raise FD limit" in ended.stdout, ended


def test_the_stats_and_metrics_frontends_need_the_userlist(prod: Rendering,
                                                           tmp_path: Path) -> None:
    """Without the Secret's userlist file HAProxy refuses the config: a pod whose Secret is
    missing never starts with open stats and metrics pages."""
    path = tmp_path / "haproxy.cfg"
    path.write_text(prod.rendered_files()["haproxy.cfg"])
    alone = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True,
                           check=False, timeout=60)
    assert alone.returncode != 0
    assert "control_users" in alone.stdout + alone.stderr

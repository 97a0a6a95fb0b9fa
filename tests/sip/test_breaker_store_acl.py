"""The breaker store's ACL file as the Dragonfly component renders it, read by a real Redis 7:
a client that does not authenticate can do nothing, OpenSIPS's user reaches its own keys with
the commands its script sends and nothing else. (The breaker tests run OpenSIPS against the
same file: its script works within it.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from components.opensips.config_files import STORE_USER
from tests.sip.lab import LAB_STORE_PASSWORD, Ports, Processes, redis_server

pytestmark = pytest.mark.slow


def as_user(port: int, user: str | None, *command: str) -> str:
    cli = redis_server().replace("redis-server", "redis-cli")
    account = ["--user", user, "--pass", LAB_STORE_PASSWORD, "--no-auth-warning"] if user else []
    answer = subprocess.run([cli, "-p", str(port), *account, "--raw", *command],
                            capture_output=True, text=True, check=False, timeout=10)
    return (answer.stdout + answer.stderr).strip()


def test_only_authenticated_users_and_only_their_keys_and_commands(tmp_path: Path) -> None:
    ports = Ports()
    processes = Processes(tmp_path / "processes.log")
    try:
        processes.start_redis(ports.redis)
        assert as_user(ports.redis, None, "PING").startswith("NOAUTH")
        assert as_user(ports.redis, None, "GET", "acm:breaker:open").startswith("NOAUTH")
        assert "WRONGPASS" in as_user(ports.redis, "default", "PING") or \
            "NOAUTH" in as_user(ports.redis, "default", "PING")
        # OpenSIPS's user: its keys, with what cachedb_redis sends.
        assert as_user(ports.redis, STORE_USER, "SET", "acm:breaker:open", "1") == "OK"
        assert as_user(ports.redis, STORE_USER, "INCRBY", "acm:breaker:failures", "1") == "1"
        assert as_user(ports.redis, STORE_USER, "EXPIRE", "acm:breaker:failures", "60") == "1"
        assert as_user(ports.redis, STORE_USER, "DEL", "acm:breaker:open") == "1"
        # Nothing else: another key, the whole store, the server.
        assert "NOPERM" in as_user(ports.redis, STORE_USER, "SET", "acm:engine:x", "1")
        for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"),
                        ("ACL", "LIST"), ("SHUTDOWN",)):
            assert "NOPERM" in as_user(ports.redis, STORE_USER, *command), command
    finally:
        processes.stop_all()

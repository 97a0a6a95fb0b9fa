"""The audit exporter as its Deployment runs it (`ncc-report exporter`, a real PostgreSQL):
its /metrics asks for the account Prometheus scrapes with, and without that account's password
file it refuses to start, saying which setting is missing."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.jobs.conftest import Database

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str, password: str | None) -> tuple[int, str]:
    headers = {}
    if password is not None:
        account = base64.b64encode(f"acm-control:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {account}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except urllib.error.URLError:
        return 0, ""  # not listening yet


def test_the_exporter_asks_for_its_account(job_env: dict[str, str], database: Database,
                                           tmp_path: Path) -> None:
    password_file = tmp_path / "exporter-password"
    password_file.write_text("exporter-test-password\n")
    password_file.chmod(0o400)
    port = free_port()
    environment = {**os.environ, "NCC_EXPORTER_PASSWORD_FILE": str(password_file)}
    exporter = subprocess.Popen([sys.executable, "-m", "jobs.cli", "exporter", "--port",
                                 str(port)], env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while get(url, None)[0] != 401:
            assert exporter.poll() is None, exporter.communicate()
            assert time.monotonic() < deadline, "the exporter did not start"
            time.sleep(0.2)
        assert get(url, "not-the-password")[0] == 401
        status, text = get(url, "exporter-test-password")
        assert status == 200
        assert "ncc_report_audit_up 1.0" in text
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)


def test_the_exporter_without_its_password_file_refuses_to_start(
        job_env: dict[str, str], database: Database) -> None:
    environment = {key: value for key, value in os.environ.items()
                   if key != "NCC_EXPORTER_PASSWORD_FILE"}
    started = subprocess.run([sys.executable, "-m", "jobs.cli", "exporter", "--port",
                              str(free_port())], env=environment, capture_output=True,
                             text=True, timeout=60)
    assert started.returncode == 2
    assert "NCC_EXPORTER_PASSWORD_FILE: required by the exporter" in started.stderr
    assert "Traceback" not in started.stderr

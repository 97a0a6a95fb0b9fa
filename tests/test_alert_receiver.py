"""The webhook receiver stand-in (images/sip-stand-in/alert_receiver.py), run as its pod runs
it: it takes Alertmanager's notifications only with the account, keeps them per receiver, shows
them only with the account, and its probe page shows nothing."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "images" / "sip-stand-in" / "alert_receiver.py"
ACCOUNT = "Basic " + base64.b64encode(b"alertmanager:stand-in-password").decode()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[str]:
    password = tmp_path / "password"
    password.write_text("stand-in-password\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--port", str(port), "--username",
                                "alertmanager", "--password-file", str(password)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the stand-in did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        # PID 1 in its pod: SIGTERM must end it, not the grace period.
        assert process.wait(timeout=5) == 0


def call(url: str, data: bytes | None = None, authorization: str | None = ACCOUNT
         ) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers),
                                    timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_notifications_are_taken_and_shown_only_with_the_account(receiver: str) -> None:
    notification = {"receiver": "on-call", "status": "firing",
                    "alerts": [{"labels": {"alertname": "AcmNoHealthyEngine"}}]}
    body = json.dumps(notification).encode()
    wrong = "Basic " + base64.b64encode(b"alertmanager:not-the-password").decode()
    assert call(f"{receiver}/on-call", body, None)[0] == 401
    assert call(f"{receiver}/on-call", body, wrong)[0] == 401
    assert call(f"{receiver}/received", None, None)[0] == 401
    assert call(f"{receiver}/on-call", body)[0] == 200
    assert call(f"{receiver}/compliance", b"not json")[0] == 400
    assert call(f"{receiver}/compliance", b"[1, 2]")[0] == 400
    status, shown = call(f"{receiver}/received")
    assert status == 200
    (recorded,) = json.loads(shown)
    assert recorded["receiver"] == "on-call" and recorded["body"] == notification
    assert abs(recorded["received_at"] - time.time()) < 10
    # The probe page says alive and nothing else.
    assert call(f"{receiver}/health", None, None) == (200, b"ok\n")


def test_an_empty_password_file_is_refused_at_start(tmp_path: Path) -> None:
    empty = tmp_path / "password"
    empty.write_text("\n")
    started = subprocess.run([sys.executable, str(SCRIPT), "--username", "alertmanager",
                              "--password-file", str(empty)], capture_output=True, text=True,
                             timeout=10)
    assert started.returncode == 2
    assert "is empty" in started.stderr and "Traceback" not in started.stderr

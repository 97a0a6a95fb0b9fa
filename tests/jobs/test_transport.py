"""SFTP and ATRS transport on their own: the failure modes of the contract."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.atrs import AtrsClient, Rejected, RetryPolicy, TokenRefused, Unavailable
from jobs.sftp import (
    SftpTarget,
    TransferError,
    remove_stale_partials,
    sftp_session,
    temporary_name,
    upload_atomically,
)
from tests.jobs.atrs_standin import AtrsStandin, Fault
from tests.jobs.conftest import LICENSE
from tests.jobs.servers import SftpServer

pytestmark = pytest.mark.slow
FAST = RetryPolicy(attempts=4, backoff_seconds=0.05, backoff_max_seconds=2.0)


def report(period: str = "2026-11-23") -> dict[str, object]:
    return {"licenseNumber": LICENSE, "reportType": "daily", "period": period,
            "files": [{"name": f"ACM_DAILY_{LICENSE}_20261123.csv", "sha256": "0" * 64,
                       "bytes": 1}]}


@pytest.fixture
def standin(atrs: AtrsStandin) -> AtrsStandin:
    atrs.sftp_root = None  # these tests send checksums of files that are not on the server
    return atrs


@pytest.fixture
def client(standin: AtrsStandin) -> Iterator[AtrsClient]:
    with AtrsClient(standin.base_url, standin.client_id, standin.client_secret,
                    ca_file=standin.ca_file, timeout=1.0, retry=FAST) as atrs_client:
        yield atrs_client


def test_token_is_reused_until_shortly_before_expiry(standin: AtrsStandin,
                                                     client: AtrsClient) -> None:
    client.health()
    client.submit_report("daily", report(), "k1")
    assert standin.calls("POST", "/oauth/token") == [200]
    # A token that lives 60 s is shorter than twice the minute's margin: it is used for half
    # its life (a server that ends it sooner answers 401, and one fresh token follows).
    standin.token_lifetime = 60
    client2 = AtrsClient(standin.base_url, standin.client_id, standin.client_secret,
                         ca_file=standin.ca_file, retry=FAST)
    with client2:
        client2.submit_report("daily", report("2026-11-24"), "k2")
        client2.submit_report("daily", report("2026-11-25"), "k3")
    assert standin.calls("POST", "/oauth/token") == [200, 200]
    # One that lives 1 s is fetched again for the next call, half a second later.
    standin.token_lifetime = 1
    client3 = AtrsClient(standin.base_url, standin.client_id, standin.client_secret,
                         ca_file=standin.ca_file, retry=FAST)
    with client3:
        client3.submit_report("daily", report("2026-11-26"), "k4")
        time.sleep(0.6)
        client3.submit_report("daily", report("2026-11-27"), "k5")
    assert standin.calls("POST", "/oauth/token") == [200, 200, 200, 200]


def test_token_expired_on_the_server_is_renewed_and_the_call_replayed(
        standin: AtrsStandin, client: AtrsClient) -> None:
    client.submit_report("daily", report(), "k1")
    standin.expire_tokens()
    receipt = client.submit_report("daily", report("2026-11-24"), "k2")
    assert receipt.http_status == 201
    assert standin.calls("POST", "/compliance") == [201, 401, 201]
    assert standin.calls("POST", "/oauth/token") == [200, 200]


def test_429_waits_for_its_reset(standin: AtrsStandin, client: AtrsClient) -> None:
    standin.fail(Fault("/compliance", 429, headers={"X-RateLimit-Reset": "1"},
                       body={"error": "rate limited"}))
    started = time.monotonic()
    receipt = client.submit_report("daily", report(), "k1")
    waited = time.monotonic() - started
    assert receipt.http_status == 201
    assert standin.calls("POST", "/compliance") == [429, 201]
    # The exponential backoff alone would have waited 0.05 s.
    assert waited >= 0.9


def test_burst_of_503_is_retried_with_backoff(standin: AtrsStandin, client: AtrsClient) -> None:
    standin.fail(Fault("/compliance", 503, times=3))
    assert client.submit_report("daily", report(), "k1").http_status == 201
    assert standin.calls("POST", "/compliance") == [503, 503, 503, 201]
    assert len(standin.accepted) == 1


def test_retries_are_bounded(standin: AtrsStandin, client: AtrsClient) -> None:
    standin.fail(Fault("/compliance", 503, times=50))
    with pytest.raises(Unavailable, match="HTTP 503 after 4 tries"):
        client.submit_report("daily", report(), "k1")
    assert len(standin.calls("POST", "/compliance")) == 4


def test_slow_answer_is_retried_with_the_same_key_and_not_duplicated(
        standin: AtrsStandin, client: AtrsClient) -> None:
    # The regulator takes the submission but answers after the client's 1 s timeout.
    standin.fail(Fault("/compliance", None, delay=1.5, after=True))
    receipt = client.submit_report("daily", report(), "k1")
    assert receipt.duplicate and receipt.reference == standin.accepted[0].reference
    assert len(standin.accepted) == 1


def test_rejected_payload_is_not_retried(standin: AtrsStandin, client: AtrsClient) -> None:
    bad = report()
    bad["files"] = [{"name": "evil.csv", "sha256": "x"}]
    with pytest.raises(Rejected) as rejected:
        client.submit_report("daily", bad, "k1")
    assert rejected.value.status == 422 and "not a SHA-256" in rejected.value.body
    assert standin.calls("POST", "/compliance") == [422]


def test_period_accepted_under_another_key_is_a_duplicate(standin: AtrsStandin,
                                                          client: AtrsClient) -> None:
    first = client.submit_report("daily", report(), "k1")
    second = client.submit_report("daily", report(), "k2")
    assert second.http_status == 409 and second.duplicate
    assert second.reference == first.reference and len(standin.accepted) == 1


def test_tls_is_verified(standin: AtrsStandin) -> None:
    # Without the stand-in's CA the system trust store applies, and its certificate fails.
    with AtrsClient(standin.base_url, "id", "secret", retry=FAST) as untrusting, \
            pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.health()
    assert standin.log == []  # the handshake failed: no request reached the server


def test_wrong_client_secret_is_a_rejection(standin: AtrsStandin) -> None:
    with AtrsClient(standin.base_url, standin.client_id, "wrong", ca_file=standin.ca_file,
                    retry=FAST) as wrong, pytest.raises(TokenRefused, match="invalid_client"):
        wrong.submit_report("daily", report(), "k1")


def target(server: SftpServer, known_hosts: str | None = None) -> SftpTarget:
    return SftpTarget(server.host, server.port, server.user, str(server.root),
                      server.client_key, known_hosts or server.known_hosts)


def test_upload_lands_under_the_final_name_only(sftp: SftpServer, remote_dir: Path,
                                                tmp_path: Path) -> None:
    local = tmp_path / "ACM_DAILY_X_20261123.csv"
    local.write_bytes(b"a,b\n1,2\n" * 10_000)
    with sftp_session(target(sftp)) as session:
        assert upload_atomically(session, local, str(remote_dir), "7") == local.stat().st_size
    assert [p.name for p in remote_dir.iterdir()] == [local.name]
    assert (remote_dir / local.name).read_bytes() == local.read_bytes()


def test_failed_upload_leaves_no_temporary_file(sftp: SftpServer, remote_dir: Path,
                                                tmp_path: Path) -> None:
    local = tmp_path / "ACM_DAILY_X_20261123.csv"
    local.write_bytes(b"x" * 100)
    (remote_dir / local.name).mkdir()  # the final name is taken by a directory: rename fails
    try:
        with sftp_session(target(sftp)) as session, pytest.raises(TransferError):
            upload_atomically(session, local, str(remote_dir), "7")
        assert sorted(p.name for p in remote_dir.iterdir()) == [local.name]
    finally:
        (remote_dir / local.name).rmdir()


def test_stale_partials_of_the_package_are_removed(sftp: SftpServer, remote_dir: Path) -> None:
    (remote_dir / temporary_name("ACM_A.csv", "3")).write_bytes(b"half")
    (remote_dir / "someone-elses.csv").write_bytes(b"keep")
    with sftp_session(target(sftp)) as session:
        removed = remove_stale_partials(session, str(remote_dir), ["ACM_A.csv", "ACM_B.csv"])
    assert removed == [temporary_name("ACM_A.csv", "3")]
    assert [p.name for p in remote_dir.iterdir()] == ["someone-elses.csv"]


def test_unknown_host_key_is_never_accepted(sftp: SftpServer) -> None:
    # A known_hosts entry for another address: the server's key is unknown.
    other = sftp.known_hosts.replace("[127.0.0.1]", "[192.0.2.1]")
    with pytest.raises(TransferError, match=r"connection to 127\.0\.0\.1"), \
            sftp_session(target(sftp, other)):
        pass


def test_empty_known_hosts_is_refused_before_connecting(sftp: SftpServer) -> None:
    with pytest.raises(TransferError, match="holds no host key"), \
            sftp_session(target(sftp, "# nothing pinned\n")):
        pass

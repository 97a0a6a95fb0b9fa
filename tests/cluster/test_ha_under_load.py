"""High availability measured while calls flow through the deployed local platform on the real
node: SIPp on the host at a steady 50 calls/s through HAProxy's NodePort, each call on its own
TCP connection, while one thing happens to the platform (`tests/cluster/faults.py`). Each test
prints its count (sent, completed, failed, worst gap, setup time) and asserts its goal:

1. an OpenSIPS rollout and a HAProxy rollout by `pulumi up`: no call fails;
2. an OpenSIPS container killed: only the calls in flight on it fail, and it is back in
   HAProxy's rotation afterwards;
3. an engine stand-in container killed: calls fail over to the other engine, none fails, and
   the breaker stays closed (no call goes out unscreened);
4. the Dragonfly stand-in killed: calls keep completing (a missing breaker store reads as
   closed), and the breaker works again once it is back;
5. the database stand-in killed while the daily report's job waits for the regulator's answer
   to its submission: that run fails loudly (exit 3, one line), Kubernetes's retry of the Job
   resends the same request, and the regulator holds the period once.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.cluster.faults import (
    A_CALL_YESTERDAY,
    Platform,
    breaker_answers_again,
    breaker_keys,
    database_query,
    job_pods,
    kill_container,
    rollout,
    run_report_job,
    wait_for,
)
from tests.cluster.kube import NODE_ADDRESS, Cluster, job_ending
from tests.conftest import rendering_of
from tests.engine import Engine
from tests.jobs.atrs_standin import AtrsStandin, Fault
from tests.jobs.servers import sftp_server

pytestmark = pytest.mark.slow
STACK = "local"
RATE = 50
# A call lasts about 0.3 s (setup, the gateway's 200 ms pause, its BYE); a pod killed holds at
# most the calls of its share of the last second.
IN_FLIGHT_BOUND = RATE


@pytest.fixture(scope="module")
def platform(control_plane: Path, engine: Engine) -> Iterator[Platform]:
    stack = engine.stack(STACK)
    stack.up(on_output=lambda _: None)
    deployed = Platform(stack, Cluster(control_plane), rendering_of(STACK))
    try:
        wait_for(deployed.whole, 180, "every workload ready")
        # Both OpenSIPS in both HAProxys' rotation before any load.
        wait_for(lambda: set(deployed.haproxy_servers_up().values()) == {
            len(deployed.pods("opensips"))}, 60, "every OpenSIPS UP in every HAProxy")
        yield deployed
    finally:
        stack.destroy(on_output=lambda _: None)


@pytest.mark.parametrize("part", ["opensips", "haproxy"])
def test_a_rollout_under_load_fails_no_call(platform: Platform, part: str,
                                            tmp_path: Path) -> None:
    outcome = rollout(platform, tmp_path, RATE, seconds=75, part=part)
    print(f"\n{outcome.row()} | {outcome.notes}")
    assert outcome.notes["replaced"], f"not every {part} pod was replaced"
    assert outcome.load.sent == RATE * 75
    assert outcome.load.failed == 0, (outcome.row(), outcome.load.errors, outcome.notes)
    assert outcome.load.completed == outcome.load.sent, outcome.row()


def test_a_killed_opensips_costs_only_its_calls_in_flight(platform: Platform,
                                                          tmp_path: Path) -> None:
    outcome = kill_container(platform, tmp_path, RATE, 30, "opensips", "opensips")
    print(f"\n{outcome.row()} | {outcome.notes} | bound {IN_FLIGHT_BOUND}")
    assert outcome.load.failed <= IN_FLIGHT_BOUND, (outcome.row(), outcome.notes)
    assert outcome.load.completed + outcome.load.failed == outcome.load.sent
    # Back in rotation: every HAProxy has both OpenSIPS UP again.
    wait_for(lambda: set(platform.haproxy_servers_up().values()) == {
        len(platform.pods("opensips"))}, 60, "the restarted OpenSIPS back in rotation")


def test_a_killed_engine_fails_over_with_the_breaker_closed(platform: Platform,
                                                            tmp_path: Path) -> None:
    outcome = kill_container(platform, tmp_path, RATE, 30, "acm-engine", "acm-engine")
    print(f"\n{outcome.row()} | {outcome.notes}")
    assert outcome.load.failed == 0, (outcome.row(), outcome.load.errors, outcome.notes)
    # Screened throughout: the breaker never opened, so no call went out unscreened.
    assert outcome.notes["unscreened"] == 0
    assert breaker_keys(platform) == {key: "0" for key in breaker_keys(platform)}
    # The failed-over calls waited for the engine timeout (2 s), not for a SIP retransmission
    # storm: every setup stayed within the 10 s a call may wait.
    assert math.isfinite(outcome.load.setup_max_ms) and outcome.load.setup_max_ms < 10_000


def test_a_killed_dragonfly_leaves_calls_completing(platform: Platform, tmp_path: Path) -> None:
    outcome = kill_container(platform, tmp_path, RATE, 30, "dragonfly", "dragonfly")
    print(f"\n{outcome.row()} | {outcome.notes}")
    assert outcome.load.failed == 0, (outcome.row(), outcome.load.errors, outcome.notes)
    assert breaker_answers_again(platform, tmp_path), "OpenSIPS ignores the breaker store"


def test_a_database_restart_during_a_report_run_sends_no_period_twice(platform: Platform,
                                                                      tmp_path: Path) -> None:
    """The regulator's SFTP and API stand in on the node's address (reachable from pods; the
    local network plugin does not enforce the job's egress policy); the job is the CronJob's,
    with the real image, against the PostgreSQL stand-in, sending for real."""
    from components.compliance import SECRETS_MOUNT
    from jobs import settings as job_settings

    license_number = platform.rendering.config.compliance.license_number
    name = "ncc-report-daily-db-restart"
    with sftp_server(tmp_path / "sftp", host=NODE_ADDRESS) as sftp, \
            AtrsStandin(trustme.CA(), tmp_path, license_number=license_number,
                        sftp_root=sftp.root, host=NODE_ADDRESS) as atrs:
        # The regulator takes the submission and answers 20 s later: the moment the database
        # goes, the acceptance cannot be recorded.
        atrs.fail(Fault("/compliance/reports/daily", delay=20, after=True))
        database_query(platform, A_CALL_YESTERDAY)
        restarts = platform.restarts("yb-tserver", "yb-tserver")
        run_report_job(platform, name, secret={
            job_settings.ATRS_CLIENT_ID: atrs.client_id,
            job_settings.ATRS_CLIENT_SECRET: atrs.client_secret,
            job_settings.SFTP_PRIVATE_KEY: sftp.client_key,
            job_settings.SFTP_KNOWN_HOSTS: sftp.known_hosts,
            "atrs-ca.pem": atrs.ca_file.read_text(),
        }, environment={
            "NCC_DRY_RUN": "false", "NCC_SFTP_HOST": sftp.host, "NCC_SFTP_PORT": str(sftp.port),
            "NCC_SFTP_USER": sftp.user, "NCC_SFTP_DIRECTORY": str(sftp.root),
            "NCC_ATRS_BASE_URL": atrs.base_url, "NCC_ATRS_CA_FILE": f"{SECRETS_MOUNT}/atrs-ca.pem",
            "NCC_ATRS_TIMEOUT_SECONDS": "40",
        })
        try:
            wait_for(lambda: bool(atrs.accepted), 240, "the job's submission")
            platform.kill(platform.pods("yb-tserver")[0], "yb-tserver")
            wait_for(lambda: job_ending(platform.cluster, platform.namespace, name) is not None,
                     300, "the Job's end")
            ended = job_ending(platform.cluster, platform.namespace, name)
            runs = job_pods(platform, name)
            audit = database_query(platform, "SELECT outcome FROM ncc_audit.submissions"
                                             " ORDER BY submission_id")
        finally:
            platform.cluster.batch().delete_namespaced_job(name, platform.namespace,
                                                           propagation_policy="Background")
            platform.cluster.core().delete_namespaced_secret(name, platform.namespace)
        for code, log in runs:
            print(f"\nexit {code}: " + " | ".join(
                line for line in log.splitlines() if not line.startswith("{")))

        assert ended == "Complete", runs
        assert platform.restarts("yb-tserver", "yb-tserver") == restarts + 1
        (first_code, first_log), (last_code, last_log) = runs[0], runs[-1]
        assert first_code == 3, first_log
        complaint = [line for line in first_log.splitlines() if line.startswith("ncc-report:")]
        assert len(complaint) == 1 and "failed during the run" in complaint[0], first_log
        assert not any("Traceback" in log for _, log in runs)
        assert last_code == 0, last_log
        [accepted] = atrs.accepted  # one submission, whatever was resent
        assert re.search(rf"^daily {accepted.period}: accepted \(reference "
                         rf"{re.escape(accepted.reference)}\)$", last_log, re.M), last_log
        # What the regulator accepted is what its SFTP directory holds, and only that.
        files = {entry["name"]: entry["sha256"] for entry in accepted.body["files"]}
        assert {path.name for path in sftp.root.iterdir()} == set(files)
        for file_name, digest in files.items():
            assert hashlib.sha256((sftp.root / file_name).read_bytes()).hexdigest() == digest
        # The lost run's attempt is closed as interrupted; the retry's is the accepted one.
        assert audit == ["interrupted", "accepted"]

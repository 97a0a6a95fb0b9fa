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

import contextlib
import hashlib
import math
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from stacks.pod_logs import pod_log
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
from tests.cluster.kube import NODE_ADDRESS, Cluster, job_ending, pod_exec
from tests.conftest import rendering_of
from tests.engine import Engine
from tests.jobs.atrs_standin import AtrsStandin, Fault
from tests.jobs.servers import sftp_server
from tests.sip.lab import basic_authorization

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
    assert breaker_keys(platform) == {key: "" for key in breaker_keys(platform)}
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


def test_secrets_rotate_with_pulumi_up_under_load(platform: Platform, engine: Engine,
                                                  tmp_path: Path) -> None:
    """`pulumi config set --secret` of the OpenSIPS and HAProxy control passwords and a renewed
    SIP TLS certificate, then `pulumi up`, while calls flow: no call fails, exactly OpenSIPS and
    HAProxy roll (the keyed digest of the Secrets they read at start changed; nothing else's
    did), the new passwords answer and the old ones are refused, Prometheus scrapes both with
    the new ones, the sidecar reloads with it, and new TLS connections see the new certificate."""
    import shutil
    import ssl
    import subprocess
    import time
    import urllib.error
    import urllib.request

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from tests.cluster.kube import node_port, prometheus_query
    from tests.cluster.load import SteadyLoad
    from tests.engine import REPO, cli_root

    namespace, core = platform.namespace, platform.cluster.core()
    old = {secret: platform.password(secret) for secret in ("opensips-control",
                                                             "haproxy-control")}
    config_file = tmp_path / "Pulumi.local.yaml"
    shutil.copy(REPO / "Pulumi.local.yaml", config_file)
    renewed = trustme.CA().issue_cert("opensips.acm-local.svc.cluster.local")
    new_passwords = {"opensipsControlPassword": "rotated-opensips-control-0123456789",
                     "haproxyControlPassword": "rotated-haproxy-control-0123456789"}
    for key, value in {**new_passwords,
                       "sipTlsCertificate": renewed.cert_chain_pems[0].bytes().decode(),
                       "sipTlsPrivateKey": renewed.private_key_pem.bytes().decode()}.items():
        # As an operator rotates a secret; the value on standard input (a PEM has lines).
        set_secret = subprocess.run(
            [str(cli_root() / "bin" / "pulumi"), "config", "set", "--secret", "--non-interactive",
             "--stack", STACK, "--config-file", str(config_file), f"acm-platform:{key}"],
            input=value, cwd=REPO, env=engine.cli_env(), capture_output=True, text=True,
            timeout=120, check=False)
        assert set_secret.returncode == 0, set_secret.stderr

    def pods_by_workload() -> dict[str, set[str]]:
        return {name: {p.metadata.name for p in platform.pods(name)}
                for name in {p.metadata.labels["app.kubernetes.io/name"]
                             for p in core.list_namespaced_pod(namespace).items
                             if (p.metadata.owner_references or [{}])[0].kind != "Job"}}

    before = pods_by_workload()
    load = SteadyLoad(platform.sip_port(), RATE, RATE * 75, tmp_path / "load")
    try:
        time.sleep(5)
        rotated = platform.stack.up(config_file=str(config_file), on_output=lambda _: None)
        assert rotated.summary.result == "succeeded"
        outcome = load.result()
    finally:
        if load.process.poll() is None:
            load.process.kill()
    wait_for(platform.whole, 180, "every workload ready after the rotation")
    after = pods_by_workload()
    try:
        print(f"\nrotation under load: sent {outcome.sent}, failed {outcome.failed}")
        assert outcome.failed == 0, (outcome.errors, outcome.sent)
        rolled = {name for name in before if before[name] != after.get(name)}
        assert rolled == {"opensips", "haproxy"}, (before, after)
        assert not any(before[name] & after[name] for name in rolled)

        # The new passwords answer, the old ones are refused.
        config = platform.rendering.config
        for secret, key, pods, port, path in (
                ("opensips-control", "opensipsControlPassword", "opensips",
                 config.opensips.ports.http, "/metrics"),
                ("haproxy-control", "haproxyControlPassword", "haproxy",
                 config.haproxy.ports.stats, "/stats;csv")):
            assert platform.password(secret) == new_passwords[key]
            for pod in platform.pods(pods):
                url = f"http://{pod.status.pod_ip}:{port}{path}"
                for password, expected in ((new_passwords[key], 200), (old[secret], 401)):
                    request = urllib.request.Request(
                        url, headers={"Authorization": basic_authorization(password)})
                    try:
                        with urllib.request.urlopen(request, timeout=5) as answer:
                            status = answer.status
                    except urllib.error.HTTPError as error:
                        status = error.code
                    assert status == expected, (url, expected)

        # Prometheus reads its password files per scrape: every target up again with the new
        # ones once the kubelet has refreshed its projected volume.
        def scraped(job: str) -> bool:
            result = prometheus_query(platform.cluster, namespace, f'up{{job="{job}"}}')
            return bool(result) and all(r["value"][1] == "1" for r in result)  # type: ignore[index]

        for job in ("opensips", "opensips-sidecar", "haproxy"):
            wait_for(lambda job=job: scraped(job), 180, f"{job} scraped with the new password")
        for pod in platform.pods("opensips"):
            log = pod_log(core, pod.metadata.name, namespace,
                          container="dispatcher-sync")
            assert '"event": "ds_reload"' in log, log[-1000:]

        # New TLS connections through HAProxy's passthrough meet the renewed certificate.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        tls_port = node_port(platform.cluster, namespace, "haproxy-sip", "sip-tls")
        with socket.create_connection((NODE_ADDRESS, tls_port), timeout=5) as raw, \
                context.wrap_socket(raw) as conn:
            served = conn.getpeercert(binary_form=True)
        assert served is not None
        expected = x509.load_pem_x509_certificate(renewed.cert_chain_pems[0].bytes())
        assert x509.load_der_x509_certificate(served).fingerprint(hashes.SHA256()) == \
            expected.fingerprint(hashes.SHA256())
    finally:
        restored = platform.stack.up(on_output=lambda _: None)
        assert restored.summary.result == "succeeded"
        wait_for(platform.whole, 180, "the stack back to its own secrets")


AUDIT_TABLES = ("packages", "submissions", "http_tries", "incidents", "archives", "runs")


def audit_snapshot(platform: Platform) -> dict[str, list[str]]:
    return {table: database_query(platform, f"SELECT t::text FROM ncc_audit.{table} AS t"
                                            " ORDER BY 1")
            for table in AUDIT_TABLES}


def in_exporter(platform: Platform, script: str) -> str:
    """A shell command in the compliance exporter's pod: the job image, with the jobs'
    settings and Secret (the evidence store's keys and CA among them)."""
    [pod] = platform.pods("ncc-compliance-exporter")[:1]
    return pod_exec(platform.cluster.core(), pod.metadata.name, platform.namespace,
                    ["sh", "-c", script])


LOCKED_COPY_CHECK = """
import json, sys
from jobs.archive import store_client
from jobs.settings import load_settings
settings = load_settings()
s3 = store_client(settings)
key = sys.argv[1]
version = s3.head_object(Bucket=settings.evidence_bucket, Key=key)["VersionId"]
answers = {}
try:
    s3.delete_object(Bucket=settings.evidence_bucket, Key=key, VersionId=version)
    answers["delete"] = "deleted"
except Exception as error:
    answers["delete"] = getattr(error, "response", {}).get("Error", {}).get("Code", str(error))
try:
    s3.put_object(Bucket=settings.evidence_bucket, Key=key, Body=b"{}", IfNoneMatch="*")
    answers["overwrite"] = "written"
except Exception as error:
    answers["overwrite"] = type(error).__name__
answers["versions"] = [v["VersionId"] for v in s3.list_object_versions(
    Bucket=settings.evidence_bucket, Prefix=key)["Versions"]] == [version]
answers["retention"] = s3.get_object_retention(Bucket=settings.evidence_bucket,
                                               Key=key)["Retention"]["Mode"]
print(json.dumps(answers))
"""


def test_the_evidence_survives_the_database_and_a_restore_gives_back_the_same_bytes(
        platform: Platform, tmp_path: Path) -> None:
    """The restore drill (issue #33) on the real node: a day submitted to the regulator's
    stand-ins is archived write-once in the local object store; a backup is taken by the
    backup CronJob's Job; the database is destroyed (its StatefulSet and its volume) and made
    new by `pulumi up`; `acmctl restore-database` brings the backup back. Then the audit trail
    is the same row for row, the day generated again is byte-identical to what was archived,
    uploaded and recorded, a re-run sends nothing, and the archived copy can be neither
    deleted nor overwritten."""
    import datetime as dt
    import json
    import os
    import subprocess
    import time

    from components.compliance import SECRETS_MOUNT
    from jobs import settings as job_settings
    from tests.cluster.kube import job_of
    from tests.engine import REPO

    license_number = platform.rendering.config.compliance.license_number
    namespace, core = platform.namespace, platform.cluster.core()
    batch, apps = platform.cluster.batch(), platform.cluster.apps()
    day = (dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=1))).date()
           - dt.timedelta(days=2)).isoformat()
    database_query(platform, "INSERT INTO acm.call_records VALUES (900002, timestamptz "
                             f"'{day} 12:00+01', '08030000000', '08039999999', 25)"
                             " ON CONFLICT DO NOTHING RETURNING call_id")

    def wait_job(name: str, timeout: float = 300) -> tuple[str | None, str]:
        wait_for(lambda: job_ending(platform.cluster, namespace, name) is not None, timeout,
                 f"the Job {name}")
        return job_ending(platform.cluster, namespace, name), "\n".join(
            log for _, log in job_pods(platform, name))

    with sftp_server(tmp_path / "sftp", host=NODE_ADDRESS) as sftp, \
            AtrsStandin(trustme.CA(), tmp_path, license_number=license_number,
                        sftp_root=sftp.root, host=NODE_ADDRESS) as atrs:
        secret = {job_settings.ATRS_CLIENT_ID: atrs.client_id,
                  job_settings.ATRS_CLIENT_SECRET: atrs.client_secret,
                  job_settings.SFTP_PRIVATE_KEY: sftp.client_key,
                  job_settings.SFTP_KNOWN_HOSTS: sftp.known_hosts,
                  "atrs-ca.pem": atrs.ca_file.read_text()}
        sending = {"NCC_DRY_RUN": "false", "NCC_SFTP_HOST": sftp.host,
                   "NCC_SFTP_PORT": str(sftp.port), "NCC_SFTP_USER": sftp.user,
                   "NCC_SFTP_DIRECTORY": str(sftp.root), "NCC_ATRS_BASE_URL": atrs.base_url,
                   "NCC_ATRS_CA_FILE": f"{SECRETS_MOUNT}/atrs-ca.pem"}
        try:
            run_report_job(platform, "ncc-drill-send", secret, sending,
                           ["daily", "--date", day])
            ended, log = wait_job("ncc-drill-send")
            assert ended == "Complete", log
            assert "evidence: 1 archived" in log, log
            [accepted] = [a for a in atrs.accepted if a.period == day]
            [archive] = [json.loads(row) for row in database_query(
                platform, "SELECT row_to_json(a)::text FROM ncc_audit.archives a JOIN"
                          f" ncc_audit.submissions s USING (submission_id) WHERE s.period = "
                          f"'{day}'")]

            # The backup, as its CronJob takes it.
            started = time.monotonic()
            batch.create_namespaced_job(namespace, job_of(
                batch.read_namespaced_cron_job("ncc-report-backup", namespace), "ncc-drill-backup"))
            ended, log = wait_job("ncc-drill-backup")
            backup_seconds = time.monotonic() - started
            assert ended == "Complete", log
            backup = re.search(r"^backup (\S+): (\d+) bytes", log, re.M)
            assert backup is not None, log
            key = backup.group(1)
            before = audit_snapshot(platform)

            # The database lost: its StatefulSet and its volume; `pulumi up` makes a new one.
            apps.delete_namespaced_stateful_set("yb-tserver", namespace)
            core.delete_namespaced_persistent_volume_claim("data-yb-tserver-0", namespace)
            wait_for(lambda: not platform.pods("yb-tserver") and not [
                c for c in core.list_namespaced_persistent_volume_claim(namespace).items
                if c.metadata.name == "data-yb-tserver-0"], 180, "the database gone")
            platform.stack.refresh(on_output=lambda _: None)
            remade = platform.stack.up(on_output=lambda _: None)
            assert remade.summary.result == "succeeded"
            wait_for(platform.whole, 240, "every workload ready with a new database")
            assert database_query(platform, "SELECT to_regclass('ncc_audit.archives')") == []

            # The one documented command.
            started = time.monotonic()
            restored = subprocess.run(
                [str(REPO / ".venv" / "bin" / "acmctl"), "restore-database", "local",
                 "--backup", key], capture_output=True, text=True, timeout=900, cwd=REPO,
                env={**os.environ, "KUBECONFIG": str(REPO / ".state" / "kubeconfig")})
            restore_seconds = time.monotonic() - started
            assert restored.returncode == 0, restored.stdout + restored.stderr
            print(f"\nbackup: {int(backup.group(2))} bytes in {backup_seconds:.0f} s (the Job); "
                  f"restore: {restore_seconds:.0f} s (acmctl restore-database)")

            # (a) The audit trail, row for row; the backup's own run, which its dump caught
            # running, closed by the restore.
            after = audit_snapshot(platform)
            assert {t: rows for t, rows in after.items() if t != "runs"} == \
                {t: rows for t, rows in before.items() if t != "runs"}
            assert len(after["runs"]) == len(before["runs"])
            assert database_query(platform, "SELECT count(*) FROM ncc_audit.runs WHERE"
                                            " finished_at IS NULL") == ["0"]

            # (b) The day generated again from the restored database: byte-identical to what
            # the regulator's server holds, to the archived copies and to the recorded sums.
            printed = in_exporter(platform, f"ncc-report daily --date {day} --dry-run --out "
                                            f"/scratch/drill >/dev/null && cd /scratch/drill/"
                                            f"daily/{day} && sha256sum *")
            regenerated = {line.split()[1]: line.split()[0] for line in printed.splitlines()
                           if len(line.split()) == 2}
            uploaded = {entry["name"]: entry["sha256"] for entry in accepted.body["files"]}
            archived = {entry["key"].rsplit("/", 1)[1]: entry["sha256"]
                        for entry in archive["objects"] if "/files/" in entry["key"]}
            assert regenerated == uploaded == archived, (printed, uploaded, archived)
            for name, digest in uploaded.items():
                assert hashlib.sha256((sftp.root / name).read_bytes()).hexdigest() == digest

            # (c) A re-run of that day sends nothing: already accepted.
            posts = len(atrs.calls("POST", "/compliance"))
            run_report_job(platform, "ncc-drill-rerun", secret, sending,
                           ["daily", "--date", day])
            ended, log = wait_job("ncc-drill-rerun")
            assert ended == "Complete", log
            assert f"daily {day}: already-accepted" in log, log
            assert len(atrs.calls("POST", "/compliance")) == posts
        finally:
            for name in ("ncc-drill-send", "ncc-drill-backup", "ncc-drill-rerun"):
                with contextlib.suppress(Exception):
                    batch.delete_namespaced_job(name, namespace,
                                                propagation_policy="Background")
                with contextlib.suppress(Exception):
                    core.delete_namespaced_secret(name, namespace)

    # (d) The archived copy can be neither deleted nor overwritten before its retain-until.
    answers = json.loads(in_exporter(
        platform, f"python - {archive['key_prefix']}manifest.json <<'EOF'\n"
                  f"{LOCKED_COPY_CHECK}\nEOF").strip().splitlines()[-1])
    assert answers["delete"] == "AccessDenied", answers
    assert answers["overwrite"] != "written" and answers["versions"] is True, answers
    assert answers["retention"] == "COMPLIANCE", answers

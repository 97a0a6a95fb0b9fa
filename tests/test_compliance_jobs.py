"""The ComplianceJobs component as rendered for every stack: CronJobs on the regulator's
calendar, secrets only in a Secret mounted as files, and an environment the job accepts."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from components.compliance import EXPORTER_PORT, SECRET_FILES, SECRET_NAME, SECRETS_MOUNT
from jobs.settings import EVIDENCE_ACCESS_KEY_ID, EVIDENCE_SECRET_ACCESS_KEY, JobSettings
from jobs.settings import SECRET_FILES as FILES_THE_JOB_READS
from stacks.render import Rendering
from tests.conftest import render_modified

REPORTS = ("daily", "weekly", "monthly", "incidents")


def cron_jobs(rendering: Rendering) -> dict[str, dict[str, Any]]:
    return {job["metadata"]["name"]: job for job in rendering.objects("CronJob")}


def test_every_report_has_a_cronjob_on_lagos_time(any_stack: Rendering) -> None:
    jobs = cron_jobs(any_stack)
    settings = any_stack.config.compliance
    # Every stack here backs its database up (the sending ones must; local does too).
    assert sorted(jobs) == sorted(f"ncc-report-{report}" for report in (*REPORTS, "backup"))
    for report in (*REPORTS, "backup"):
        spec = jobs[f"ncc-report-{report}"]["spec"]
        configured = settings.backup if report == "backup" else getattr(settings.reports,
                                                                        report)
        assert spec["schedule"] == configured.schedule
        assert spec["timeZone"] == "Africa/Lagos"
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["startingDeadlineSeconds"] == configured.starting_deadline_seconds
        assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == \
            configured.active_deadline_seconds
        assert spec["successfulJobsHistoryLimit"] == settings.history_limit
        assert spec["failedJobsHistoryLimit"] == settings.history_limit
        container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == [report]


def test_prod_schedules_are_the_regulators_calendar(prod: Rendering) -> None:
    jobs = cron_jobs(prod)
    assert jobs["ncc-report-daily"]["spec"]["schedule"] == "30 5 * * *"
    assert jobs["ncc-report-weekly"]["spec"]["schedule"] == "0 11 * * 1"
    assert jobs["ncc-report-monthly"]["spec"]["schedule"] == "0 16 5 * *"
    assert jobs["ncc-report-incidents"]["spec"]["schedule"] == "*/5 * * * *"


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["jobTemplate"]["spec"]["template"]["spec"])


def test_job_pods_are_non_root_read_only_with_secrets_as_files(prod: Rendering) -> None:
    for job in cron_jobs(prod).values():
        spec = pod_spec(job)
        container = spec["containers"][0]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[SECRETS_MOUNT]["readOnly"] is True
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["credentials"]["secret"]["secretName"] == SECRET_NAME
        assert volumes["credentials"]["secret"]["defaultMode"] == 0o440
        assert "emptyDir" in volumes["scratch"]
        assert spec["automountServiceAccountToken"] is False


def test_secret_holds_exactly_the_files_the_job_reads(prod: Rendering) -> None:
    secret = prod.get("Secret", SECRET_NAME)
    # The job's own files, and the evidence store's keys (a stack that has one).
    assert sorted(secret["stringData"]) == sorted(
        [*FILES_THE_JOB_READS, EVIDENCE_ACCESS_KEY_ID, EVIDENCE_SECRET_ACCESS_KEY])
    assert sorted(FILES_THE_JOB_READS) == sorted(SECRET_FILES)
    secret_values = [value for value in secret["stringData"].values() if len(value) > 8]
    for job in cron_jobs(prod).values():
        text = repr(job)
        assert not [value for value in secret_values if value.strip() in text]


def test_the_rendered_environment_is_valid_job_settings(any_stack: Rendering,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    container = pod_spec(cron_jobs(any_stack)["ncc-report-daily"])["containers"][0]
    environment = {item["name"]: item["value"] for item in container["env"]}
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings = JobSettings()
    config = any_stack.config.compliance
    assert settings.license_number == config.license_number
    assert settings.environment == config.ncc_environment
    assert settings.dry_run == config.dry_run
    settings.require_transport()


def test_audit_exporter_is_scraped_and_reachable_only_from_prometheus(prod: Rendering) -> None:
    exporter = prod.get("Deployment", "ncc-compliance-exporter")
    container = exporter["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["exporter", "--port", str(EXPORTER_PORT)]
    # /metrics asks for an account: the kubelet checks the port, Prometheus brings the account.
    assert container["readinessProbe"]["tcpSocket"]["port"] == "metrics"
    scrape = next(job for job in yaml.safe_load(prod.rendered_files()["prometheus.yml"])[
        "scrape_configs"] if job["job_name"] == "ncc-compliance")
    assert scrape["dns_sd_configs"][0]["names"] == [
        "ncc-compliance-exporter.acm.svc.cluster.local"]
    assert scrape["basic_auth"]["username"] == "acm-control"
    ingress = [policy for policy in prod.objects("NetworkPolicy")
               if policy["spec"]["podSelector"].get("matchLabels", {}).get(
                   "app.kubernetes.io/name") == "ncc-compliance-exporter"
               and "Ingress" in policy["spec"]["policyTypes"]]
    sources = [peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
               for policy in ingress for rule in policy["spec"].get("ingress", [])
               for peer in rule["from"]]
    assert sources == ["prometheus"]


def test_stacks_without_compliance_jobs_render_none() -> None:
    rendering = render_modified("dev", "features.complianceJobs", False)
    assert cron_jobs(rendering) == {}
    assert "ncc-compliance-exporter" not in rendering.rendered_files()["prometheus.yml"]


def test_the_job_and_the_cronjob_deadlines_read_one_calendar() -> None:
    # ncc-compliance.md, "Calendar": daily 06:00 the same morning, weekly Monday 12:00,
    # monthly the 5th 18:00 (WAT); an incident within the hour.
    from components.compliance import INCIDENT_DUE_SECONDS, REPORT_DUE_MINUTES
    from jobs.periods import due, parse_period

    expected = {("daily", "2026-11-23"): "2026-11-24T06:00:00+01:00",
                ("weekly", "2026-W48"): "2026-11-30T12:00:00+01:00",
                ("monthly", "2026-11"): "2026-12-05T18:00:00+01:00"}
    for (report, label), when in expected.items():
        moment = due(parse_period(report, label))  # type: ignore[arg-type]
        assert moment.isoformat() == when
        assert REPORT_DUE_MINUTES[report] == moment.hour * 60 + moment.minute
    assert INCIDENT_DUE_SECONDS == 3600

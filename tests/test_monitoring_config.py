"""Alert rules pass `promtool check rules` and only name metrics the platform exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.monitoring import METRICS
from components.opensips.config_files import STATISTICS, exported_metric
from stacks.render import Rendering

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# Metrics that exporters themselves provide (Prometheus, HAProxy's native exporter).
EXTERNAL_METRICS = {"up", "haproxy_backend_active_servers"}
PROMQL_WORDS = {"max", "sum", "rate", "by", "le", "histogram_quantile", "absent", "time", "or",
                "and", "unless", "count", "avg", "min", "on", "ignoring", "vector"}


def test_alert_rules_pass_promtool(any_stack: Rendering, tmp_path: Path) -> None:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool is not installed: run scripts/setup (Debian package prometheus)")
    rules = tmp_path / "alert-rules.yml"
    rules.write_text(any_stack.rendered_files()["alert-rules.yml"])
    result = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rejects_a_broken_rule(prod: Rendering, tmp_path: Path) -> None:
    rules = tmp_path / "alert-rules.yml"
    rules.write_text(prod.rendered_files()["alert-rules.yml"].replace("> 0", "> > 0", 1))
    result = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode != 0


def test_rules_name_only_exported_metrics(prod: Rendering) -> None:
    document = yaml.safe_load(prod.rendered_files()["alert-rules.yml"])
    known = set(METRICS.values()) | EXTERNAL_METRICS
    alerts = set()
    for group in document["groups"]:
        for rule in group["rules"]:
            alerts.add(rule["alert"])
            expression = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]|\b(by|without) *\([^)]*\)', "",
                                rule["expr"])
            for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expression):
                if name in PROMQL_WORDS:
                    continue
                assert name in known, (rule["alert"], name)
    assert {"AcmCircuitBreakerOpen", "AcmNoHealthyEngine", "AcmHighDetectionLatency",
            "NccComplianceRunMissedDaily"} <= alerts


def test_opensips_exports_every_counter_the_rules_use(prod: Rendering) -> None:
    config = prod.rendered_files()["opensips.cfg"]
    for statistic, name in STATISTICS.items():
        assert f'modparam("statistics", "variable", "{name}")' in config
        assert exported_metric(statistic) == f"opensips_{name}"
    exported = re.search(r'modparam\("prometheus", "statistics", "([^"]+)"\)', config)
    assert exported is not None
    assert set(exported.group(1).split()) == set(STATISTICS.values())


def test_every_scrape_job_points_at_a_headless_service(prod: Rendering) -> None:
    document = yaml.safe_load(prod.rendered_files()["prometheus.yml"])
    headless = {f"{s['metadata']['name']}.{prod.config.namespace}.svc.cluster.local"
                for s in prod.objects("Service") if s["spec"].get("clusterIP") == "None"}
    for job in document["scrape_configs"]:
        for sd in job["dns_sd_configs"]:
            assert set(sd["names"]) <= headless, job["job_name"]


def test_the_new_signals_fire_as_their_rules_say(prod: Rendering, tmp_path: Path) -> None:
    """promtool's rule unit tests on the rendered rules: a pod whose socket gets less than
    OpenSIPS asks for pages after 5 minutes (the other pod not at all), a failed run and a run
    that did not start page at once, each with the CronJob's name."""
    rules = tmp_path / "alert-rules.yml"
    rules.write_text(prod.rendered_files()["alert-rules.yml"])
    runbooks = {rule["alert"]: rule["annotations"]["runbook_url"]
                for group in yaml.safe_load(rules.read_text())["groups"]
                for rule in group["rules"]}
    capped = {"instance": "10.203.0.5:9470", "job": "opensips-sidecar"}
    full = {"instance": "10.203.0.6:9470", "job": "opensips-sidecar"}

    def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{text}}}", "values": values}

    exporter = {"instance": "10.203.0.9:9469", "job": "ncc-compliance"}
    cases = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                series("acm_opensips_udp_receive_buffer_bytes", capped, "212992x10"),
                series("acm_opensips_udp_receive_buffer_wanted_bytes", capped, "4194304x10"),
                series("acm_opensips_udp_receive_buffer_bytes", full, "4194304x10"),
                series("acm_opensips_udp_receive_buffer_wanted_bytes", full, "4194304x10"),
                series("ncc_report_last_run_failed", {**exporter, "cron_job": "ncc-report-daily"},
                       "0 0 1 1 0"),
                series("ncc_report_last_run_failed",
                       {**exporter, "cron_job": "ncc-report-weekly"}, "0x4"),
                series("ncc_report_scheduled_run_not_started",
                       {**exporter, "cron_job": "ncc-report-monthly"}, "0 1 1 1 1"),
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "AcmUdpReceiveBufferCapped", "exp_alerts": []},
                {"eval_time": "6m", "alertname": "AcmUdpReceiveBufferCapped", "exp_alerts": [{
                    "exp_labels": {**capped, "severity": "warning", "area": "sip-path"},
                    "exp_annotations": {
                        "runbook_url": runbooks["AcmUdpReceiveBufferCapped"],
                        "summary": "The OpenSIPS pod at 10.203.0.5:9470 gets a UDP receive "
                                   "buffer of 212992 bytes, below what it asks for: its node's "
                                   "net.core.rmem_max is too low, and bursts of SIP over UDP "
                                   "drop INVITEs"}}]},
                {"eval_time": "1m", "alertname": "NccReportRunFailed", "exp_alerts": []},
                {"eval_time": "2m", "alertname": "NccReportRunFailed", "exp_alerts": [{
                    "exp_labels": {"cron_job": "ncc-report-daily", "severity": "critical",
                                   "area": "compliance"},
                    "exp_annotations": {
                        "runbook_url": runbooks["NccReportRunFailed"],
                        "summary": "The newest run of ncc-report-daily failed or was killed: "
                                   "its report can miss the regulator's deadline unless it is "
                                   "run again"}}]},
                {"eval_time": "4m", "alertname": "NccReportRunFailed", "exp_alerts": []},
                {"eval_time": "1m", "alertname": "NccReportRunNotStarted", "exp_alerts": [{
                    "exp_labels": {"cron_job": "ncc-report-monthly", "severity": "critical",
                                   "area": "compliance"},
                    "exp_annotations": {
                        "runbook_url": runbooks["NccReportRunNotStarted"],
                        "summary": "ncc-report-monthly did not start at its scheduled time (or "
                                   "could not reach the report database): its report can miss "
                                   "the regulator's deadline"}}]},
            ],
        }],
    }
    unit = tmp_path / "rules-test.yml"
    unit.write_text(yaml.safe_dump(cases))
    result = subprocess.run([PROMTOOL, "test", "rules", str(unit)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_asks_for_its_account_on_every_path(tmp_path: Path) -> None:
    """Debian's real Prometheus with the web config the Monitoring part renders: the API, the
    lifecycle endpoint and the health pages answer 401 without the account, 200 with it."""
    import base64
    import socket
    import time
    import urllib.error
    import urllib.request

    from components.base.credentials import web_config
    from components.monitoring import CONTROL_USER

    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("prometheus is not installed: run scripts/setup (Debian package prometheus)")
    password = "prometheus-test-control-password"
    (tmp_path / "web.yml").write_text(web_config(CONTROL_USER, password,
                                                 "a-test-digest-key-0123456789abcdef",
                                                 "prometheus-web"))
    (tmp_path / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'data'}",
                               f"--web.config.file={tmp_path / 'web.yml'}",
                               f"--web.listen-address=127.0.0.1:{port}",
                               "--web.enable-lifecycle"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    account = "Basic " + base64.b64encode(f"{CONTROL_USER}:{password}".encode()).decode()

    def status(path: str, method: str = "GET", authorization: str | None = None) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         headers={"Authorization": authorization}
                                         if authorization else {})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return error.code
        except urllib.error.URLError:
            return 0

    try:
        deadline = time.monotonic() + 30
        while status("/-/ready", authorization=account) != 200:
            assert server.poll() is None and time.monotonic() < deadline, "no Prometheus"
            time.sleep(0.2)
        wrong = "Basic " + base64.b64encode(f"{CONTROL_USER}:nope".encode()).decode()
        for path, method in (("/api/v1/query?query=up", "GET"), ("/-/healthy", "GET"),
                             ("/-/ready", "GET"), ("/metrics", "GET"), ("/-/reload", "POST")):
            assert status(path, method) == 401, path
            assert status(path, method, wrong) == 401, path
        assert status("/api/v1/query?query=up", authorization=account) == 200
        assert status("/-/reload", "POST", account) == 200
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_prometheus_and_its_clients_use_the_account(prod: Rendering) -> None:
    statefulset = prod.get("StatefulSet", "prometheus")["spec"]["template"]["spec"]
    container = statefulset["containers"][0]
    assert "--web.config.file=/etc/prometheus/control/web-config.yml" in container["args"]
    # No probe holds a password: the kubelet checks the port.
    assert "tcpSocket" in container["readinessProbe"] and "tcpSocket" in container["livenessProbe"]
    web = yaml.safe_load(prod.get("Secret", "prometheus-control")["stringData"]["web-config.yml"])
    assert list(web["basic_auth_users"]) == ["acm-control"]
    assert web["basic_auth_users"]["acm-control"].startswith("$2b$10$")
    datasource = yaml.safe_load(prod.rendered_files()["datasources.yml"])["datasources"][0]
    assert datasource["basicAuth"] is True and datasource["basicAuthUser"] == "acm-control"
    assert datasource["secureJsonData"]["basicAuthPassword"] == \
        "$__file{/etc/grafana/prometheus/password}"
    # The exporter Prometheus scrapes asks for an account too, and Prometheus has it.
    jobs = {j["job_name"]: j for j in
            yaml.safe_load(prod.rendered_files()["prometheus.yml"])["scrape_configs"]}
    assert jobs["ncc-compliance"]["basic_auth"]["username"] == "acm-control"
    assert "dragonfly" not in jobs

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
            expression = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', "", rule["expr"])
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

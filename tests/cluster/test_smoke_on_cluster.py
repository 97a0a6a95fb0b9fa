"""The smoke suite's Kubernetes-API checks proven on the local control plane: the local stack
deployed by `pulumi up` (the Automation API, the pinned CLI and provider), the plan written by
`scripts/smoke`'s writer, then broken one way at a time by hand; each break must turn exactly
its checks red, and undoing it makes them pass again. (kwok pods cannot be exec'd into: the
in-pod checks are proven on loopback daemons in tests/test_smoke_suite.py.)"""

from __future__ import annotations

import copy
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as kube_client

from components.base.kube import CONFIG_HASH_ANNOTATION
from stacks.render import Rendering
from tests.cluster.kube import Cluster, readiness
from tests.conftest import REPO, rendering_of
from tests.engine import Engine
from tests.smoke.write_plan import longest_gap_seconds

pytestmark = pytest.mark.slow
STACK = "local"


@pytest.fixture(scope="module")
def live_stack(control_plane: Path, engine: Engine
             ) -> Iterator[tuple[Cluster, Rendering, Path]]:
    stack = engine.stack(STACK)
    stack.up(on_output=lambda _: None)
    cluster, rendering = Cluster(control_plane), rendering_of(STACK)
    try:
        # A smoke run comes after a rollout has settled: the HPAs report their replicas at
        # their controller's next sync.
        wait_for(lambda: all(s.ready for s in readiness(cluster, rendering)), timeout=90)
        yield cluster, rendering, control_plane
    finally:
        stack.destroy(on_output=lambda _: None)


def run_smoke(kubeconfig: Path, out: Path) -> dict[str, str]:
    """`scripts/smoke local --api-only`, as the platform team runs it; outcome per test."""
    answer = subprocess.run(
        [REPO / "scripts" / "smoke", STACK, "--kubeconfig", str(kubeconfig), "--api-only"],
        env={"SMOKE_OUT": str(out), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=180)
    report = out / f"{STACK}-junit.xml"
    assert report.exists(), answer.stderr
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            outcomes[case.attrib["name"]] = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            outcomes[case.attrib["name"]] = "failed"
        else:
            outcomes[case.attrib["name"]] = "passed"
    assert (answer.returncode == 0) == ("failed" not in outcomes.values()), answer.stdout
    return outcomes


def failed(outcomes: dict[str, str]) -> set[str]:
    return {name for name, outcome in outcomes.items() if outcome == "failed"}


def wait_for(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.5)


def test_longest_gap_of_the_report_schedules() -> None:
    assert longest_gap_seconds("*/5 * * * *") == 300
    assert longest_gap_seconds("30 5 * * *") == 86400
    assert longest_gap_seconds("0 11 * * 1") == 7 * 86400
    assert longest_gap_seconds("0 16 5 * *") == 31 * 86400
    assert longest_gap_seconds("0 0 1 1,7 *") == 184 * 86400


def test_api_checks_tell_healthy_from_broken(live_stack: tuple[Cluster, Rendering, Path],
                                             tmp_path: Path) -> None:
    cluster, rendering, kubeconfig = live_stack
    namespace = rendering.config.namespace
    apps, core, batch = cluster.apps(), cluster.core(), cluster.batch()

    healthy = run_smoke(kubeconfig, tmp_path / "healthy")
    passed = {name for name, outcome in healthy.items() if outcome == "passed"}
    workloads = rendering.objects("Deployment") + rendering.objects("StatefulSet")
    assert not failed(healthy), failed(healthy)
    # Every workload, Service with a selector and CronJob got its own passing check.
    assert {f"test_workload_is_available[{w['kind'].lower()}/{w['metadata']['name']}]"
            for w in workloads} <= passed
    assert {f"test_cron_job_is_scheduled_and_its_last_run_succeeded[{c['metadata']['name']}]"
            for c in rendering.objects("CronJob")} <= passed
    assert {"test_autoscalers_as_configured", "test_disruption_budgets_as_configured"} <= passed

    # HAProxy scaled below its configured replicas.
    apps.patch_namespaced_deployment_scale("haproxy", namespace, {"spec": {"replicas": 1}})
    wait_for(lambda: apps.read_namespaced_deployment("haproxy", namespace)
             .status.available_replicas == 1)
    assert failed(run_smoke(kubeconfig, tmp_path / "scaled")) == {
        "test_workload_is_available[deployment/haproxy]"}
    replicas = rendering.config.haproxy.replicas
    apps.patch_namespaced_deployment_scale("haproxy", namespace,
                                           {"spec": {"replicas": replicas}})
    wait_for(lambda: apps.read_namespaced_deployment("haproxy", namespace)
             .status.available_replicas == replicas)

    # Dragonfly stopped: its workload and both its Services lose their endpoints.
    apps.patch_namespaced_stateful_set_scale("dragonfly", namespace, {"spec": {"replicas": 0}})
    wait_for(lambda: not core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=dragonfly").items)
    assert failed(run_smoke(kubeconfig, tmp_path / "stopped")) == {
        "test_workload_is_available[statefulset/dragonfly]",
        "test_service_has_ready_endpoints[dragonfly]",
        "test_service_has_ready_endpoints[dragonfly-headless]"}
    apps.patch_namespaced_stateful_set_scale("dragonfly", namespace, {"spec": {"replicas": 1}})
    wait_for(lambda: apps.read_namespaced_stateful_set("dragonfly", namespace)
             .status.ready_replicas == 1, timeout=120)

    # A pod left on another config than the rendered one.
    pod = core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=opensips").items[0].metadata.name
    core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {
        CONFIG_HASH_ANNOTATION: "0" * 10}}})
    assert failed(run_smoke(kubeconfig, tmp_path / "stale")) == {
        "test_workload_runs_the_rendered_config[deployment/opensips]"}
    core.delete_namespaced_pod(pod, namespace)
    # Until the deletion shows in the Deployment's status, that status still counts the pod.
    wait_for(lambda: pod not in {p.metadata.name for p in core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=opensips").items}
        and _opensips_ready(cluster, rendering), timeout=90)

    # An HPA edited by hand below the configured floor.
    autoscaling = cluster.autoscaling()
    autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "opensips", namespace, {"spec": {"minReplicas": 1}})
    assert failed(run_smoke(kubeconfig, tmp_path / "hpa")) == {
        "test_autoscalers_as_configured"}
    floor = rendering.config.opensips.autoscaling.min_replicas
    autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "opensips", namespace, {"spec": {"minReplicas": floor}})

    # The daily report's last run failed: a run the real Job controller fails when it
    # exceeds its deadline (its pod can never be scheduled).
    cron_job = batch.read_namespaced_cron_job("ncc-report-daily", namespace)
    template = copy.deepcopy(cron_job.spec.job_template)
    template.spec.active_deadline_seconds = 2
    template.spec.template.spec.node_selector = {"acm-platform.ng/no-such-node": "true"}
    job = kube_client.V1Job(
        metadata=kube_client.V1ObjectMeta(
            name="ncc-report-daily-smoke-failed", namespace=namespace,
            owner_references=[kube_client.V1OwnerReference(
                api_version="batch/v1", kind="CronJob", name=cron_job.metadata.name,
                uid=cron_job.metadata.uid, controller=True)]),
        spec=template.spec)
    batch.create_namespaced_job(namespace, job)
    wait_for(lambda: any(c.type == "Failed" and c.status == "True" for c in (
        batch.read_namespaced_job("ncc-report-daily-smoke-failed", namespace)
        .status.conditions or [])))
    outcomes = run_smoke(kubeconfig, tmp_path / "cron")
    assert failed(outcomes) == {
        "test_cron_job_is_scheduled_and_its_last_run_succeeded[ncc-report-daily]"}
    batch.delete_namespaced_job("ncc-report-daily-smoke-failed", namespace,
                                propagation_policy="Foreground")

    # The same CronJob with its time zone dropped: runs on the controller's UTC clock.
    batch.patch_namespaced_cron_job("ncc-report-weekly", namespace,
                                    {"spec": {"timeZone": None}})
    assert failed(run_smoke(kubeconfig, tmp_path / "timezone")) == {
        "test_cron_job_is_scheduled_and_its_last_run_succeeded[ncc-report-weekly]"}
    batch.patch_namespaced_cron_job("ncc-report-weekly", namespace,
                                    {"spec": {"timeZone": "Africa/Lagos"}})
    assert not failed(run_smoke(kubeconfig, tmp_path / "restored"))


def _opensips_ready(cluster: Cluster, rendering: Rendering) -> bool:
    namespace = rendering.config.namespace
    status = cluster.apps().read_namespaced_deployment("opensips", namespace).status
    floor = rendering.config.opensips.autoscaling.min_replicas
    return (status.available_replicas or 0) >= floor and (status.replicas or 0) == floor


def test_the_writer_names_a_pod_per_role_for_in_pod_checks(
        live_stack: tuple[Cluster, Rendering, Path]) -> None:
    from tests.smoke.write_plan import write_plan

    _, rendering, kubeconfig = live_stack
    addresses: dict[str, str | None] = dict.fromkeys(
        ("stats_url", "dragonfly", "database", "sip_tcp", "sip_udp"))
    plan = write_plan(STACK, str(kubeconfig), None, {**addresses, "stats_url": "http://x"})
    hosts = plan["hosts"]
    assert hosts["haproxy"].startswith("kubectl://haproxy-")
    assert f"namespace={rendering.config.namespace}" in hosts["haproxy"]
    assert hosts["compliance"].startswith("kubectl://ncc-compliance-exporter-")
    assert {f["role"] for f in plan["config_files"]} <= set(hosts)
    assert plan["haproxy"]["listen"] == ["tcp://0.0.0.0:5060", "tcp://0.0.0.0:5061"]
    # The MI check runs in the sidecar of the OpenSIPS pod, on the MI URL the sidecar uses.
    assert "container=dispatcher-sync" in hosts["opensips-mi"]
    assert plan["opensips"]["mi_url"].startswith("http://127.0.0.1:")
    assert "container=opensips" in hosts["opensips"]
    assert plan["opensips"]["listen"] == [
        "udp://5060", "tcp://5060", "tcp://5061", "tcp://5070", "tcp://5071"]

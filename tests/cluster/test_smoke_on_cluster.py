"""The smoke suite proven on the local cluster's real node: the local stack deployed by
`pulumi up` (the Automation API, the pinned CLI and providers), the plan written by
`scripts/smoke`'s writer, then broken one way at a time by hand; each break must turn exactly
its checks red, and undoing it makes them pass again. The Kubernetes-API checks are broken
one way at a time with `--api-only`; the full suite (in-pod checks through testinfra's
`kubectl://` backend, the protocols through the node's addresses) runs with every check
passing, none skipped, and then with a wrong config file in an OpenSIPS pod, the MI silent, and
HAProxy without backends."""

from __future__ import annotations

import base64
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as kube_client

from components.base.kube import CONFIG_HASH_ANNOTATION
from stacks.pod_logs import pod_log
from stacks.render import Rendering
from tests.cluster.faults import A_CALL_YESTERDAY, database_rows
from tests.cluster.kube import NODE_ADDRESS, Cluster, job_ending, job_of, pod_exec, readiness
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


def run_smoke(kubeconfig: Path, out: Path, options: list[str] | None = None,
              password: str = "", haproxy_password: str = "") -> dict[str, str]:
    """`scripts/smoke local` as the platform team runs it (`--api-only` unless `options` give
    the addresses); outcome per test."""
    kubectl_folder = subprocess.run([REPO / "scripts" / "control-plane", "bin"],
                                    capture_output=True, text=True, check=True).stdout.strip()
    answer = subprocess.run(
        [REPO / "scripts" / "smoke", STACK, "--kubeconfig", str(kubeconfig),
         *(options if options is not None else ["--api-only"])],
        # testinfra's kubectl:// hosts run the pinned kubectl.
        env={"SMOKE_OUT": str(out), "PATH": f"{kubectl_folder}:/usr/bin:/bin",
             "SMOKE_DB_PASSWORD": password, "SMOKE_HAPROXY_PASSWORD": haproxy_password},
        capture_output=True, text=True, timeout=300)
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
    job = job_of(batch.read_namespaced_cron_job("ncc-report-daily", namespace),
                 "ncc-report-daily-smoke-failed", manual=False)
    job.spec.active_deadline_seconds = 2
    job.spec.template.spec.node_selector = {"acm-platform.ng/no-such-node": "true"}
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


STOPPED_PIDS = "ps -eo pid=,stat= | awk '$2 ~ /^T/ {print $1}'"


def full_smoke_options(cluster: Cluster, rendering: Rendering) -> list[str]:
    """The addresses `scripts/smoke` needs for the full suite, as this host reaches them: pod
    addresses on the node's bridge, ClusterIPs through kube-proxy, NodePorts on the node."""
    core, namespace = cluster.core(), rendering.config.namespace

    def pod_addresses(selector: str) -> list[str]:
        return sorted(p.status.pod_ip for p in core.list_namespaced_pod(
            namespace, label_selector=selector).items if p.status.phase == "Running")

    def cluster_ip(service: str) -> str:
        return str(core.read_namespaced_service(service, namespace).spec.cluster_ip)

    def node_port(service: str, name: str) -> int:
        ports = core.read_namespaced_service(service, namespace).spec.ports
        return next(p.node_port for p in ports if p.name == name)

    haproxy = pod_addresses("app.kubernetes.io/name=haproxy")[0]
    options = [
        "--stats-url", f"http://{haproxy}:{rendering.config.haproxy.ports.stats}/stats;csv",
        "--dragonfly", f"{cluster_ip('dragonfly')}:{rendering.config.dragonfly.port}",
        "--database", f"{cluster_ip('yb-tserver')}:{rendering.config.yugabyte.ysql_port}",
        "--sip-tcp", f"{NODE_ADDRESS}:{node_port('haproxy-sip', 'sip-tcp')}",
        "--sip-udp", f"{NODE_ADDRESS}:{node_port('opensips-sip-udp', 'sip-udp')}",
    ]
    for engine in pod_addresses("app.kubernetes.io/name in (acm-engine,acm-engine-backup)"):
        options += ["--engine-health",
                    f"http://{engine}:{rendering.config.acm_engine.http_port}/health"]
    return options


def test_the_full_suite_passes_on_real_pods_and_each_break_turns_its_checks_red(
        live_stack: tuple[Cluster, Rendering, Path], tmp_path: Path) -> None:

    cluster, rendering, kubeconfig = live_stack
    namespace, core = rendering.config.namespace, cluster.core()
    # The operator's way to the password: the Secret the stack made (the rendering holds
    # placeholders only).
    secret = core.read_namespaced_secret("acm-database", namespace)
    password = base64.b64decode(secret.data["password"]).decode()
    haproxy_secret = core.read_namespaced_secret("haproxy-control", namespace)
    haproxy_password = base64.b64decode(haproxy_secret.data["password"]).decode()

    def smoke(name: str) -> dict[str, str]:
        return run_smoke(kubeconfig, tmp_path / name, full_smoke_options(cluster, rendering),
                         password, haproxy_password)

    healthy = smoke("healthy")
    assert not failed(healthy), failed(healthy)
    skipped = {name for name, outcome in healthy.items() if outcome == "skipped"}
    assert not skipped, skipped
    in_pod = {"test_haproxy_process_runs", "test_haproxy_listens_on_its_sip_sockets",
              "test_opensips_runs_and_listens_on_its_sip_sockets", "test_opensips_mi_answers",
              "test_compliance_secrets_are_mounted_restrictively",
              "test_haproxy_sees_opensips_backends_up", "test_sip_options_through_haproxy_tcp",
              "test_sip_options_over_the_udp_service",
              "test_dragonfly_answers_and_refuses_strangers",
              "test_database_accepts_a_connection", "test_acm_engines_report_healthy"}
    assert in_pod <= {name for name, outcome in healthy.items() if outcome == "passed"}
    config_checks = {name for name in healthy if name.startswith("test_config_file_is_the")}
    assert any("opensips" in name for name in config_checks), config_checks

    def in_pod(pod: str, command: str) -> str:
        return pod_exec(core, pod, namespace, ["sh", "-c", command], container="opensips")

    # A wrong config file: the Deployment edited by hand to mount a copy of its ConfigMap
    # with one line added (the rendered ConfigMaps are immutable). OpenSIPS runs happily on
    # it; only the check that compares the file with the rendered one sees the difference.
    cfg = next(n for n in config_checks if n.endswith("/etc/opensips/opensips.cfg]"))
    apps = cluster.apps()
    deployment = apps.read_namespaced_deployment("opensips", namespace)
    volumes = deployment.spec.template.spec.volumes
    index = next(i for i, v in enumerate(volumes) if v.name == "config")
    # The config folder is projected: the rendered ConfigMap, then the credentials Secret.
    rendered_name = volumes[index].projected.sources[0].config_map.name
    rendered = core.read_namespaced_config_map(rendered_name, namespace)
    core.create_namespaced_config_map(namespace, kube_client.V1ConfigMap(
        metadata=kube_client.V1ObjectMeta(name="opensips-config-by-hand"),
        data={**rendered.data,
              "opensips.cfg": rendered.data["opensips.cfg"] + "# edited by hand\n"}))

    def mount(name: str) -> None:
        apps.patch_namespaced_deployment("opensips", namespace, [{
            "op": "replace",
            "path": f"/spec/template/spec/volumes/{index}/projected/sources/0/configMap/name",
            "value": name}])
        wait_for(lambda: _rolled_out(cluster, rendering), timeout=240)

    mount("opensips-config-by-hand")
    try:
        assert failed(smoke("config")) == {cfg}
    finally:
        mount(rendered_name)
        core.delete_namespaced_config_map("opensips-config-by-hand", namespace)
    opensips = sorted(p.metadata.name for p in core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=opensips").items
        if p.status.phase == "Running" and p.metadata.deletion_timestamp is None)[0]

    # The MI silent: every OpenSIPS process of the pod the writer picks (the first by name)
    # stopped with SIGSTOP. The processes stay and the kernel keeps their sockets listening,
    # so what needs no answer passes; what needs one from this pod fails.
    in_pod(opensips, "kill -STOP -1; kill -STOP 1")
    try:
        broken = failed(smoke("mi"))
    finally:
        # Every stopped process by its pid, until none is left stopped (a single `kill -CONT
        # -1` once left the workers stopped while the main process ran on).
        wait_for(lambda: not in_pod(opensips, STOPPED_PIDS + " | xargs -r kill -CONT; "
                                    + STOPPED_PIDS).strip(), timeout=30)
    assert "test_opensips_mi_answers" in broken, broken
    assert broken <= {"test_opensips_mi_answers", "test_sip_options_over_the_udp_service",
                      "test_sip_options_through_haproxy_tcp",
                      "test_haproxy_sees_opensips_backends_up"}, broken
    wait_for(lambda: not failed(smoke("mi-back")), timeout=120)

    # HAProxy without backends: OpenSIPS scaled to zero (an HPA leaves a Deployment at zero
    # replicas alone until it is scaled up again).
    apps.patch_namespaced_deployment_scale("opensips", namespace, {"spec": {"replicas": 0}})
    wait_for(lambda: not [p for p in core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=opensips").items], timeout=120)
    try:
        broken = failed(smoke("no-backends"))
        assert {"test_haproxy_sees_opensips_backends_up",
                "test_sip_options_through_haproxy_tcp"} <= broken, broken
        # Everything else that turns red is OpenSIPS itself being gone (its pods, files,
        # sockets, Service endpoints, its HPA below the floor) and HAProxy reporting itself
        # unready without a backend (its workload and Service endpoints); nothing unrelated.
        assert all("opensips" in name or "haproxy" in name or "sip_options" in name
                   or name in ("test_autoscalers_as_configured",
                               "test_disruption_budgets_as_configured")
                   for name in broken), sorted(broken)
    finally:
        apps.patch_namespaced_deployment_scale(
            "opensips", namespace,
            {"spec": {"replicas": rendering.config.opensips.autoscaling.min_replicas}})
        wait_for(lambda: _opensips_ready(cluster, rendering), timeout=180)
        # HAProxy reports itself ready again once a backend is up.
        wait_for(lambda: all(s.ready for s in readiness(cluster, rendering)), timeout=180)


def test_a_report_run_completes_on_the_real_node_and_the_smoke_check_sees_it(
        live_stack: tuple[Cluster, Rendering, Path], tmp_path: Path) -> None:
    """The daily report's CronJob template run now (as `kubectl create job --from` does): the
    real job image, built in this run, against the PostgreSQL stand-in, in dry run."""
    cluster, rendering, kubeconfig = live_stack
    namespace, batch, core = rendering.config.namespace, cluster.batch(), cluster.core()
    database_rows(cluster, namespace, A_CALL_YESTERDAY)
    batch.create_namespaced_job(namespace, job_of(
        batch.read_namespaced_cron_job("ncc-report-daily", namespace), "ncc-report-daily-now"))

    wait_for(lambda: job_ending(cluster, namespace, "ncc-report-daily-now") is not None,
             timeout=240)
    pod = core.list_namespaced_pod(namespace,
                                   label_selector="job-name=ncc-report-daily-now").items[0]
    log = pod_log(core, pod.metadata.name, namespace)
    assert job_ending(cluster, namespace, "ncc-report-daily-now") == "Complete", log
    assert pod.spec.node_name == "localhost"
    assert pod.status.container_statuses[0].image.startswith("127.0.0.1:5000/acm/ncc-compliance:")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0, log
    # The period that ended yesterday (Lagos), generated; in dry run nothing is sent.
    assert re.search(r"^daily \d{4}-\d{2}-\d{2}: generated$", log, re.M), log
    assert "submitted" not in log and "uploaded" not in log, log
    outcomes = run_smoke(kubeconfig, tmp_path / "after-run")
    assert outcomes[
        "test_cron_job_is_scheduled_and_its_last_run_succeeded[ncc-report-daily]"] == "passed"
    assert not failed(outcomes), failed(outcomes)


def _rolled_out(cluster: Cluster, rendering: Rendering) -> bool:
    namespace = rendering.config.namespace
    live = cluster.apps().read_namespaced_deployment("opensips", namespace)
    status = live.status
    pods = cluster.core().list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=opensips").items
    return ((status.observed_generation or 0) >= live.metadata.generation
            and status.updated_replicas == status.replicas == status.available_replicas
            and len(pods) == status.replicas)


def _opensips_ready(cluster: Cluster, rendering: Rendering) -> bool:
    namespace = rendering.config.namespace
    status = cluster.apps().read_namespaced_deployment("opensips", namespace).status
    floor = rendering.config.opensips.autoscaling.min_replicas
    return (status.available_replicas or 0) >= floor and (status.replicas or 0) == floor


def test_the_writer_names_a_pod_per_role_for_in_pod_checks(
        live_stack: tuple[Cluster, Rendering, Path]) -> None:
    from tests.smoke.write_plan import write_plan

    cluster, rendering, kubeconfig = live_stack
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
    # On the checked pod's own address: OpenSIPS binds each interface, never 0.0.0.0.
    pod = hosts["opensips"].split("//", 1)[1].split("?", 1)[0]
    address = cluster.core().read_namespaced_pod(pod, rendering.config.namespace).status.pod_ip
    assert plan["opensips"]["listen"] == [
        f"{spec[:6]}{address}:{spec[6:]}" for spec in
        ("udp://5060", "tcp://5060", "tcp://5061", "tcp://5070", "tcp://5071")]

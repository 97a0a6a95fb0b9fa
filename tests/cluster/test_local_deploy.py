"""The local stack on a real kube-apiserver (scripts/control-plane): deploy, no-op, roll, evict,
destroy. The tests run in file order and share one deployment; the last one destroys it.

The API server, controller manager and scheduler are the real v1.37.2 programs; kwok plays the
kubelets, so pods become Running and Ready without containers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException

from stacks.deploy import ApplyReport, Cluster, applied_objects, deploy, destroy, readiness
from stacks.render import Rendering
from tests.conftest import deployable, deployable_values, set_path

pytestmark = pytest.mark.slow

STACK = "local"


@pytest.fixture(scope="module")
def cluster(control_plane: Path) -> Cluster:
    return Cluster(control_plane)


@pytest.fixture(scope="module")
def rendering() -> Rendering:
    return deployable(STACK)


@pytest.fixture(scope="module")
def first_deploy(cluster: Cluster, rendering: Rendering) -> Iterator[ApplyReport]:
    report = deploy(cluster, rendering, timeout=180)
    yield report
    # Whatever a failing test left behind goes; the last test checks destroy itself.
    destroy(cluster, STACK, rendering.config.namespace)


def apps(cluster: Cluster) -> kube_client.AppsV1Api:
    return kube_client.AppsV1Api(cluster.api_client)


def live(cluster: Cluster, manifest: dict[str, Any]) -> dict[str, Any]:
    found = cluster.read(manifest)
    assert found is not None, f"{manifest['kind']} {manifest['metadata']['name']} is missing"
    result: dict[str, Any] = found.to_dict()
    return result


def replica_sets(cluster: Cluster, namespace: str, deployment: str) -> dict[str, int]:
    """ReplicaSet name -> desired replicas, for the ReplicaSets a Deployment owns."""
    listed = apps(cluster).list_namespaced_replica_set(namespace)
    return {
        rs.metadata.name: rs.spec.replicas
        for rs in listed.items
        if any(o.kind == "Deployment" and o.name == deployment
               for o in rs.metadata.owner_references or [])
    }


def test_first_deploy_creates_every_object_and_reaches_ready(
    first_deploy: ApplyReport, cluster: Cluster, rendering: Rendering
) -> None:
    assert len(first_deploy.created) == len(rendering.manifests)
    assert not first_deploy.updated and not first_deploy.deleted
    states = readiness(cluster, rendering)
    workloads = [m for m in rendering.manifests if m["kind"] in ("Deployment", "StatefulSet")]
    assert len([s for s in states if s.ref.kind in ("Deployment", "StatefulSet")]) == len(workloads)
    assert all(state.ready for state in states), [s for s in states if not s.ready]


def test_a_second_deploy_changes_nothing(
    first_deploy: ApplyReport, cluster: Cluster, rendering: Rendering
) -> None:
    again = deploy(cluster, rendering, timeout=60)
    assert again.changes == 0, again.summary()
    assert len(again.unchanged) == len(rendering.manifests)


@pytest.mark.parametrize("kind, fields", [
    ("HorizontalPodAutoscaler", ["spec.minReplicas", "spec.maxReplicas", "spec.metrics",
                                 "spec.scaleTargetRef", "spec.behavior"]),
    ("PodDisruptionBudget", ["spec.minAvailable", "spec.selector"]),
    ("CronJob", ["spec.schedule", "spec.timeZone", "spec.concurrencyPolicy",
                 "spec.startingDeadlineSeconds", "spec.jobTemplate.spec.activeDeadlineSeconds"]),
    ("NetworkPolicy", ["spec.podSelector", "spec.policyTypes", "spec.ingress", "spec.egress"]),
    ("Service", ["spec.type", "spec.selector", "spec.clusterIP", "spec.externalTrafficPolicy",
                 "spec.sessionAffinity", "spec.publishNotReadyAddresses"]),
])
def test_objects_exist_as_configured(
    first_deploy: ApplyReport, cluster: Cluster, rendering: Rendering, kind: str,
    fields: list[str],
) -> None:
    manifests = rendering.objects(kind)
    assert manifests, f"the local stack renders no {kind}"
    for manifest in manifests:
        found = live(cluster, manifest)
        name = manifest["metadata"]["name"]
        for dotted in fields:
            wanted = _at(manifest, dotted)
            if wanted is None:
                continue
            actual = _at(found, dotted)
            if actual is None and wanted is False:
                actual = False  # the API server omits false booleans
            assert actual == wanted, f"{kind} {name}: {dotted}"


def test_services_keep_their_ports(
    first_deploy: ApplyReport, cluster: Cluster, rendering: Rendering
) -> None:
    for manifest in rendering.objects("Service"):
        found = live(cluster, manifest)
        rendered = {(p["name"], p["port"], p.get("protocol", "TCP"))
                    for p in manifest["spec"]["ports"]}
        served = {(p["name"], p["port"], p["protocol"]) for p in found["spec"]["ports"]}
        assert served == rendered, manifest["metadata"]["name"]


def test_cron_jobs_run_on_lagos_time(first_deploy: ApplyReport, cluster: Cluster,
                                     rendering: Rendering) -> None:
    batch = kube_client.BatchV1Api(cluster.api_client)
    listed = batch.list_namespaced_cron_job(rendering.config.namespace)
    assert {c.metadata.name for c in listed.items} == {
        "ncc-report-daily", "ncc-report-weekly", "ncc-report-monthly", "ncc-report-incidents"}
    assert {c.spec.time_zone for c in listed.items} == {"Africa/Lagos"}


def test_a_config_change_rolls_only_the_workloads_that_read_it(
    first_deploy: ApplyReport, cluster: Cluster, rendering: Rendering
) -> None:
    namespace = rendering.config.namespace
    deployments = [m["metadata"]["name"] for m in rendering.objects("Deployment")]
    before = {name: replica_sets(cluster, namespace, name) for name in deployments}
    values = deployable_values(STACK)
    set_path(values, "haproxy.healthCheck.interSeconds", 7)
    changed = deployable(STACK, values)
    old_config = {m["metadata"]["name"] for m in rendering.objects("ConfigMap")}
    new_config = {m["metadata"]["name"] for m in changed.objects("ConfigMap")}
    assert len(new_config - old_config) == 1

    try:
        report = deploy(cluster, changed, timeout=120)
        after = {name: replica_sets(cluster, namespace, name) for name in deployments}
        assert {ref.name for ref in report.created} == new_config - old_config
        # The replaced ConfigMap is pruned once the new pods are ready.
        assert {ref.name for ref in report.deleted} == old_config - new_config
        assert {ref.name for ref in report.updated} == {"haproxy"}
        new_sets = set(after["haproxy"]) - set(before["haproxy"])
        assert len(new_sets) == 1, after["haproxy"]
        (new_set,) = new_sets
        assert after["haproxy"][new_set] == rendering.config.haproxy.replicas
        assert all(after["haproxy"][old] == 0 for old in before["haproxy"])
        for name in deployments:
            if name != "haproxy":
                assert after[name] == before[name], f"{name} rolled on a HAProxy-only change"
    finally:
        deploy(cluster, rendering, timeout=120)


def test_evictions_stop_at_the_disruption_budgets(
    first_deploy: ApplyReport, cluster: Cluster, rendering: Rendering
) -> None:
    core = cluster.core()
    namespace = rendering.config.namespace
    nodes = [n.metadata.name for n in core.list_node().items]
    # A drain cordons first: with nowhere to reschedule, each eviction is a lost pod, so the
    # budget alone decides how many go.
    for node in nodes:
        core.patch_node(node, {"spec": {"unschedulable": True}})
    try:
        for budget in rendering.objects("PodDisruptionBudget"):
            selector = ",".join(
                f"{k}={v}" for k, v in budget["spec"]["selector"]["matchLabels"].items())
            pods = core.list_namespaced_pod(namespace, label_selector=selector).items
            floor = budget["spec"]["minAvailable"]
            evicted, refused = _evict_all(core, namespace, [p.metadata.name for p in pods])
            name = budget["metadata"]["name"]
            assert len(evicted) == len(pods) - floor, f"{name}: evicted {evicted}"
            assert len(refused) == floor, f"{name}: refused {refused}"
    finally:
        for node in nodes:
            core.patch_node(node, {"spec": {"unschedulable": False}})
    states = _wait_ready(cluster, rendering)
    assert all(s.ready for s in states), [s for s in states if not s.ready]


def test_destroy_leaves_nothing(first_deploy: ApplyReport, cluster: Cluster,
                                rendering: Rendering) -> None:
    namespace = rendering.config.namespace
    deleted = destroy(cluster, STACK, namespace)
    assert deleted == len(rendering.manifests)
    assert list(applied_objects(cluster, STACK, namespace)) == []
    with pytest.raises(ApiException) as gone:
        cluster.core().read_namespace(namespace)
    assert gone.value.status == 404
    for manifest in rendering.objects("PriorityClass"):
        assert cluster.read(manifest) is None


def _evict_all(core: kube_client.CoreV1Api, namespace: str,
               pods: list[str]) -> tuple[list[str], list[str]]:
    evicted, refused = [], []
    for pod in pods:
        eviction = kube_client.V1Eviction(
            metadata=kube_client.V1ObjectMeta(name=pod, namespace=namespace))
        try:
            core.create_namespaced_pod_eviction(pod, namespace, eviction)
            evicted.append(pod)
        except ApiException as error:
            assert error.status == 429, error.body  # TooManyRequests: the budget said no
            refused.append(pod)
    return evicted, refused


def _wait_ready(cluster: Cluster, rendering: Rendering, timeout: float = 120) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        states = readiness(cluster, rendering)
        if all(s.ready for s in states) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def _at(document: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document

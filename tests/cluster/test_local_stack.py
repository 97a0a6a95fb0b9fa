"""`pulumi up` of the local stack onto the local control plane, through the Automation API (a
LocalWorkspace on this repository, the pinned CLI and Kubernetes provider): to Ready, a second
up with no changes, a HAProxy-only change that touches only HAProxy, evictions stopped by the
PDBs, and destroy leaving nothing. The tests run in file order and share one stack; the last
one destroys it.

The API server, controller manager and scheduler are the real v1.37.2 programs; kwok plays the
kubelets, so pods become Running and Ready without containers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as kube_client
from kubernetes.client.exceptions import ApiException
from pulumi import automation as auto

from stacks.render import Rendering
from tests.cluster.kube import Cluster, readiness
from tests.conftest import rendering_of
from tests.engine import CHANGING, Engine, changes, stack_document, write_stack_document

pytestmark = pytest.mark.slow

STACK = "local"


class Operations:
    """What the engine did to each resource in one update: URN -> operation."""

    def __init__(self) -> None:
        self.by_urn: dict[str, str] = {}

    def __call__(self, event: auto.EngineEvent) -> None:
        outputs = event.res_outputs_event
        if outputs is not None:
            self.by_urn[outputs.metadata.urn] = outputs.metadata.op.value

    def changed(self) -> dict[str, str]:
        return {urn: op for urn, op in self.by_urn.items() if op in CHANGING}


@pytest.fixture(scope="module")
def cluster(control_plane: Path) -> Cluster:
    return Cluster(control_plane)


@pytest.fixture(scope="module")
def rendering() -> Rendering:
    return rendering_of(STACK)


@pytest.fixture(scope="module")
def stack(engine: Engine) -> Iterator[auto.Stack]:
    local = engine.stack(STACK)
    yield local
    # Whatever a failing test left behind goes; the last test checks destroy itself.
    local.destroy(on_output=lambda _: None)


@pytest.fixture(scope="module")
def first_up(stack: auto.Stack) -> auto.UpResult:
    operations = Operations()
    result = stack.up(on_event=operations, on_output=lambda _: None)
    result.operations = operations  # type: ignore[attr-defined]
    return result


def counted_resources(stack: auto.Stack) -> int:
    """The resources an update's summary counts: all the stack tracks but default providers
    (here pulumi-docker's), which the engine registers without counting them."""
    resources = stack.export_stack().deployment["resources"]
    return sum(1 for r in resources if not r["urn"].rsplit("::", 1)[-1].startswith("default_"))


def urns_of(stack: auto.Stack, kind: str) -> dict[str, str]:
    """Kubernetes object name -> URN, for the stack's resources of one kind."""
    deployment = stack.export_stack().deployment or {}
    found = {}
    for resource in deployment.get("resources", []):
        if resource["type"].endswith(f":{kind}"):
            name = (resource.get("outputs") or {}).get("metadata", {}).get("name")
            found[name] = resource["urn"]
    return found


def replica_sets(cluster: Cluster, namespace: str, deployment: str) -> dict[str, int]:
    """ReplicaSet name -> desired replicas, for the ReplicaSets a Deployment owns."""
    listed = cluster.apps().list_namespaced_replica_set(namespace)
    return {
        rs.metadata.name: rs.spec.replicas
        for rs in listed.items
        if any(o.kind == "Deployment" and o.name == deployment
               for o in rs.metadata.owner_references or [])
    }


def test_up_creates_the_stack_and_every_workload_is_ready(
    first_up: auto.UpResult, cluster: Cluster, rendering: Rendering, stack: auto.Stack
) -> None:
    summary = first_up.summary
    assert summary.result == "succeeded"
    # Everything the engine now tracks was created by this update (the stack itself and the
    # provider included), and every object the program renders exists in the cluster.
    assert changes(summary.resource_changes, "create") == counted_resources(stack)
    for manifest in rendering.manifests:
        assert cluster.read(manifest) is not None, manifest["metadata"]["name"]
    # The provider waited for every Deployment and StatefulSet; an HPA reports its replicas at
    # its controller's next sync (every 15 s).
    _wait(lambda: all(state.ready for state in readiness(cluster, rendering)), 60)
    assert [s for s in readiness(cluster, rendering) if s.kind != "HorizontalPodAutoscaler"]


def test_every_pod_runs_on_the_real_node_from_an_image_built_in_this_run(
    first_up: auto.UpResult, cluster: Cluster, rendering: Rendering, stack: auto.Stack
) -> None:
    built = {r["outputs"]["imageName"]: r["outputs"]["repoDigest"]
             for r in stack.export_stack().deployment["resources"]
             if r["type"] == "docker:index/image:Image"}
    # OpenSIPS and its sidecar, HAProxy, Prometheus, the job, the stand-ins (the object store
    # among them): all built here.
    assert {name.split("/")[-1].split(":")[0] for name in built} == {
        "opensips", "python", "haproxy", "prometheus", "alertmanager", "ncc-compliance", "redis",
        "postgresql", "sip-stand-in", "object-store"}
    node = cluster.core().read_node("localhost")
    assert node.status.node_info.container_runtime_version == "containerd://2.4.2"
    assert node.status.node_info.kubelet_version == "v1.37.2"
    pods = cluster.core().list_namespaced_pod(rendering.config.namespace).items
    serving = [p for p in pods if not (p.metadata.owner_references or [])
               or p.metadata.owner_references[0].kind != "Job"]
    assert {p.metadata.labels["app.kubernetes.io/name"] for p in serving} >= {
        "opensips", "haproxy", "acm-engine", "acm-engine-backup", "dragonfly", "yb-tserver",
        "prometheus", "alertmanager", "ncc-compliance-exporter", "media-gateway-stand-in",
        "object-store"}
    for pod in serving:
        name = pod.metadata.name
        assert pod.spec.node_name == "localhost", name
        assert pod.status.pod_ip.startswith("10.203.0."), name
        statuses = [*(pod.status.init_container_statuses or []),
                    *(pod.status.container_statuses or [])]
        assert statuses, name
        for status in statuses:
            # Started by containerd from the digest pulumi-docker pushed in this run, and
            # passing its probes (ready), not merely scheduled.
            assert status.image in built, f"{name}/{status.name}: {status.image}"
            digest = built[status.image].split("@", 1)[1]
            assert status.image_id.endswith(digest), f"{name}/{status.name}"
            assert status.ready and status.state.running is not None, f"{name}/{status.name}"


def test_a_second_up_changes_nothing(first_up: auto.UpResult, stack: auto.Stack) -> None:
    again = stack.up(on_output=lambda _: None)
    assert changes(again.summary.resource_changes, *CHANGING) == 0, again.summary.resource_changes
    assert again.summary.resource_changes == {"same": counted_resources(stack)}


def test_objects_exist_as_configured(first_up: auto.UpResult, cluster: Cluster,
                                     rendering: Rendering) -> None:
    fields = {
        "HorizontalPodAutoscaler": ["spec.minReplicas", "spec.maxReplicas", "spec.metrics",
                                    "spec.scaleTargetRef", "spec.behavior"],
        "PodDisruptionBudget": ["spec.minAvailable", "spec.maxUnavailable", "spec.selector"],
        "CronJob": ["spec.schedule", "spec.timeZone", "spec.concurrencyPolicy",
                    "spec.startingDeadlineSeconds",
                    "spec.jobTemplate.spec.activeDeadlineSeconds"],
        "NetworkPolicy": ["spec.podSelector", "spec.policyTypes", "spec.ingress",
                          "spec.egress"],
        "Service": ["spec.type", "spec.selector", "spec.clusterIP", "spec.externalTrafficPolicy",
                    "spec.sessionAffinity", "spec.publishNotReadyAddresses"],
    }
    for kind, paths in fields.items():
        manifests = rendering.objects(kind)
        assert manifests, f"the local stack renders no {kind}"
        for manifest in manifests:
            found = cluster.read(manifest)
            assert found is not None, manifest["metadata"]["name"]
            live = found.to_dict()
            for dotted in paths:
                wanted = _at(manifest, dotted)
                if wanted is None:
                    continue
                actual = _at(live, dotted)
                if actual is None and wanted is False:
                    actual = False  # the API server omits false booleans
                assert actual == wanted, f"{kind} {manifest['metadata']['name']}: {dotted}"
    for manifest in rendering.objects("Service"):
        live = cluster.read(manifest).to_dict()
        rendered = {(p["name"], p["port"], p.get("protocol", "TCP"))
                    for p in manifest["spec"]["ports"]}
        assert {(p["name"], p["port"], p["protocol"]) for p in live["spec"]["ports"]} == rendered


def test_a_haproxy_only_change_updates_only_haproxy(
    first_up: auto.UpResult, stack: auto.Stack, cluster: Cluster, rendering: Rendering,
    tmp_path: Path,
) -> None:
    namespace = rendering.config.namespace
    deployments = [m["metadata"]["name"] for m in rendering.objects("Deployment")]
    before = {name: replica_sets(cluster, namespace, name) for name in deployments}
    old_config = urns_of(stack, "ConfigMap")
    document = stack_document(STACK)
    document["config"]["acm-platform:haproxy"]["healthCheck"] = {"interSeconds": 7}
    changed_file = write_stack_document(document, tmp_path / f"Pulumi.{STACK}.yaml")

    operations = Operations()
    try:
        result = stack.up(config_file=str(changed_file), on_event=operations,
                          on_output=lambda _: None)
        assert result.summary.result == "succeeded"
        changed = operations.changed()
        haproxy_config = next(urn for name, urn in old_config.items()
                              if name.startswith("haproxy-config-"))
        haproxy_deployment = urns_of(stack, "Deployment")["haproxy"]
        # The content-named ConfigMap is replaced (a new name, created before the old one
        # goes), the Deployment that mounts it updated; nothing else is touched.
        assert set(changed) == {haproxy_config, haproxy_deployment}, changed
        assert changed[haproxy_deployment] == "update"
        assert changed[haproxy_config] in ("replace", "create-replacement", "delete-replaced")
        new_name = next(name for name in urns_of(stack, "ConfigMap")
                        if name.startswith("haproxy-config-"))
        assert new_name not in old_config
        after = {name: replica_sets(cluster, namespace, name) for name in deployments}
        new_sets = set(after["haproxy"]) - set(before["haproxy"])
        assert len(new_sets) == 1, after["haproxy"]
        assert after["haproxy"][new_sets.pop()] == rendering.config.haproxy.replicas
        assert all(after["haproxy"][old] == 0 for old in before["haproxy"])
        for name in deployments:
            if name != "haproxy":
                assert after[name] == before[name], f"{name} rolled on a HAProxy-only change"
    finally:
        restored = stack.up(on_output=lambda _: None)
        assert restored.summary.result == "succeeded"


def test_evictions_stop_at_the_disruption_budgets(
    first_up: auto.UpResult, cluster: Cluster, rendering: Rendering
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
            spec = budget["spec"]
            floor = spec["minAvailable"] if "minAvailable" in spec else \
                len(pods) - spec["maxUnavailable"]
            evicted, refused = _evict_all(core, namespace, [p.metadata.name for p in pods])
            name = budget["metadata"]["name"]
            assert len(evicted) == len(pods) - floor, f"{name}: evicted {evicted}"
            assert len(refused) == floor, f"{name}: refused {refused}"
    finally:
        for node in nodes:
            core.patch_node(node, {"spec": {"unschedulable": False}})
    _wait(lambda: all(s.ready for s in readiness(cluster, rendering)), 120)


def test_destroy_leaves_nothing(first_up: auto.UpResult, stack: auto.Stack, cluster: Cluster,
                                rendering: Rendering) -> None:
    tracked = counted_resources(stack)
    result = stack.destroy(on_output=lambda _: None)
    assert changes(result.summary.resource_changes, "delete") == tracked
    assert not (stack.export_stack().deployment or {}).get("resources")
    assert not cluster.namespace_exists(rendering.config.namespace)
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


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s"
        time.sleep(0.5)


def _at(document: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document

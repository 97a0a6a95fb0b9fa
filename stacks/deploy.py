"""Deploy a rendered stack to a cluster through the Kubernetes API, and take it down again.

This is the bridge until the Pulumi CLI can be built on our machines (see README,
"Toolchain"): it sends the exact objects the Pulumi program registers (`stacks/render.py`
runs the same program) with server-side apply, so the API server validates, defaults and
admits them as it would under `pulumi up`. What it adds is what the engine would do:

- a change report: created / updated / unchanged per object, from the object's
  resourceVersion before and after (a server-side apply that changes nothing keeps it);
- pruning: objects this field manager applied before and the program no longer registers
  (the previous content-named ConfigMap after a config change) are deleted once the
  workloads are ready, which is Pulumi's create-before-delete order;
- readiness: Deployments and StatefulSets rolled out at their desired replicas, HPAs at or
  above their floor, as the Kubernetes provider's await logic checks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.resource import Resource

from stacks.config import PROJECT
from stacks.render import APPLY_ORDER, Rendering

FIELD_MANAGER = "acm-platform"
CLUSTER_SCOPED = frozenset({"Namespace", "PriorityClass"})
# The API version each kind the program may register is looked up under when pruning.
API_VERSIONS = {
    "Namespace": "v1", "PriorityClass": "scheduling.k8s.io/v1",
    "NetworkPolicy": "networking.k8s.io/v1", "ServiceAccount": "v1",
    "Role": "rbac.authorization.k8s.io/v1", "RoleBinding": "rbac.authorization.k8s.io/v1",
    "Secret": "v1", "ConfigMap": "v1", "PersistentVolumeClaim": "v1", "Service": "v1",
    "StatefulSet": "apps/v1", "Deployment": "apps/v1", "CronJob": "batch/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2", "PodDisruptionBudget": "policy/v1",
}


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    name: str
    namespace: str | None

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


def object_ref(manifest: dict[str, Any]) -> ObjectRef:
    metadata = manifest["metadata"]
    return ObjectRef(manifest["kind"], metadata["name"], metadata.get("namespace"))


@dataclass
class ApplyReport:
    created: list[ObjectRef] = field(default_factory=list)
    updated: list[ObjectRef] = field(default_factory=list)
    unchanged: list[ObjectRef] = field(default_factory=list)
    deleted: list[ObjectRef] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deleted)

    def summary(self) -> str:
        return (f"{len(self.created)} created, {len(self.updated)} updated, "
                f"{len(self.deleted)} deleted, {len(self.unchanged)} unchanged")


@dataclass(frozen=True)
class Readiness:
    ref: ObjectRef
    ready: bool
    detail: str


class DeployError(RuntimeError):
    """The cluster refused an object or did not become ready; the message says which."""


class Cluster:
    """The API of one cluster, found through a kubeconfig file."""

    def __init__(self, kubeconfig: Path, context: str | None = None) -> None:
        if not kubeconfig.is_file():
            raise DeployError(f"kubeconfig {kubeconfig} does not exist (is the cluster up?)")
        # The kubernetes package is only partly annotated; these two are not.
        self.api_client = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), context=context
        )
        self.dynamic = DynamicClient(self.api_client)  # type: ignore[no-untyped-call]

    def resource(self, api_version: str, kind: str) -> Resource:
        found: Resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        return found

    def read(self, manifest: dict[str, Any]) -> Any | None:
        resource = self.resource(manifest["apiVersion"], manifest["kind"])
        ref = object_ref(manifest)
        try:
            return resource.get(name=ref.name, namespace=ref.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def core(self) -> kube_client.CoreV1Api:
        return kube_client.CoreV1Api(self.api_client)


def apply_rendering(cluster: Cluster, rendering: Rendering) -> ApplyReport:
    """Apply every object in dependency order; nothing is pruned here (see `prune`)."""
    report = ApplyReport()
    for manifest in rendering.manifests:
        ref = object_ref(manifest)
        before = cluster.read(manifest)
        resource = cluster.resource(manifest["apiVersion"], manifest["kind"])
        try:
            after = resource.server_side_apply(
                body=manifest, name=ref.name, namespace=ref.namespace,
                field_manager=FIELD_MANAGER, force_conflicts=True,
            )
        except ApiException as error:
            raise DeployError(f"{ref} was refused: {_reason(error)}") from error
        if before is None:
            report.created.append(ref)
        elif before.metadata.resourceVersion != after.metadata.resourceVersion:
            report.updated.append(ref)
        else:
            report.unchanged.append(ref)
    return report


def applied_objects(cluster: Cluster, stack: str, namespace: str) -> Iterator[Any]:
    """Every object of the stack's kinds that this field manager applied, in apply order."""
    selector = f"app.kubernetes.io/part-of={PROJECT},app.kubernetes.io/instance={stack}"
    for kind in APPLY_ORDER:
        resource = _resource_for_kind(cluster, kind)
        scope = None if kind in CLUSTER_SCOPED else namespace
        try:
            listed = resource.get(namespace=scope, label_selector=selector)
        except ApiException as error:
            if error.status == 404:  # the namespace itself is gone
                continue
            raise
        for item in listed.items:
            managers = item.metadata.managedFields or []
            if any(entry.manager == FIELD_MANAGER and entry.operation == "Apply"
                   for entry in managers):
                yield item


def prune(cluster: Cluster, rendering: Rendering, report: ApplyReport) -> None:
    """Delete what an earlier apply created and this rendering no longer has."""
    wanted = {object_ref(m) for m in rendering.manifests}
    stale = [
        item for item in applied_objects(cluster, rendering.stack, rendering.config.namespace)
        if ObjectRef(item.kind, item.metadata.name, item.metadata.namespace) not in wanted
    ]
    # Reverse apply order: what guards or scales a workload goes before the workload.
    for item in reversed(stale):
        ref = ObjectRef(item.kind, item.metadata.name, item.metadata.namespace)
        _delete(cluster, item.apiVersion, ref)
        report.deleted.append(ref)


def deploy(cluster: Cluster, rendering: Rendering, timeout: float = 180.0) -> ApplyReport:
    """`pulumi up` for one stack: apply, wait until ready, then prune what was replaced."""
    report = apply_rendering(cluster, rendering)
    wait_until_ready(cluster, rendering, timeout)
    prune(cluster, rendering, report)
    return report


def readiness(cluster: Cluster, rendering: Rendering) -> list[Readiness]:
    states = []
    for manifest in rendering.manifests:
        check = _READINESS.get(manifest["kind"])
        if check is None:
            continue
        live = cluster.read(manifest)
        ref = object_ref(manifest)
        if live is None:
            states.append(Readiness(ref, False, "missing"))
            continue
        ready, detail = check(live.to_dict())
        states.append(Readiness(ref, ready, detail))
    return states


def wait_until_ready(cluster: Cluster, rendering: Rendering, timeout: float) -> list[Readiness]:
    deadline = time.monotonic() + timeout
    while True:
        states = readiness(cluster, rendering)
        if all(state.ready for state in states):
            return states
        if time.monotonic() > deadline:
            waiting = "; ".join(f"{s.ref}: {s.detail}" for s in states if not s.ready)
            raise DeployError(f"not ready after {timeout:.0f} s: {waiting}")
        time.sleep(0.5)


def destroy(cluster: Cluster, stack: str, namespace: str, timeout: float = 120.0) -> int:
    """Delete everything the stack applied; waits until the namespace is gone. Returns the count."""
    items = list(applied_objects(cluster, stack, namespace))
    for item in reversed(items):
        _delete(cluster, item.apiVersion,
                ObjectRef(item.kind, item.metadata.name, item.metadata.namespace))
    deadline = time.monotonic() + timeout
    while _namespace_exists(cluster, namespace):
        if time.monotonic() > deadline:
            raise DeployError(f"namespace {namespace} still terminating after {timeout:.0f} s")
        time.sleep(0.5)
    return len(items)


def _namespace_exists(cluster: Cluster, namespace: str) -> bool:
    try:
        cluster.core().read_namespace(namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _delete(cluster: Cluster, api_version: str, ref: ObjectRef) -> None:
    resource = cluster.resource(api_version, ref.kind)
    try:
        resource.delete(name=ref.name, namespace=ref.namespace,
                        body={"propagationPolicy": "Foreground"})
    except ApiException as error:
        if error.status != 404:
            raise DeployError(f"{ref} could not be deleted: {_reason(error)}") from error


def _resource_for_kind(cluster: Cluster, kind: str) -> Resource:
    return cluster.resource(API_VERSIONS[kind], kind)


def _reason(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "").get("message", error.reason))
    except (TypeError, ValueError):
        return str(error.reason)


def _deployment_ready(live: dict[str, Any]) -> tuple[bool, str]:
    spec, status = live["spec"], live.get("status") or {}
    desired = spec.get("replicas") or 0
    observed = (status.get("observedGeneration") or 0) >= live["metadata"]["generation"]
    updated = status.get("updatedReplicas") or 0
    available = status.get("availableReplicas") or 0
    total = status.get("replicas") or 0
    ready = observed and updated == desired == available == total
    return ready, f"{available}/{desired} available, {updated} updated, {total} in all"


def _statefulset_ready(live: dict[str, Any]) -> tuple[bool, str]:
    spec, status = live["spec"], live.get("status") or {}
    desired = spec.get("replicas") or 0
    observed = (status.get("observedGeneration") or 0) >= live["metadata"]["generation"]
    ready_replicas = status.get("readyReplicas") or 0
    updated = status.get("updatedReplicas") or 0
    rolled = status.get("currentRevision") == status.get("updateRevision")
    ready = observed and rolled and ready_replicas == desired == updated
    return ready, f"{ready_replicas}/{desired} ready, {updated} updated"


def _hpa_ready(live: dict[str, Any]) -> tuple[bool, str]:
    floor = live["spec"].get("minReplicas") or 1
    current = (live.get("status") or {}).get("currentReplicas") or 0
    return current >= floor, f"{current} replicas, floor {floor}"


_READINESS = {
    "Deployment": _deployment_ready,
    "StatefulSet": _statefulset_ready,
    "HorizontalPodAutoscaler": _hpa_ready,
}

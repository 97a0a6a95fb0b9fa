"""Reading the local control plane from the tests: the Kubernetes API client, the live form of
a rendered object, and whether the stack's workloads are ready (what the provider waited for)."""

from __future__ import annotations

import base64
import copy
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from stacks.render import Rendering
from tests.sip.lab import basic_authorization

NODE_ADDRESS = "10.203.0.1"  # scripts/node: the node's address on the pod bridge


@dataclass(frozen=True)
class Readiness:
    kind: str
    name: str
    ready: bool
    detail: str


class Cluster:
    """The API of one cluster, found through a kubeconfig file."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api_client = kube_config.new_client_from_config(config_file=str(kubeconfig))
        self.dynamic = DynamicClient(self.api_client)

    def read(self, manifest: dict[str, Any]) -> Any | None:
        resource = self.dynamic.resources.get(api_version=manifest["apiVersion"],
                                              kind=manifest["kind"])
        metadata = manifest["metadata"]
        try:
            return resource.get(name=metadata["name"], namespace=metadata.get("namespace"))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def core(self) -> kube_client.CoreV1Api:
        return kube_client.CoreV1Api(self.api_client)

    def apps(self) -> kube_client.AppsV1Api:
        return kube_client.AppsV1Api(self.api_client)

    def batch(self) -> kube_client.BatchV1Api:
        return kube_client.BatchV1Api(self.api_client)

    def autoscaling(self) -> kube_client.AutoscalingV2Api:
        return kube_client.AutoscalingV2Api(self.api_client)

    def namespace_exists(self, namespace: str) -> bool:
        try:
            self.core().read_namespace(namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True


def pod_exec(core: kube_client.CoreV1Api, pod: str, namespace: str, command: list[str],
             container: str | None = None, timeout: int = 120) -> str:
    """What a command run in a pod printed (stdout and stderr), as text. The client's
    `stream()` with its content preloaded runs the output through `json.loads` like any
    response, so an output that is one JSON document came back as a dict's repr."""
    from kubernetes.stream import stream

    options = {"container": container} if container is not None else {}
    client = stream(core.connect_get_namespaced_pod_exec, pod, namespace, command=command,
                    stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False,
                    **options)
    try:
        client.run_forever(timeout=timeout)
        return str(client.read_all())
    finally:
        client.close()


def job_ending(cluster: Cluster, namespace: str, name: str) -> str | None:
    """"Complete" or "Failed" once the Job has ended, else None."""
    status = cluster.batch().read_namespaced_job(name, namespace).status
    return next((c.type for c in status.conditions or []
                 if c.status == "True" and c.type in ("Complete", "Failed")), None)


def job_of(cron_job: Any, name: str, manual: bool = True) -> kube_client.V1Job:
    """A Job of `cron_job`'s template, owned by it, as `kubectl create job --from=cronjob/...`
    makes one (`manual`: with its annotation; without, it looks like a scheduled run). The
    template is a copy: the caller may change it before creating the Job."""
    return kube_client.V1Job(
        metadata=kube_client.V1ObjectMeta(
            name=name, namespace=cron_job.metadata.namespace,
            annotations={"cronjob.kubernetes.io/instantiate": "manual"} if manual else None,
            owner_references=[kube_client.V1OwnerReference(
                api_version="batch/v1", kind="CronJob", name=cron_job.metadata.name,
                uid=cron_job.metadata.uid, controller=True)]),
        spec=copy.deepcopy(cron_job.spec.job_template.spec))


def readiness(cluster: Cluster, rendering: Rendering) -> list[Readiness]:
    """Each Deployment and StatefulSet rolled out at its replicas, each HPA at its floor."""
    states = []
    for manifest in rendering.manifests:
        check = _CHECKS.get(manifest["kind"])
        if check is None:
            continue
        live = cluster.read(manifest)
        name = manifest["metadata"]["name"]
        if live is None:
            states.append(Readiness(manifest["kind"], name, False, "missing"))
            continue
        ready, detail = check(live.to_dict())
        states.append(Readiness(manifest["kind"], name, ready, detail))
    return states


def _deployment(live: dict[str, Any]) -> tuple[bool, str]:
    spec, status = live["spec"], live.get("status") or {}
    desired = spec.get("replicas") or 0
    observed = (status.get("observedGeneration") or 0) >= live["metadata"]["generation"]
    updated = status.get("updatedReplicas") or 0
    available = status.get("availableReplicas") or 0
    total = status.get("replicas") or 0
    return (observed and updated == desired == available == total,
            f"{available}/{desired} available, {updated} updated, {total} in all")


def _stateful_set(live: dict[str, Any]) -> tuple[bool, str]:
    spec, status = live["spec"], live.get("status") or {}
    desired = spec.get("replicas") or 0
    observed = (status.get("observedGeneration") or 0) >= live["metadata"]["generation"]
    ready = status.get("readyReplicas") or 0
    rolled = status.get("currentRevision") == status.get("updateRevision")
    return observed and rolled and ready == desired, f"{ready}/{desired} ready"


def _autoscaler(live: dict[str, Any]) -> tuple[bool, str]:
    floor = live["spec"].get("minReplicas") or 1
    current = (live.get("status") or {}).get("currentReplicas") or 0
    return current >= floor, f"{current} replicas, floor {floor}"


_CHECKS = {"Deployment": _deployment, "StatefulSet": _stateful_set,
           "HorizontalPodAutoscaler": _autoscaler}


def node_port(cluster: Cluster, namespace: str, service: str, port_name: str) -> int:
    live = cluster.core().read_namespaced_service(service, namespace)
    return next(p.node_port for p in live.spec.ports if p.name == port_name)


def prometheus_api(cluster: Cluster, namespace: str, path: str) -> Any:
    """GET on the Prometheus pod's API with its account (prometheus-control), straight to the
    pod from the host: the API server's service proxy drops an Authorization header."""
    core = cluster.core()
    password = base64.b64decode(core.read_namespaced_secret(
        "prometheus-control", namespace).data["password"]).decode()
    (pod,) = [p for p in core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=prometheus").items
        if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    request = urllib.request.Request(f"http://{pod.status.pod_ip}:9090/api/v1/{path}",
                                     headers={"Authorization": basic_authorization(password)})
    with urllib.request.urlopen(request, timeout=10) as answer:
        document = json.loads(answer.read())
    assert document["status"] == "success", document
    return document["data"]


def prometheus_query(cluster: Cluster, namespace: str, query: str) -> list[dict[str, object]]:
    """A PromQL query to the Prometheus pod."""
    result: list[dict[str, object]] = prometheus_api(
        cluster, namespace, f"query?{urlencode({'query': query})}")["result"]
    return result

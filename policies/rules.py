"""The rules of the acm-platform policy pack, as plain functions over resources.

Each resource rule takes one resource (its Pulumi type token, name and Kubernetes props, as the
policy engine sees them) and returns violation messages; each stack rule takes every resource
of the stack. `policies/pack.py` registers exactly these functions with CrossGuard, and the
tests call them through those registrations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.base.settings import cron_fields

SIP_PATH = ("opensips", "haproxy", "acm-engine")
CAPABILITIES_ALLOWED = {"NET_ADMIN", "NET_RAW"}
CAPABILITY_HOLDERS = ("opensips",)
LAGOS = "Africa/Lagos"
DAILY_DUE_MINUTES = 6 * 60
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")
LONG_RUNNING_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
NAME_LABEL = "app.kubernetes.io/name"


@dataclass(frozen=True)
class Resource:
    type: str  # Pulumi type token, e.g. kubernetes:apps/v1:Deployment
    name: str
    props: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return self.type.rsplit(":", 1)[-1] if self.type.startswith("kubernetes:") else ""

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.props.get("metadata") or {}

    @property
    def k8s_name(self) -> str:
        return str(self.metadata.get("name", self.name))

    @property
    def app(self) -> str:
        return str((self.metadata.get("labels") or {}).get(NAME_LABEL, ""))


def pod_spec(resource: Resource) -> Mapping[str, Any] | None:
    spec = resource.props.get("spec") or {}
    if resource.kind == "Pod":
        return spec
    if resource.kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    if resource.kind in WORKLOAD_KINDS:
        return ((spec.get("template") or {}).get("spec")) or {}
    return None


def containers(spec: Mapping[str, Any], init: bool = True) -> Iterator[Mapping[str, Any]]:
    yield from spec.get("containers") or []
    if init:
        yield from spec.get("initContainers") or []


def sidecars(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Native sidecars: init containers that keep running beside the main ones."""
    for container in spec.get("initContainers") or []:
        if container.get("restartPolicy") == "Always":
            yield container


def whole_number(value: Any) -> int | None:
    """An integer field as the engine hands it over: every number arrives as a float (0.0),
    while the offline render and a Kubernetes manifest carry ints. None for anything else
    (a percentage string, a missing field)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 0.001}


def quantity(text: Any) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    if not match or match[2] not in _UNITS:
        raise ValueError(f"unreadable quantity {text!r}")
    return float(match[1]) * _UNITS[match[2]]


# -- resource rules ------------------------------------------------------------------------

def requests_and_limits(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    spec = pod_spec(resource)
    problems: list[str] = []
    for container in containers(spec) if spec is not None else ():
        name = container.get("name", "?")
        res = container.get("resources") or {}
        for section in ("requests", "limits"):
            for key in ("cpu", "memory"):
                if key not in (res.get(section) or {}):
                    problems.append(f"container {name}: resources.{section}.{key} is not set")
        try:
            request = res.get("requests", {}).get("memory")
            limit = res.get("limits", {}).get("memory")
            if request and limit and quantity(limit) < quantity(request):
                problems.append(f"container {name}: memory limit {limit} is below its "
                                f"request {request}")
        except ValueError as error:
            problems.append(f"container {name}: {error}")
    return problems


def pinned_images(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    spec = pod_spec(resource)
    problems = []
    for container in containers(spec) if spec is not None else ():
        image = str(container.get("image", ""))
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        if ":" not in last:
            problems.append(f"container {container.get('name')}: image {image!r} has no tag")
        elif last.rsplit(":", 1)[1] == "latest":
            problems.append(f"container {container.get('name')}: image {image!r} uses :latest")
    return problems


def image_digests(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """Names every image pinned by tag only: a tag can be moved, a digest cannot. Advisory in
    the committed enforcement files (digests cannot be looked up here, and are never
    invented); a team that records them makes it mandatory."""
    spec = pod_spec(resource)
    return [f"container {container.get('name')}: image {container.get('image')!r} has no "
            "@sha256 digest (pin it as name:tag@sha256:...)"
            for container in (containers(spec) if spec is not None else ())
            if "@sha256:" not in str(container.get("image", ""))]


def pod_security(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    spec = pod_spec(resource)
    if spec is None:
        return []
    problems = []
    writable_allowed = set(config.get("writableRootAllowed") or [])
    pod_context = spec.get("securityContext") or {}
    if spec.get("hostNetwork"):
        problems.append("hostNetwork is set")
    for flag in ("hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} is set")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"volume {volume.get('name')} is a hostPath")
    for container in containers(spec):
        name = container.get("name", "?")
        context = container.get("securityContext") or {}
        if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            problems.append(f"container {name}: runAsNonRoot is not true")
        if context.get("privileged"):
            problems.append(f"container {name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name}: allowPrivilegeEscalation is not false")
        if context.get("readOnlyRootFilesystem") is not True \
                and f"{resource.app}/{name}" not in writable_allowed:
            problems.append(f"container {name}: root filesystem is writable (not allow-listed "
                            f"as {resource.app}/{name})")
        added = set((context.get("capabilities") or {}).get("add") or [])
        if added - CAPABILITIES_ALLOWED:
            problems.append(f"container {name}: adds {sorted(added - CAPABILITIES_ALLOWED)}")
        if added and resource.app not in CAPABILITY_HOLDERS:
            problems.append(f"container {name}: adds {sorted(added)} outside OpenSIPS")
    return problems


_SECRET_PATTERNS = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    # A key that ends in one of these words (db_password, X-Api-Key) given a literal value;
    # references ($VAR, {{ }}, <placeholder>, file paths) are fine.
    (re.compile(r"(?i)(?<![a-z])(password|passwd|secret|token|api[_-]?key)[\"']?\s*[:=]\s*"
                r"(?![\s\"']*(\$|<|\{\{|/|file:|env:))[\"']?[^\s\"'#]{6,}"), "a credential"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), "a JWT"),
)


def no_secrets_in_config_maps(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    if resource.kind != "ConfigMap":
        return []
    problems = []
    for key, text in (resource.props.get("data") or {}).items():
        for pattern, what in _SECRET_PATTERNS:
            if pattern.search(str(text)):
                problems.append(f"data[{key}] looks like it holds {what}: use a Secret")
    return problems


_TLS_METHOD = re.compile(r'modparam\(\s*"tls_mgm"\s*,\s*"tls_method"\s*,\s*"([^"]*)"\s*\)')


def opensips_tls13_only(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    if resource.kind != "ConfigMap":
        return []
    problems = []
    for key, text in (resource.props.get("data") or {}).items():
        if not key.endswith("opensips.cfg") or "proto_tls.so" not in str(text):
            continue
        methods = _TLS_METHOD.findall(str(text))
        if not methods:
            problems.append(f"data[{key}]: TLS is loaded without tls_method (defaults allow "
                            "TLS below 1.3)")
        for method in methods:
            if re.sub(r"^\[[^]]*\]", "", method) != "TLSv1_3":
                problems.append(f"data[{key}]: tls_method {method!r} is not TLSv1_3 only")
    return problems


def probes(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    if resource.kind not in LONG_RUNNING_KINDS:
        return []
    spec = pod_spec(resource) or {}
    problems = []
    for container in [*containers(spec, init=False), *sidecars(spec)]:
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in container:
                problems.append(f"container {container.get('name')}: no {probe}")
    return problems


def sip_path_rollout(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    if resource.kind != "Deployment" or resource.app not in SIP_PATH:
        return []
    problems = []
    strategy = (resource.props.get("spec") or {}).get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        problems.append(f"strategy {strategy.get('type')}: the SIP path must roll")
    else:
        unavailable = rolling.get("maxUnavailable", "25%")
        if whole_number(unavailable) != 0 and str(unavailable) != "0%":
            shown = whole_number(unavailable)
            problems.append(f"rollingUpdate.maxUnavailable is "
                            f"{unavailable if shown is None else shown}, must be 0 on the SIP path")
    spec = pod_spec(resource) or {}
    anti = ((spec.get("affinity") or {}).get("podAntiAffinity"))
    if not spec.get("topologySpreadConstraints") and not anti:
        problems.append("pods are not spread across nodes (no topologySpreadConstraints or "
                        "podAntiAffinity)")
    return problems


def compliance_cron_jobs(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    if resource.kind != "CronJob":
        return []
    spec = resource.props.get("spec") or {}
    problems = []
    if spec.get("timeZone") != LAGOS:
        problems.append(f"timeZone is {spec.get('timeZone')!r}, must be {LAGOS!r}")
    if spec.get("concurrencyPolicy") != "Forbid":
        problems.append(f"concurrencyPolicy is {spec.get('concurrencyPolicy')!r}, must be Forbid")
    starting = spec.get("startingDeadlineSeconds")
    active = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("activeDeadlineSeconds")
    if starting is None:
        problems.append("startingDeadlineSeconds is not set")
    if active is None:
        problems.append("activeDeadlineSeconds is not set")
    role = (resource.metadata.get("labels") or {}).get("acm-platform.ng/role")
    if (role == "daily" or resource.k8s_name.endswith("-daily")) and starting and active:
        try:
            minutes, hours = cron_fields(str(spec.get("schedule", "")))[:2]
        except ValueError as error:
            return [*problems, f"schedule: {error}"]
        if len(minutes) != 1 or len(hours) != 1:
            problems.append("the daily report must run once a day at a fixed time")
        else:
            start = next(iter(hours)) * 60 + next(iter(minutes))
            if start * 60 + int(starting) + int(active) > DAILY_DUE_MINUTES * 60:
                problems.append(f"daily schedule {spec.get('schedule')!r} + startingDeadline "
                                f"{starting} s + activeDeadline {active} s ends after 06:00 WAT")
    return problems


# -- stack rules ---------------------------------------------------------------------------

StackViolation = tuple[str, str]  # (resource name, message)


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    wanted = selector.get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items()) \
        and not selector.get("matchExpressions")


def _floor(deployment: Resource, hpas: Sequence[Resource]) -> int | None:
    for hpa in hpas:
        target = ((hpa.props.get("spec") or {}).get("scaleTargetRef") or {})
        if target.get("kind") == "Deployment" and target.get("name") == deployment.k8s_name:
            return int((hpa.props.get("spec") or {}).get("minReplicas", 1))
    replicas = (deployment.props.get("spec") or {}).get("replicas")
    return int(replicas) if replicas is not None else None


def sip_path_budgets(resources: Sequence[Resource],
                     config: Mapping[str, Any]) -> list[StackViolation]:
    pdbs = [r for r in resources if r.kind == "PodDisruptionBudget"]
    hpas = [r for r in resources if r.kind == "HorizontalPodAutoscaler"]
    problems = []
    for deployment in resources:
        if deployment.kind != "Deployment" or deployment.app not in SIP_PATH:
            continue
        labels = ((deployment.props.get("spec") or {}).get("template") or {}).get(
            "metadata", {}).get("labels") or {}
        matching = [pdb for pdb in pdbs
                    if _selects((pdb.props.get("spec") or {}).get("selector") or {}, labels)]
        if not matching:
            problems.append((deployment.name, f"Deployment {deployment.k8s_name} has no "
                                              "PodDisruptionBudget selecting its pods"))
            continue
        floor = _floor(deployment, hpas)
        for pdb in matching:
            minimum = whole_number((pdb.props.get("spec") or {}).get("minAvailable"))
            if minimum is not None and floor is not None and minimum >= floor:
                problems.append((pdb.name, f"PDB {pdb.k8s_name}: minAvailable {minimum} is not "
                                           f"below the replica floor {floor} of "
                                           f"{deployment.k8s_name}: drains would block"))
    return problems


def hpa_minimum(resources: Sequence[Resource], config: Mapping[str, Any]) -> list[StackViolation]:
    minimum = int(config.get("minimum", 3))
    problems = []
    for hpa in resources:
        if hpa.kind != "HorizontalPodAutoscaler":
            continue
        target = ((hpa.props.get("spec") or {}).get("scaleTargetRef") or {}).get("name")
        if target not in ("opensips", "acm-engine"):
            continue
        found = int((hpa.props.get("spec") or {}).get("minReplicas", 1))
        if found < minimum:
            problems.append((hpa.name, f"HPA {hpa.k8s_name}: minReplicas {found} is below "
                                       f"{minimum}"))
    return problems


def default_deny(resources: Sequence[Resource],
                 config: Mapping[str, Any]) -> list[StackViolation]:
    namespaces = [r for r in resources if r.kind == "Namespace"]
    policies = [r for r in resources if r.kind == "NetworkPolicy"]
    problems = []
    for namespace in namespaces:
        denying = [p for p in policies
                   if p.metadata.get("namespace") == namespace.k8s_name
                   and not ((p.props.get("spec") or {}).get("podSelector") or {})
                   .get("matchLabels")
                   and set((p.props.get("spec") or {}).get("policyTypes") or [])
                   == {"Ingress", "Egress"}
                   and not (p.props.get("spec") or {}).get("ingress")
                   and not (p.props.get("spec") or {}).get("egress")]
        if not denying:
            problems.append((namespace.name, f"namespace {namespace.k8s_name} has no default-deny "
                                             "NetworkPolicy (all pods, Ingress and Egress, "
                                             "no rules)"))
    return problems


ResourceRule = Callable[[Resource, Mapping[str, Any]], list[str]]
StackRule = Callable[[Sequence[Resource], Mapping[str, Any]], list[StackViolation]]

# name -> (description, rule); the names are what enforcement files and reviewers refer to.
RESOURCE_RULES: dict[str, tuple[str, ResourceRule]] = {
    "requests-and-limits": ("Every container has CPU and memory requests and limits, memory "
                            "limit at least its request.", requests_and_limits),
    "pinned-images": ("Images are pinned by tag or digest, never :latest or untagged.",
                      pinned_images),
    "image-digests": ("Images carry their @sha256 digest: a tag can be moved, a digest "
                      "cannot.", image_digests),
    "pod-security": ("Non-root, unprivileged, no privilege escalation, read-only root unless "
                     "allow-listed, only NET_ADMIN/NET_RAW and only on OpenSIPS, no host "
                     "network, PID, IPC or paths.", pod_security),
    "no-secrets-in-configmaps": ("ConfigMaps hold no private keys, passwords or tokens.",
                                 no_secrets_in_config_maps),
    "opensips-tls13-only": ("OpenSIPS TLS sockets accept TLS 1.3 only.", opensips_tls13_only),
    "probes": ("Every long-running container has liveness and readiness probes.", probes),
    "sip-path-rollout": ("SIP-path Deployments roll with maxUnavailable 0 and spread their "
                         "pods across nodes.", sip_path_rollout),
    "compliance-cron-jobs": ("CronJobs run on Africa/Lagos time, never overlap, have starting "
                             "and active deadlines, and the daily report ends before 06:00.",
                             compliance_cron_jobs),
}
STACK_RULES: dict[str, tuple[str, StackRule]] = {
    "sip-path-budgets": ("Every SIP-path Deployment has a PDB selecting its pods with "
                         "minAvailable below its replica floor.", sip_path_budgets),
    "hpa-min-replicas": ("OpenSIPS and ACM engine HPAs keep at least `minimum` replicas "
                         "(3 in prod).", hpa_minimum),
    "default-deny": ("Every namespace the stack creates has a default-deny NetworkPolicy.",
                     default_deny),
}

"""The settings every platform part is made of: the config model base, the reusable field rules
(pinned images, CPU and memory quantities, cron schedules read by croniter, networks read by
`ipaddress`, host names, Kubernetes names) and the shapes several parts share (resources,
autoscaling, disruption budgets, storage, image builds, feature switches).

Each part's own settings model lives in its part's module and is built from these; the stack's
composition (`stacks/config.py`) puts the parts together.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Annotated, Literal, Self

from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from components.base.quantities import parse_quantity


class Model(BaseModel):
    """Config models: camelCase keys as in Pulumi YAML, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        strict=True,
        # A field's docstring is its description: `acmctl settings-reference` writes them
        # into docs/settings.md.
        use_attribute_docstrings=True,
    )


# --- scalar types -----------------------------------------------------------------------

_IMAGE = re.compile(
    r"^(?P<repository>[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def _pinned_image(reference: str) -> str:
    match = _IMAGE.match(reference)
    if match is None:
        raise ValueError(f"{reference!r} is not an image reference")
    if match["tag"] is None and match["digest"] is None:
        raise ValueError(f"image {reference!r} has no tag: pin a version tag or a digest")
    if match["tag"] == "latest":
        raise ValueError(f"image {reference!r} uses ':latest': pin a version tag or a digest")
    return reference


def tag_version(reference: str) -> tuple[int, int] | None:
    """(major, minor) of an image whose tag starts with a version (`4.0.1`, `3.4.9-acm1`)."""
    match = _IMAGE.match(reference)
    tag = match["tag"] if match else None
    version = re.match(r"^v?(\d+)\.(\d+)", tag or "")
    return (int(version[1]), int(version[2])) if version else None


def _cpu(text: str) -> str:
    parse_quantity(text)
    return text


def _memory(text: str) -> str:
    if parse_quantity(text) < 1024 * 1024:
        raise ValueError(f"{text!r} is less than 1Mi: write memory with a unit (e.g. 256Mi)")
    return text


def _storage(text: str) -> str:
    if parse_quantity(text) < 1024 * 1024 * 1024:
        raise ValueError(f"{text!r} is less than 1Gi: write storage with a unit (e.g. 20Gi)")
    return text


_CRON_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_CRON_NAMES = ("minute", "hour", "day of month", "month", "day of week")
# A year no schedule is looked at from: whether an expression ever fires does not depend on it.
_CRON_PROBE_START = datetime(2026, 1, 1)


def cron_fields(expression: str) -> list[set[int]]:
    """The values each of the five cron fields matches (minute, hour, dom, month, dow), read by
    croniter (names such as MON-FRI or JAN included); ValueError naming the bad field."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"{expression!r} must have 5 fields (minute hour day-of-month month "
                         "day-of-week)")
    try:
        expanded, _ = croniter.expand(expression)
    except (CroniterBadCronError, ValueError):
        for index, (field, name) in enumerate(zip(fields, _CRON_NAMES, strict=True)):
            probe = ["*"] * 5
            probe[index] = field
            if not croniter.is_valid(" ".join(probe)):
                low, high = _CRON_FIELD_RANGES[index]
                raise ValueError(f"{expression!r}: {name} field {field!r} is not valid (numbers "
                                 f"{low}-{high}, ranges, lists, steps"
                                 f"{', or names' if index >= 3 else ''})") from None
        raise ValueError(f"{expression!r} is not a cron schedule") from None
    result = []
    for values, (low, high) in zip(expanded, _CRON_FIELD_RANGES, strict=True):
        if values == ["*"]:
            result.append(set(range(low, high + 1)))
        else:
            result.append({int(value) % 7 if high == 6 else int(value) for value in values})
    return result


def _cron(expression: str) -> str:
    cron_fields(expression)
    try:
        croniter(expression, _CRON_PROBE_START).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"{expression!r} never runs: no date matches it (such as the 31st of "
                         "a month that has 30 days or fewer)") from None
    return expression


def _network(text: str) -> str:
    try:
        if "/" not in text:
            raise ValueError("no prefix length")
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        raise ValueError(f"{text!r} is not a network in CIDR form such as 198.51.100.0/24 "
                         f"({error})") from None
    return str(network)


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _host(text: str) -> str:
    """A hostname (RFC 1123 labels) or an IP address, nothing around it."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    labels = text.split(".")
    if not text or len(text) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"{text!r} is not a host name or IP address (letters, digits and "
                         "hyphens in dot-separated labels; no scheme, port, path or spaces)")
    return text


def described(pattern: str, meaning: str) -> Callable[[str], str]:
    """A validator for `pattern` whose message says in words what is expected."""
    compiled = re.compile(pattern)

    def validate(text: str) -> str:
        if not compiled.fullmatch(text):
            raise ValueError(f"{text!r} {meaning}")
        return text

    return validate


def _license(text: str) -> str:
    if not re.fullmatch(r"[A-Z0-9-]{3,32}", text):
        raise ValueError(f"{text!r} is not an NCC licence number: 3 to 32 capital letters, "
                         "digits or hyphens")
    return text


def _iso_day(value: object) -> object:
    """Only `YYYY-MM-DD` (quoted in YAML): pydantic would also read a number as a Unix time."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(f"{value!r} is not a day in the form 'YYYY-MM-DD' (quote it in YAML)")
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise ValueError(f"{value!r} is not a valid date: {error}") from None


ImageRef = Annotated[str, AfterValidator(_pinned_image)]
IsoDay = Annotated[date, BeforeValidator(_iso_day)]
CpuQuantity = Annotated[str, AfterValidator(_cpu)]
MemoryQuantity = Annotated[str, AfterValidator(_memory)]
StorageQuantity = Annotated[str, AfterValidator(_storage)]
CronSchedule = Annotated[str, AfterValidator(_cron)]
Network = Annotated[str, AfterValidator(_network)]
Host = Annotated[str, AfterValidator(_host)]
LicenseNumber = Annotated[str, AfterValidator(_license)]
Port = Annotated[int, Field(ge=1, le=65535)]
Percent = Annotated[int, Field(ge=1, le=100)]
DnsLabel = Annotated[str, AfterValidator(described(
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
    "is not a Kubernetes name: 1 to 63 lower-case letters, digits or hyphens, starting and "
    "ending with a letter or digit"))]
Registry = Annotated[str, AfterValidator(described(
    r"[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*",
    "is not a registry: a lower-case host name, an optional :port and /path segments "
    "(e.g. registry.acm.internal/acm)"))]
SftpUser = Annotated[str, AfterValidator(described(
    r"[a-z_][a-z0-9_.-]{0,31}",
    "is not a user name: up to 32 lower-case letters, digits, '_', '.' or '-', not starting "
    "with a digit"))]
AbsolutePath = Annotated[str, AfterValidator(described(
    r"/.*", "is not an absolute path: it must start with '/' (e.g. /incoming)"))]
HttpsUrl = Annotated[str, AfterValidator(described(
    r"https://\S+", "is not an https:// address: the regulator's API is reached over TLS only"))]





class ResourceAmounts(Model):
    cpu: CpuQuantity
    """CPU, as Kubernetes writes it (`250m`, `2`)."""
    memory: MemoryQuantity
    """Memory, as Kubernetes writes it (`256Mi`, `2Gi`)."""


class Resources(Model):
    requests: ResourceAmounts
    """What the scheduler reserves for each pod; autoscaling targets are shares of it."""
    limits: ResourceAmounts
    """The most each container may use (at least the requests)."""

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Self:
        for kind in ("cpu", "memory"):
            request = getattr(self.requests, kind)
            limit = getattr(self.limits, kind)
            if parse_quantity(limit) < parse_quantity(request):
                raise ValueError(
                    f"limits.{kind} {limit} is below requests.{kind} {request}: "
                    "the kubelet rejects such a pod"
                )
        return self


class ScalingPolicy(Model):
    type: Literal["Pods", "Percent"]
    """Whether `value` counts pods or a percentage of the current replicas."""
    value: Annotated[int, Field(ge=1)]
    """How many pods (or what percentage) one step may add or remove."""
    period_seconds: Annotated[int, Field(ge=1, le=1800)]
    """The window the step's size applies to."""


class ScalingRules(Model):
    stabilization_window_seconds: Annotated[int, Field(ge=0, le=3600)]
    """How long the autoscaler looks back before it changes the replicas (damps flapping)."""
    select_policy: Literal["Max", "Min"] = "Max"
    """Of several policies, the one that allows the most (`Max`) or the least change."""
    policies: Annotated[list[ScalingPolicy], Field(min_length=1)]
    """How fast the replicas may change."""


class Autoscaling(Model):
    min_replicas: Annotated[int, Field(ge=1)]
    """The floor of the HorizontalPodAutoscaler (the production floor says 3 in prod)."""
    max_replicas: Annotated[int, Field(ge=1)]
    """The ceiling of the HorizontalPodAutoscaler (at most 100)."""
    target_cpu_percent: Percent
    """Average CPU use, as a percentage of the request, the autoscaler holds."""
    target_memory_percent: Percent | None = None
    """Average memory use, as a percentage of the request, the autoscaler holds; unset: CPU
    only."""
    scale_up: ScalingRules
    """How fast it adds pods."""
    scale_down: ScalingRules
    """How fast it removes pods."""

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas {self.min_replicas} is greater than maxReplicas {self.max_replicas}"
            )
        return self


class Disruption(Model):
    min_available: Annotated[int, Field(ge=1)]
    """Pods the PodDisruptionBudget keeps running through evictions (node drains); below the
    part's replica floor."""


class Storage(Model):
    size: StorageQuantity
    """The size of each replica's volume claim (`5Gi`)."""
    storage_class: DnsLabel | None = None
    """The StorageClass of the claims; unset: the cluster's default."""


def require_distinct_ports(ports: Mapping[str, int]) -> None:
    """Every TCP port of a component (its container and its Services) is a different number."""
    seen: dict[int, str] = {}
    for key, port in ports.items():
        if port in seen:
            raise ValueError(f"{key} and {seen[port]} both use TCP port {port}: each port of a "
                             "component needs its own number (a container and a Service cannot "
                             "serve two things on one port)")
        seen[port] = key


def require_disruption_below(floor: int, disruption: Disruption, floor_key: str) -> None:
    if disruption.min_available >= floor:
        raise ValueError(
            f"pdb.minAvailable {disruption.min_available} must be below {floor_key} {floor}: "
            "otherwise no pod may ever be evicted and every node drain blocks"
        )


# The most replicas one part's autoscaler may ask for. Kubernetes accepts any number, but the
# stack does not know its nodes, and a ceiling of thousands (a typo, or a test value left in)
# lets a burst ask the cluster for far more pods than it holds while the HPA reports all well.
# A platform that truly needs more raises this rule in review, not in a stack file.
MAX_REPLICAS_CEILING = 100


def require_scalable(resources: Resources, autoscaling: Autoscaling) -> None:
    """A part its HPA scales: utilization is a share of the request, so the request must exist,
    and the ceiling must be one a cluster could hold."""
    if parse_quantity(resources.requests.cpu) == 0:
        raise ValueError(
            f"resources.requests.cpu {resources.requests.cpu} is zero, but the part is scaled "
            f"on CPU (autoscaling.targetCpuPercent {autoscaling.target_cpu_percent}): "
            "utilization is a share of the request, so with none the autoscaler never acts; "
            "request the CPU one pod needs at rest (e.g. 250m)")
    if autoscaling.max_replicas > MAX_REPLICAS_CEILING:
        raise ValueError(
            f"autoscaling.maxReplicas {autoscaling.max_replicas} is above "
            f"{MAX_REPLICAS_CEILING}, the most one part may scale to: at full scale-out it "
            f"requests {autoscaling.max_replicas} x {resources.requests.cpu} CPU and "
            f"{autoscaling.max_replicas} x {resources.requests.memory} memory, far beyond what "
            "a cluster of this platform holds; size it from the nodes you have")


class ImageBuild(Model):
    """A part whose images the stack builds (pulumi-docker) instead of pulling pinned ones."""

    registry: Registry
    """Registry host and path the stack pushes the images it builds to (docker login done by
    CI)."""
    base_image: ImageRef | None = None
    """The Debian bookworm image the Dockerfiles start from (their BASE argument); unset, each
    Dockerfile's upstream default. The local stack names the mmdebstrap base that
    scripts/images pushes to its own registry."""
    extra_ca_certificates: str | None = None
    """A folder of PEM CA certificates (*.crt) the build steps that fetch over HTTPS (pip)
    trust besides the public ones: for builds behind a TLS-inspecting egress proxy. Only the
    build stage trusts them; the image the pods run does not. A missing folder adds none."""


def require_stand_in_build(stand_in: str | bool | None, image_build: ImageBuild | None) -> None:
    """A part that runs a stand-in needs imageBuild: the stand-in's image is built here."""
    if stand_in and image_build is None:
        named = "standIn" if stand_in is True else f"standIn {stand_in!r}"
        raise ValueError(f"{named} needs imageBuild (a registry and a Debian base): the "
                         "stand-in's image is built by the stack")


class Features(Model):
    sip_tls: bool = True
    """SIP over TLS (5061) on HAProxy and OpenSIPS, TLS 1.3 only, with sipTlsCertificate."""
    sip_udp_load_balancer: bool = True
    """A LoadBalancer Service (externalTrafficPolicy Local) for SIP over UDP to OpenSIPS:
    HAProxy does not proxy UDP."""
    grafana: bool = True
    """Grafana with its Prometheus datasource and the call-path dashboard."""
    clickhouse: bool = True
    """ClickHouse for the engines' CDR analytics. Off where its image cannot be had (local):
    nothing on the call path needs it."""
    compliance_jobs: bool = True
    """The NCC compliance CronJobs and their audit exporter."""

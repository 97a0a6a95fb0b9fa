"""Typed stack configuration: every knob of every environment, validated before deployment.

A stack's `Pulumi.<stack>.yaml` holds one key per platform part under the `acm-platform:`
namespace. `load_stack_config` turns those keys into a `StackConfig` or raises one
`StackConfigError` that lists every problem with its full key path, so a bad value fails the
program before a single resource is registered.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from stacks.quantities import parse_quantity

PROJECT = "acm-platform"
LAGOS = "Africa/Lagos"

Environment = Literal["local", "dev", "staging", "prod"]


class StackConfigError(ValueError):
    """Invalid stack configuration; each problem names its `acm-platform:` key path."""

    def __init__(self, stack: str, problems: list[tuple[str, str]]) -> None:
        self.stack = stack
        self.problems = problems
        lines = [f"  {PROJECT}:{path}: {message}" for path, message in problems]
        super().__init__(
            f"stack {stack!r} has invalid configuration; nothing was deployed:\n"
            + "\n".join(lines)
        )


class Model(BaseModel):
    """Config models: camelCase keys as in Pulumi YAML, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        strict=True,
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


def _tag_version(reference: str) -> tuple[int, int] | None:
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


def _described(pattern: str, meaning: str) -> Callable[[str], str]:
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


ImageRef = Annotated[str, AfterValidator(_pinned_image)]
CpuQuantity = Annotated[str, AfterValidator(_cpu)]
MemoryQuantity = Annotated[str, AfterValidator(_memory)]
StorageQuantity = Annotated[str, AfterValidator(_storage)]
CronSchedule = Annotated[str, AfterValidator(_cron)]
Network = Annotated[str, AfterValidator(_network)]
Host = Annotated[str, AfterValidator(_host)]
LicenseNumber = Annotated[str, AfterValidator(_license)]
Port = Annotated[int, Field(ge=1, le=65535)]
Percent = Annotated[int, Field(ge=1, le=100)]
DnsLabel = Annotated[str, AfterValidator(_described(
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
    "is not a Kubernetes name: 1 to 63 lower-case letters, digits or hyphens, starting and "
    "ending with a letter or digit"))]
Registry = Annotated[str, AfterValidator(_described(
    r"[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*",
    "is not a registry: a lower-case host name, an optional :port and /path segments "
    "(e.g. registry.acm.internal/acm)"))]
SftpUser = Annotated[str, AfterValidator(_described(
    r"[a-z_][a-z0-9_.-]{0,31}",
    "is not a user name: up to 32 lower-case letters, digits, '_', '.' or '-', not starting "
    "with a digit"))]
AbsolutePath = Annotated[str, AfterValidator(_described(
    r"/.*", "is not an absolute path: it must start with '/' (e.g. /incoming)"))]
HttpsUrl = Annotated[str, AfterValidator(_described(
    r"https://\S+", "is not an https:// address: the regulator's API is reached over TLS only"))]


# --- shared building blocks -------------------------------------------------------------


class ResourceAmounts(Model):
    cpu: CpuQuantity
    memory: MemoryQuantity


class Resources(Model):
    requests: ResourceAmounts
    limits: ResourceAmounts

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
    value: Annotated[int, Field(ge=1)]
    period_seconds: Annotated[int, Field(ge=1, le=1800)]


class ScalingRules(Model):
    stabilization_window_seconds: Annotated[int, Field(ge=0, le=3600)]
    select_policy: Literal["Max", "Min"] = "Max"
    policies: Annotated[list[ScalingPolicy], Field(min_length=1)]


class Autoscaling(Model):
    min_replicas: Annotated[int, Field(ge=1)]
    max_replicas: Annotated[int, Field(ge=1)]
    target_cpu_percent: Percent
    target_memory_percent: Percent | None = None
    scale_up: ScalingRules
    scale_down: ScalingRules

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas {self.min_replicas} is greater than maxReplicas {self.max_replicas}"
            )
        return self


class Disruption(Model):
    min_available: Annotated[int, Field(ge=1)]


class Storage(Model):
    size: StorageQuantity
    storage_class: DnsLabel | None = None


def _require_distinct_ports(ports: Mapping[str, int]) -> None:
    """Every TCP port of a component (its container and its Services) is a different number."""
    seen: dict[int, str] = {}
    for key, port in ports.items():
        if port in seen:
            raise ValueError(f"{key} and {seen[port]} both use TCP port {port}: each port of a "
                             "component needs its own number (a container and a Service cannot "
                             "serve two things on one port)")
        seen[port] = key


def _require_disruption_below(floor: int, disruption: Disruption, floor_key: str) -> None:
    if disruption.min_available >= floor:
        raise ValueError(
            f"pdb.minAvailable {disruption.min_available} must be below {floor_key} {floor}: "
            "otherwise no pod may ever be evicted and every node drain blocks"
        )


# --- platform parts ---------------------------------------------------------------------


class ImageBuild(Model):
    # Registry host and path the stack pushes an image it builds to (docker login done by CI).
    registry: Registry


class KubernetesSettings(Model):
    # The provider's identity: without it a changed kubeconfig replaces the provider and every
    # resource of the stack with it (topology spec, "Known traps").
    cluster_identifier: DnsLabel
    context: str | None = None
    # A stack whose previews run where its cluster cannot be reached (CI review without
    # credentials) says so here; its previews then warn instead of failing. `up` always needs
    # the cluster.
    preview_without_cluster: bool = False
    node_topology_key: str = "kubernetes.io/hostname"
    zone_topology_key: str = "topology.kubernetes.io/zone"


class NetworkSettings(Model):
    # Interconnect partners allowed to send SIP (the source address is fraud evidence).
    sip_peer_cidrs: Annotated[list[Network], Field(min_length=1)]


class Features(Model):
    sip_tls: bool = True
    sip_udp_load_balancer: bool = True
    grafana: bool = True
    compliance_jobs: bool = True


class HaproxyPorts(Model):
    sip_tcp: Port = 5060
    sip_tls: Port = 5061
    management: Port = 8080
    stats: Port = 8404
    health: Port = 8405
    metrics: Port = 8406

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        _require_distinct_ports({"sipTcp": self.sip_tcp, "sipTls": self.sip_tls,
                                 "management": self.management, "stats": self.stats,
                                 "health": self.health, "metrics": self.metrics})
        return self


class HealthCheck(Model):
    inter_seconds: Annotated[int, Field(ge=1, le=300)] = 10
    rise: Annotated[int, Field(ge=1, le=10)] = 2
    fall: Annotated[int, Field(ge=1, le=10)] = 3


# Descriptors HAProxy keeps beyond two per connection: listeners, health checks of every
# server slot, resolvers, the stats socket (measured: 42 for the prod config).
HAPROXY_SPARE_FILES = 1000


def haproxy_open_files(max_connections: int) -> int:
    return 2 * max_connections + HAPROXY_SPARE_FILES


class HaproxyConfig(Model):
    image: ImageRef
    replicas: Annotated[int, Field(ge=1)]
    resources: Resources
    pdb: Disruption
    ports: HaproxyPorts = HaproxyPorts()
    health_check: HealthCheck = HealthCheck()
    max_connections: Annotated[int, Field(ge=100)] = 20000
    # The open-files limit the cluster's container runtime gives a pod (Kubernetes has no
    # setting for it). HAProxy needs two descriptors per connection and exits at start-up
    # when the limit is lower ("Cannot raise FD limit").
    open_files_limit: Annotated[int, Field(ge=1024)] = 65536
    service_type: Literal["LoadBalancer", "ClusterIP", "NodePort"] = "LoadBalancer"

    @model_validator(mode="after")
    def _pdb_below_replicas(self) -> Self:
        _require_disruption_below(self.replicas, self.pdb, "replicas")
        needed = haproxy_open_files(self.max_connections)
        if needed > self.open_files_limit:
            raise ValueError(
                f"maxConnections {self.max_connections} needs about {needed} open files (two "
                f"per connection, plus listeners and health checks), more than openFilesLimit "
                f"{self.open_files_limit}: HAProxy would exit at start-up; lower "
                "maxConnections or state the pods' real limit")
        return self


class OpenSipsPorts(Model):
    sip_udp: Port = 5060
    sip_tcp: Port = 5060
    sip_tls: Port = 5061
    # PROXY-protocol sockets: only the HAProxy pods may reach them (NetworkPolicy).
    proxy_tcp: Port = 5070
    proxy_tls: Port = 5071
    http: Port = 8888

    @model_validator(mode="after")
    def _distinct_tcp_ports(self) -> Self:
        _require_distinct_ports({"sipTcp": self.sip_tcp, "sipTls": self.sip_tls,
                                 "proxyTcp": self.proxy_tcp, "proxyTls": self.proxy_tls,
                                 "http": self.http})
        return self


class MediaGateway(Model):
    host: Host
    port: Port = 5060
    # load_balancer capacity: concurrent calls this gateway takes.
    capacity: Annotated[int, Field(ge=1)]


class FloodProtection(Model):
    """Requests per second one source address may send before OpenSIPS drops the excess.

    The source is the caller's own address (on the PROXY sockets, the one HAProxy's header
    carries). Interconnect partners send thousands of calls per second from a handful of
    addresses, so a known trunk (an address in network.sipPeerCidrs) has a limit of its own.
    """

    requests_per_second: Annotated[int, Field(ge=1)] = 30
    trunk_requests_per_second: Annotated[int, Field(ge=1)] = 5000


class CircuitBreaker(Model):
    failure_threshold: Annotated[int, Field(ge=1)] = 5
    open_seconds: Annotated[int, Field(ge=1)] = 30
    half_open_percent: Percent = 10


# OpenSIPS memory, from the container's limit. Shared memory holds transactions, dialogs and
# the dispatcher/load_balancer state (about 0.21 MiB per call per second, measured); each
# process has private memory of its own. Started with the 32 MiB default, a pod ran out at
# about 130 calls per second while using a fraction of its limit.
OPENSIPS_PRIVATE_MIB = 8
OPENSIPS_HELPER_PROCESSES = 8  # main, timers, TCP main, httpd and module helpers (measured: 6)
OPENSIPS_LIMIT_PERCENT = 90  # the rest of the limit is the runtime's and the kernel's
OPENSIPS_MIN_SHARED_MIB = 256


def opensips_memory_mib(limit: str, udp_processes: int, tcp_processes: int) -> tuple[int, int]:
    """(shared, private per process) MiB for `opensips -m/-M` under a memory limit."""
    processes = udp_processes + tcp_processes + OPENSIPS_HELPER_PROCESSES
    budget = int(parse_quantity(limit) * OPENSIPS_LIMIT_PERCENT / 100) // (1024 * 1024)
    return budget - processes * OPENSIPS_PRIVATE_MIB, OPENSIPS_PRIVATE_MIB


class OpenSipsConfig(Model):
    # Deployed as is unless imageBuild is set; then built from images/opensips/Dockerfile.
    image: ImageRef
    image_build: ImageBuild | None = None
    # Python image of the dispatcher-sync sidecar (stdlib only).
    dispatcher_sync_image: ImageRef
    resources: Resources
    autoscaling: Autoscaling
    pdb: Disruption
    ports: OpenSipsPorts = OpenSipsPorts()
    udp_workers: Annotated[int, Field(ge=1, le=64)]
    tcp_workers: Annotated[int, Field(ge=1, le=64)]
    max_udp_workers: Annotated[int, Field(ge=1, le=128)]
    dispatcher_probe_seconds: Annotated[int, Field(ge=1)] = 5
    gateway_probe_seconds: Annotated[int, Field(ge=1)] = 30
    gateway_failures_before_inactive: Annotated[int, Field(ge=1)] = 2
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    media_gateways: Annotated[list[MediaGateway], Field(min_length=1)]
    # Where the media gateways live, for the NetworkPolicy egress rule.
    media_gateway_cidrs: Annotated[list[Network], Field(min_length=1)]
    flood_protection: FloodProtection = FloodProtection()
    # A cluster without a cloud load balancer (the local stack) exposes SIP/UDP on a NodePort.
    udp_service_type: Literal["LoadBalancer", "NodePort"] = "LoadBalancer"

    @model_validator(mode="after")
    def _pdb_below_floor(self) -> Self:
        _require_disruption_below(
            self.autoscaling.min_replicas, self.pdb, "autoscaling.minReplicas"
        )
        version = _tag_version(self.image)
        if version is not None and version < (4, 0):
            raise ValueError(
                f"image {self.image!r} is OpenSIPS {version[0]}.{version[1]}: the config "
                "accepts HAProxy's PROXY protocol on its sockets (allow_proxy_protocol), which "
                "OpenSIPS has from 4.0 on; use a 4.0 image")
        gateways = [(g.host.lower(), g.port) for g in self.media_gateways]
        repeated = sorted({f"{host}:{port}" for host, port in gateways
                           if gateways.count((host, port)) > 1})
        if repeated:
            raise ValueError(f"mediaGateways lists {', '.join(repeated)} more than once: "
                             "load_balancer would count its channels twice; list each gateway "
                             "once with its whole capacity")
        if self.max_udp_workers < self.udp_workers:
            raise ValueError(
                f"maxUdpWorkers {self.max_udp_workers} is below udpWorkers {self.udp_workers}"
            )
        shared, private = opensips_memory_mib(self.resources.limits.memory,
                                              self.max_udp_workers, self.tcp_workers)
        if shared < OPENSIPS_MIN_SHARED_MIB:
            processes = self.max_udp_workers + self.tcp_workers + OPENSIPS_HELPER_PROCESSES
            raise ValueError(
                f"resources.limits.memory {self.resources.limits.memory} leaves {shared} MiB of "
                f"shared memory once {processes} processes have {private} MiB each; OpenSIPS "
                f"needs at least {OPENSIPS_MIN_SHARED_MIB} MiB (about 0.21 MiB per call per "
                "second): raise the limit or lower maxUdpWorkers/tcpWorkers")
        return self


class AcmEngineConfig(Model):
    image: ImageRef
    resources: Resources
    autoscaling: Autoscaling
    pdb: Disruption
    backup_replicas: Annotated[int, Field(ge=0, le=10)]
    http_port: Port = 8080
    sip_port: Port = 5060

    @model_validator(mode="after")
    def _pdb_below_floor(self) -> Self:
        _require_disruption_below(
            self.autoscaling.min_replicas, self.pdb, "autoscaling.minReplicas"
        )
        _require_distinct_ports({"httpPort": self.http_port, "sipPort": self.sip_port})
        return self


class DragonflyConfig(Model):
    image: ImageRef
    resources: Resources
    storage: Storage
    port: Port = 6379


class YugabyteTier(Model):
    replicas: Annotated[int, Field(ge=1)]
    resources: Resources
    storage: Storage


class YugabyteConfig(Model):
    image: ImageRef
    replication_factor: Annotated[int, Field(ge=1, le=7)]
    masters: YugabyteTier
    tservers: YugabyteTier
    ysql_port: Port = 5433

    @model_validator(mode="after")
    def _enough_replicas(self) -> Self:
        if self.replication_factor % 2 == 0:
            raise ValueError(
                f"replicationFactor {self.replication_factor} must be odd (Raft needs a majority)"
            )
        for tier in ("masters", "tservers"):
            replicas = getattr(self, tier).replicas
            if replicas < self.replication_factor:
                raise ValueError(
                    f"{tier}.replicas {replicas} is below replicationFactor "
                    f"{self.replication_factor}"
                )
        return self


class ClickHouseConfig(Model):
    image: ImageRef
    resources: Resources
    storage: Storage
    http_port: Port = 8123
    native_port: Port = 9000

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        _require_distinct_ports({"httpPort": self.http_port, "nativePort": self.native_port})
        return self


class PrometheusConfig(Model):
    image: ImageRef
    resources: Resources
    storage: Storage
    scrape_interval_seconds: Annotated[int, Field(ge=5, le=300)] = 15
    retention_days: Annotated[int, Field(ge=1, le=400)] = 15
    detection_latency_alert_ms: Annotated[int, Field(ge=1)] = 200


class GrafanaConfig(Model):
    image: ImageRef
    resources: Resources


class MonitoringConfig(Model):
    prometheus: PrometheusConfig
    grafana: GrafanaConfig


class ReportSchedule(Model):
    schedule: CronSchedule
    starting_deadline_seconds: Annotated[int, Field(ge=10)]
    active_deadline_seconds: Annotated[int, Field(ge=60)]


# When the regulator must have each report, in minutes after WAT midnight of the run's day
# (ncc-compliance.md, "Calendar"); an incident is due one hour after detection.
REPORT_DUE_MINUTES = {"daily": 6 * 60, "weekly": 12 * 60, "monthly": 18 * 60}
INCIDENT_DUE_SECONDS = 3600


class ComplianceReports(Model):
    daily: ReportSchedule
    weekly: ReportSchedule
    monthly: ReportSchedule
    incidents: ReportSchedule

    @model_validator(mode="after")
    def _deadlines_end_before_the_regulators(self) -> Self:
        """A run that starts as late as Kubernetes allows and runs as long as it may must
        still end by the regulator's deadline; otherwise it is killed in time to page."""
        problems = []
        for report, due in REPORT_DUE_MINUTES.items():
            schedule: ReportSchedule = getattr(self, report)
            minutes, hours = cron_fields(schedule.schedule)[:2]
            if len(minutes) != 1 or len(hours) != 1:
                problems.append(f"{report}.schedule {schedule.schedule!r} must run once a day "
                                "at a fixed time")
                continue
            start = next(iter(hours)) * 60 + next(iter(minutes))
            latest_end = start * 60 + schedule.starting_deadline_seconds \
                + schedule.active_deadline_seconds
            if latest_end > due * 60:
                problems.append(
                    f"{report}: a run starting at {start // 60:02d}:{start % 60:02d} WAT "
                    f"+ startingDeadlineSeconds {schedule.starting_deadline_seconds} "
                    f"+ activeDeadlineSeconds {schedule.active_deadline_seconds} can end after "
                    f"the regulator's {due // 60:02d}:{due % 60:02d} deadline")
        incidents = self.incidents
        if incidents.starting_deadline_seconds + incidents.active_deadline_seconds \
                >= INCIDENT_DUE_SECONDS:
            problems.append("incidents: startingDeadlineSeconds + activeDeadlineSeconds must "
                            "stay under the 1-hour incident deadline")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ComplianceConfig(Model):
    # Deployed as is unless imageBuild is set; then built from jobs/Dockerfile and pushed.
    image: ImageRef
    image_build: ImageBuild | None = None
    resources: Resources
    license_number: LicenseNumber
    ncc_environment: Literal["sandbox", "production"]
    # Regulator endpoints, for the job's NetworkPolicy egress.
    ncc_egress_cidrs: Annotated[list[Network], Field(min_length=1)]
    sftp_host: Host
    sftp_port: Port = 22
    sftp_user: SftpUser = "acm"
    sftp_directory: AbsolutePath = "/incoming"
    atrs_base_url: HttpsUrl
    dry_run: bool = False
    reports: ComplianceReports
    scratch_size: StorageQuantity = "1Gi"
    history_limit: Annotated[int, Field(ge=1, le=30)] = 7


class SecretSettings(Model):
    """Values that only ever come from Pulumi secret config (`pulumi config set --secret`)."""

    database_password: str
    grafana_admin_password: str
    sip_tls_certificate: str
    sip_tls_private_key: str
    ncc_atrs_client_id: str
    ncc_atrs_client_secret: str
    ncc_sftp_private_key: str
    ncc_sftp_known_hosts: str


SECRET_KEYS = tuple(to_camel(name) for name in SecretSettings.model_fields)


class StackConfig(Model):
    environment: Environment
    namespace: DnsLabel
    kubernetes: KubernetesSettings
    network: NetworkSettings
    features: Features = Features()
    haproxy: HaproxyConfig
    opensips: OpenSipsConfig
    acm_engine: AcmEngineConfig
    dragonfly: DragonflyConfig
    yugabyte: YugabyteConfig
    clickhouse: ClickHouseConfig
    monitoring: MonitoringConfig
    compliance: ComplianceConfig
    secrets: SecretSettings

    @model_validator(mode="after")
    def _production_floor(self) -> Self:
        # The production shape of the topology spec is a floor, not a suggestion.
        if self.environment != "prod":
            return self
        problems = []
        if self.haproxy.replicas < 2:
            problems.append(f"haproxy.replicas {self.haproxy.replicas} is below 2")
        if self.opensips.autoscaling.min_replicas < 3:
            problems.append("opensips.autoscaling.minReplicas is below 3")
        if self.acm_engine.autoscaling.min_replicas < 3:
            problems.append("acmEngine.autoscaling.minReplicas is below 3")
        if self.acm_engine.backup_replicas < 1:
            problems.append("acmEngine.backupReplicas is below 1")
        if self.yugabyte.replication_factor < 3:
            problems.append("yugabyte.replicationFactor is below 3")
        if self.compliance.dry_run:
            problems.append("compliance.dryRun is true: prod must submit to the regulator")
        if self.compliance.ncc_environment != "production":
            problems.append("compliance.nccEnvironment must be 'production' in prod")
        if problems:
            raise ValueError("prod requires " + "; ".join(problems))
        return self


def _key_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def load_stack_config(
    stack: str, values: Mapping[str, Any], secret_keys: frozenset[str]
) -> StackConfig:
    """Validate a stack's `acm-platform:` config; raise `StackConfigError` naming each key.

    `values` maps keys without the project prefix to their decoded values; `secret_keys`
    names the keys that Pulumi holds as secrets. Secret settings stored in plain text are
    refused, as are missing ones, so a password can never sit readable in a stack file.
    """
    problems: list[tuple[str, str]] = []
    document: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECRET_KEYS:
            if key not in secret_keys:
                problems.append(
                    (key, f"is stored in plain text; set it with "
                          f"`pulumi config set --secret {PROJECT}:{key}`")
                )
            secrets[key] = value
        else:
            document[key] = value
    for key in SECRET_KEYS:
        if key not in values:
            problems.append(
                (key, f"required secret is missing; set it with "
                      f"`pulumi config set --secret {PROJECT}:{key}`")
            )
    document["secrets"] = secrets
    try:
        config = StackConfig.model_validate(document)
    except ValidationError as error:
        for detail in error.errors():
            location = detail["loc"]
            if location and location[0] == "secrets":
                location = location[1:]
            path = _key_path(location) or "(stack)"
            message = detail["msg"].removeprefix("Value error, ")
            if detail["type"] == "extra_forbidden":
                message = "unknown key (misspelt, or not a setting of this platform)"
            if detail["type"] == "missing" and path not in dict(problems):
                message = "required key is missing"
            if (path, message) not in problems and not (
                detail["type"] == "missing" and path in SECRET_KEYS
            ):
                problems.append((path, message))
        raise StackConfigError(stack, problems) from None
    # Contents, where the values are real (the engine decrypted them); the offline render's
    # placeholders (`<secret acm-platform:KEY>`) are left alone.
    real = {key: str(value) for key, value in secrets.items()
            if value != f"<secret {PROJECT}:{key}>"}
    if real:
        from stacks.secret_contents import secret_problems

        problems += secret_problems(real)
    if problems:
        raise StackConfigError(stack, problems)
    if config.environment != stack and not (stack.startswith(config.environment + "-")):
        raise StackConfigError(
            stack,
            [("environment", f"is {config.environment!r} but the stack is {stack!r}")],
        )
    return config

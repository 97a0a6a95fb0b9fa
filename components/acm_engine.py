"""AcmEngine: the fraud detection service OpenSIPS consults for every initial INVITE."""

from __future__ import annotations

from typing import Annotated, Any, Self

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.base import kube
from components.base.credentials import secrets_digest
from components.base.images import ImageSource
from components.base.settings import (
    Autoscaling,
    Disruption,
    ImageBuild,
    ImageRef,
    Model,
    Port,
    Resources,
    require_disruption_below,
    require_distinct_ports,
    require_scalable,
    require_stand_in_build,
)
from components.base.workload import DeploymentSpec, managed_deployment, service
from components.stand_ins import SIP_STAND_IN_IMAGE

# --- settings: acm-platform:acmEngine -----------------------------------------------------


# The engines' user in the breaker store (Dragonfly's ACL): their own cache keys, reads and
# writes, nothing administrative.
STORE_USER = "acm-engine"
STORE_KEY_PATTERNS = ("acm:engine:*",)
STORE_COMMANDS = ("+@read", "+@write", "+@keyspace", "-@dangerous", "+ping", "+select")
STORE_SECRET_DIR = "/etc/acm/breaker-store"
# The engines' metrics account (what Prometheus scrapes with).
METRICS_SECRET = "acm-engine-metrics"
METRICS_SECRET_DIR = "/etc/acm/metrics"
METRICS_USER = "acm-control"
CLICKHOUSE_SECRET_DIR = "/etc/acm/clickhouse"

class AcmEngineConfig(Model):
    image: ImageRef
    """The engine's image, pinned by tag or digest."""
    resources: Resources
    """CPU and memory of each engine pod."""
    autoscaling: Autoscaling
    """The active engines' HorizontalPodAutoscaler."""
    pdb: Disruption
    """The active engines' PodDisruptionBudget."""
    backup_replicas: Annotated[int, Field(ge=0, le=10)]
    """Standby engines, used only when no active engine answers."""
    http_port: Port = 8080
    """The engine's HTTP port (`/health`, `/metrics` with its account)."""
    sip_port: Port = 5060
    """The engine's SIP port."""
    image_build: ImageBuild | None = None
    """Build the engine stand-in's image here (`local` only: the real engine's image cannot be had).
    """
    stand_in: bool = False
    """True: the SIPp stand-in the SIP tests use (302 clean, 603 for +23490, 200 to OPTIONS,
    /health) in the engine's place, built by the stack; for clusters without the product."""

    @model_validator(mode="after")
    def _pdb_below_floor(self) -> Self:
        require_disruption_below(
            self.autoscaling.min_replicas, self.pdb, "autoscaling.minReplicas"
        )
        require_scalable(self.resources, self.autoscaling)
        require_distinct_ports({"httpPort": self.http_port, "sipPort": self.sip_port})
        if self.stand_in:
            require_stand_in_build(self.stand_in, self.image_build)
        return self


# --- the component ------------------------------------------------------------------------


class AcmEngineArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    images: ImageSource
    """Where the part's images come from: the stack's StackImages (each built once)."""

    namespace: str
    instance: str
    settings: AcmEngineConfig
    priority_class: str
    node_topology_key: str
    zone_topology_key: str
    database_host: str
    database_port: int
    database_secret_name: str
    dragonfly_host: str
    dragonfly_port: int
    dragonfly_secret_name: str
    """The Secret holding the engines' password in the breaker store (key STORE_USER)."""
    clickhouse_url: str
    clickhouse_user: str
    """The engines' ClickHouse user, and the Secret holding its password (key: the user)."""
    clickhouse_secret_name: str
    clickhouse_password: str
    database_password: str
    """What the engines read at start (the database password as an environment variable, the store
    password as a file), for the pod template's keyed digest under the stack's secretsDigestKey: a
    rotated one rolls the engines."""
    store_password: str
    digest_key: str
    metrics_password: str
    """The account Prometheus scrapes the engines' /metrics with (Secret METRICS_SECRET)."""


class AcmEngine(pulumi.ComponentResource):
    """Active engines scaled by an HPA, plus standby engines OpenSIPS uses only as failover.

    Each engine is its own dispatcher destination, found through a headless Service that lists
    ready pods only, so OpenSIPS probes and fails over per engine, not per ClusterIP.
    """

    def __init__(self, name: str, args: AcmEngineArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:AcmEngine", name, None, opts)
        settings = args.settings
        self.metrics_secret = k8s.core.v1.Secret(
            f"{name}-metrics",
            metadata=kube.metadata(METRICS_SECRET, args.namespace,
                                   kube.ACM_ENGINE.labels(args.instance)),
            type="Opaque",
            string_data={"password": pulumi.Output.secret(args.metrics_password)},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.metrics_account = kube.BasicAuth(METRICS_USER, METRICS_SECRET)
        self.active = self._engines(name, kube.ACM_ENGINE, args, role="active")
        self.backup = None
        if settings.backup_replicas > 0:
            self.backup = self._engines(f"{name}-backup", kube.ACM_ENGINE_BACKUP, args,
                                        role="backup")
        self.http_service = service(
            f"{name}-http-service", kube.ACM_ENGINE.name, kube.ACM_ENGINE, args.namespace,
            args.instance, [{"name": "http", "port": settings.http_port, "target_port": "http"}],
            self, type="ClusterIP",
        )
        self.sip_domain = self._sip_service(name, kube.ACM_ENGINE, args)
        self.backup_sip_domain = (
            self._sip_service(f"{name}-backup", kube.ACM_ENGINE_BACKUP, args)
            if self.backup is not None else None
        )
        self.sip_port = settings.sip_port
        self.register_outputs({
            "sipDomain": self.sip_domain,
            "backupSipDomain": self.backup_sip_domain,
            "sipPort": self.sip_port,
        })

    def _engines(self, name: str, part: kube.Part, args: AcmEngineArgs, role: str) -> Any:
        settings = args.settings
        container: dict[str, Any] = {
            "name": "acm-engine",
            "image": settings.image,
            "ports": [
                {"name": "http", "container_port": settings.http_port, "protocol": "TCP"},
                {"name": "sip-udp", "container_port": settings.sip_port, "protocol": "UDP"},
                {"name": "sip-tcp", "container_port": settings.sip_port, "protocol": "TCP"},
            ],
            "env": [
                {"name": "ACM_ROLE", "value": role},
                {"name": "ACM_HTTP_PORT", "value": str(settings.http_port)},
                {"name": "ACM_SIP_PORT", "value": str(settings.sip_port)},
                {"name": "ACM_DATABASE_HOST", "value": args.database_host},
                {"name": "ACM_DATABASE_PORT", "value": str(args.database_port)},
                {"name": "ACM_DATABASE_USER", "value_from": {"secret_key_ref": {
                    "name": args.database_secret_name, "key": "username"}}},
                {"name": "ACM_DATABASE_PASSWORD", "value_from": {"secret_key_ref": {
                    "name": args.database_secret_name, "key": "password"}}},
                {"name": "ACM_REDIS_URL",
                 "value": f"redis://{args.dragonfly_host}:{args.dragonfly_port}"},
                # The engines' ACL user; its password a file of the store's Secret.
                {"name": "ACM_REDIS_USERNAME", "value": STORE_USER},
                {"name": "ACM_REDIS_PASSWORD_FILE", "value": f"{STORE_SECRET_DIR}/password"},
                # /metrics asks for this account (Prometheus has it); /health answers anyone.
                {"name": "ACM_METRICS_USERNAME", "value": METRICS_USER},
                {"name": "ACM_METRICS_PASSWORD_FILE", "value": f"{METRICS_SECRET_DIR}/password"},
                {"name": "ACM_CLICKHOUSE_URL", "value": args.clickhouse_url},
                {"name": "ACM_CLICKHOUSE_USERNAME", "value": args.clickhouse_user},
                {"name": "ACM_CLICKHOUSE_PASSWORD_FILE",
                 "value": f"{CLICKHOUSE_SECRET_DIR}/password"},
            ],
            "resources": kube.resources(settings.resources),
            "security_context": kube.container_security(),
            "liveness_probe": kube.http_probe("/health", "http", failures=3),
            "readiness_probe": kube.http_probe("/health", "http", period=5, failures=2),
            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"},
                              {"name": "store-account", "mount_path": STORE_SECRET_DIR,
                               "read_only": True},
                              {"name": "metrics-account", "mount_path": METRICS_SECRET_DIR,
                               "read_only": True},
                              {"name": "clickhouse-account",
                               "mount_path": CLICKHOUSE_SECRET_DIR, "read_only": True}],
        }
        if settings.stand_in:
            container["image"] = args.images.image(SIP_STAND_IN_IMAGE, settings.image,
                                                   settings.image_build)
            container["args"] = ["engine", "--sip-port", str(settings.sip_port),
                                 "--http-port", str(settings.http_port),
                                 "--metrics-user", METRICS_USER, "--metrics-password-file",
                                 f"{METRICS_SECRET_DIR}/password"]
        spec = DeploymentSpec(
            part=part, namespace=args.namespace, instance=args.instance,
            containers=[container], priority_class=args.priority_class,
            node_topology_key=args.node_topology_key, zone_topology_key=args.zone_topology_key,
            autoscaling=settings.autoscaling if role == "active" else None,
            replicas=settings.backup_replicas if role == "backup" else None,
            # The standby has no floor to protect: a budget over it would only block drains.
            disruption=settings.pdb if role == "active" else None,
            secrets_digest=secrets_digest(args.digest_key, {
                f"{args.database_secret_name}/password": args.database_password,
                f"{args.dragonfly_secret_name}/{STORE_USER}": args.store_password,
                f"{METRICS_SECRET}/password": args.metrics_password,
                f"{args.clickhouse_secret_name}/{args.clickhouse_user}":
                    args.clickhouse_password}),
            volumes=[{"name": "tmp", "empty_dir": {"size_limit": "128Mi"}},
                     {"name": "store-account", "secret": {
                         "secret_name": args.dragonfly_secret_name, "default_mode": 0o440,
                         "items": [{"key": STORE_USER, "path": "password"}]}},
                     {"name": "metrics-account", "secret": {
                         "secret_name": METRICS_SECRET, "default_mode": 0o440}},
                     # Optional: ClickHouse may be switched off (features.clickhouse).
                     {"name": "clickhouse-account", "secret": {
                         "secret_name": args.clickhouse_secret_name, "default_mode": 0o440,
                         "optional": True,
                         "items": [{"key": args.clickhouse_user, "path": "password"}]}}],
            extra_labels={kube.ROLE_LABEL: role},
        )
        return managed_deployment(name, spec, self)

    def _sip_service(self, name: str, part: kube.Part, args: AcmEngineArgs) -> str:
        service_name = f"{part.name}-sip"
        service(
            f"{name}-sip-service", service_name, part, args.namespace, args.instance,
            [
                {"name": "sip-udp", "port": args.settings.sip_port, "target_port": "sip-udp",
                 "protocol": "UDP"},
                {"name": "sip-tcp", "port": args.settings.sip_port, "target_port": "sip-tcp",
                 "protocol": "TCP"},
            ],
            self, cluster_ip="None", publish_not_ready_addresses=False,
        )
        return f"{service_name}.{args.namespace}.svc.cluster.local"

"""HaproxyTier: the L4 entry for SIP over TCP and TLS, passing the caller's address on."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.base import kube
from components.base.credentials import secrets_digest
from components.base.images import ImageRecipe, ImageSource
from components.base.settings import (
    Disruption,
    Features,
    ImageBuild,
    ImageRef,
    Model,
    Port,
    Resources,
    require_disruption_below,
    require_distinct_ports,
)
from components.base.templating import render
from components.base.workload import DeploymentSpec, managed_deployment, service
from components.opensips.settings import OpenSipsPorts

CONFIG_DIR = "/usr/local/etc/haproxy"
RUN_DIR = "/var/run/haproxy"
# Basic auth of the stats and metrics frontends: a userlist in a Secret, mounted next to
# haproxy.cfg and loaded as a second config file, so the cfg text never holds the password.
CONTROL_SECRET = "haproxy-control"
CONTROL_USER = "acm-control"
CONTROL_USERLIST = "control_users"
USERLIST_FILE = "userlist.cfg"
# The health check HAProxy sends to each OpenSIPS: a SIP OPTIONS that OpenSIPS answers 200.
OPTIONS_PROBE = (
    "OPTIONS sip:opensips SIP/2.0\\r\\n"
    "Via: SIP/2.0/TCP haproxy.invalid;branch=z9hG4bK-haproxy-check\\r\\n"
    "Max-Forwards: 70\\r\\n"
    "From: <sip:haproxy@haproxy.invalid>;tag=haproxy-check\\r\\n"
    "To: <sip:opensips>\\r\\n"
    "Call-ID: haproxy-check@haproxy.invalid\\r\\n"
    "CSeq: 1 OPTIONS\\r\\n"
    "Content-Length: 0\\r\\n\\r\\n"
)


# --- settings: acm-platform:haproxy -------------------------------------------------------


class HaproxyPorts(Model):
    sip_tcp: Port = 5060
    """SIP over TCP from the interconnect."""
    sip_tls: Port = 5061
    """SIP over TLS from the interconnect (passed through to OpenSIPS)."""
    management: Port = 8080
    """OpenSIPS's management interface, through HAProxy, with the control account."""
    stats: Port = 8404
    """HAProxy's stats page, with the control account."""
    health: Port = 8405
    """The health page the probes and a cloud load balancer ask."""
    metrics: Port = 8406
    """HAProxy's Prometheus metrics, with the control account."""

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        require_distinct_ports({"sipTcp": self.sip_tcp, "sipTls": self.sip_tls,
                                 "management": self.management, "stats": self.stats,
                                 "health": self.health, "metrics": self.metrics})
        return self


class HealthCheck(Model):
    inter_seconds: Annotated[int, Field(ge=1, le=300)] = 10
    """Seconds between checks of a healthy OpenSIPS."""
    rise: Annotated[int, Field(ge=1, le=10)] = 2
    """Checks in a row that bring an OpenSIPS into service."""
    fall: Annotated[int, Field(ge=1, le=10)] = 3
    """Checks in a row that take an OpenSIPS out of service."""


# How HAProxy finds and admits OpenSIPS pods, and how fast it lets one go. These set the
# OpenSIPS rollout's timing (`opensips_admission_seconds`, `opensips_withdrawal_seconds`):
# a rollout that stops an old pod before HAProxy sends to the new one, or a pod that exits
# while HAProxy still sends it new calls, fails calls.
# - The cluster DNS answers with the kubernetes plugin's record TTL (CoreDNS: 5 s).
CLUSTER_DNS_TTL_SECONDS = 5
# - HAProxy re-resolves the SRV records this often (`hold valid`).
RESOLVE_SECONDS = 2
# - While a server changes state (new, or failing), it is checked every second (`downinter`,
#   `fastinter`) instead of every interSeconds: a new pod is up after `rise` seconds, a dead
#   one down `fall - 1` seconds after its first failed check.
TRANSITION_CHECK_SECONDS = 1
# - Slack for the API server's endpoint update and a slow check.
DISCOVERY_SLACK_SECONDS = 3


def opensips_admission_seconds(check: HealthCheck) -> int:
    """From an OpenSIPS pod becoming Ready to HAProxy sending it calls."""
    return (CLUSTER_DNS_TTL_SECONDS + RESOLVE_SECONDS + check.rise * TRANSITION_CHECK_SECONDS
            + DISCOVERY_SLACK_SECONDS)


# A terminating OpenSIPS that gets one more INVITE after it began shutting down answers it
# wrongly (measured: 1-2 calls of 3,750 answered 405 in a rollout with 3 s of slack here).
WITHDRAWAL_SLACK_SECONDS = 8


def opensips_withdrawal_seconds() -> int:
    """From an OpenSIPS pod leaving the Service's endpoints (it is terminating) to HAProxy
    sending it no new calls, with room to spare: its preStop sleep."""
    return CLUSTER_DNS_TTL_SECONDS + RESOLVE_SECONDS + WITHDRAWAL_SLACK_SECONDS


# A terminating HAProxy pod keeps serving while kube-proxy and a cloud load balancer's health
# checks take it out of the SIP Service (kube-proxy: about a second; a load balancer with
# externalTrafficPolicy Local checks every few seconds).
HAPROXY_WITHDRAWAL_SECONDS = 10

# After its withdrawal a stopping HAProxy stops listening and lets the connections it holds
# finish (soft stop: the image's stop signal is SIGUSR1, as upstream's), for at most this
# long; then it closes the rest (`hard-stop-after`), inside the pod's grace period.
HAPROXY_DRAIN_SECONDS = 15
HAPROXY_GRACE_SECONDS = HAPROXY_WITHDRAWAL_SECONDS + HAPROXY_DRAIN_SECONDS + 5


# Descriptors HAProxy keeps beyond two per connection: listeners, health checks of every
# server slot, resolvers, the stats socket (measured: 42 for the prod config).
HAPROXY_SPARE_FILES = 1000


def haproxy_open_files(max_connections: int) -> int:
    return 2 * max_connections + HAPROXY_SPARE_FILES


# Where upstream's image cannot be pulled (the local stack), HAProxy 2.6 from Debian.
HAPROXY_IMAGE = ImageRecipe("haproxy", "images/haproxy/Dockerfile", ("images/haproxy",))


class HaproxyConfig(Model):
    image: ImageRef
    """HAProxy's image, pinned by tag or digest (not `:latest`)."""
    image_build: ImageBuild | None = None
    """Build HAProxy's image here (from Debian's package) instead of pulling `image`."""
    replicas: Annotated[int, Field(ge=1)]
    """HAProxy pods (a fixed number: the front door does not autoscale)."""
    resources: Resources
    """CPU and memory of each HAProxy pod."""
    pdb: Disruption
    """HAProxy's PodDisruptionBudget."""
    ports: HaproxyPorts = HaproxyPorts()
    """HAProxy's listening ports."""
    health_check: HealthCheck = HealthCheck()
    """How HAProxy checks each OpenSIPS pod."""
    max_connections: Annotated[int, Field(ge=100)] = 20000
    """Connections each HAProxy pod holds at most; two file descriptors each must fit
    `openFilesLimit`."""
    open_files_limit: Annotated[int, Field(ge=1024)] = 65536
    """The open-files limit the cluster's container runtime gives a pod (Kubernetes has no setting
    for it). HAProxy needs two descriptors per connection and exits at start-up when the limit is
    lower ("Cannot raise FD limit")."""
    service_type: Literal["LoadBalancer", "ClusterIP", "NodePort"] = "LoadBalancer"
    """The SIP Service's type: `LoadBalancer` in a cloud, `NodePort` on the local cluster."""

    @model_validator(mode="after")
    def _pdb_below_replicas(self) -> Self:
        require_disruption_below(self.replicas, self.pdb, "replicas")
        needed = haproxy_open_files(self.max_connections)
        if needed > self.open_files_limit:
            raise ValueError(
                f"maxConnections {self.max_connections} needs about {needed} open files (two "
                f"per connection, plus listeners and health checks), more than openFilesLimit "
                f"{self.open_files_limit}: HAProxy would exit at start-up; lower "
                "maxConnections or state the pods' real limit")
        return self


# --- the component ------------------------------------------------------------------------


class HaproxyArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    images: ImageSource
    """Where the part's images come from: the stack's StackImages (each built once)."""

    namespace: str
    instance: str
    settings: HaproxyConfig
    features: Features
    priority_class: str
    node_topology_key: str
    zone_topology_key: str
    opensips_headless_domain: str
    opensips_ports: OpenSipsPorts
    opensips_max_replicas: int
    sip_peer_cidrs: list[str]
    control_password: str
    digest_key: str
    """The stack's secretsDigestKey: the pod template carries the keyed digest of the userlist
    HAProxy reads at start, so a rotated password rolls HAProxy."""


def control_userlist(password: str) -> str:
    """The second config file: the control account (the Secret's content)."""
    return render("haproxy-userlist.cfg.j2", userlist=CONTROL_USERLIST, username=CONTROL_USER,
                  password=password)


def haproxy_values(args: HaproxyArgs) -> dict[str, Any]:
    settings = args.settings
    check = settings.health_check
    domain = args.opensips_headless_domain
    backends: list[dict[str, Any]] = [
        {"name": "opensips_sip_tcp", "srv_record": f"_proxy-tcp._tcp.{domain}", "check_port": None}
    ]
    if args.features.sip_tls:
        backends.append({"name": "opensips_sip_tls", "srv_record": f"_proxy-tls._tcp.{domain}",
                         "check_port": args.opensips_ports.proxy_tcp})
    return {
        "max_connections": settings.max_connections,
        "hard_stop_after": f"{HAPROXY_DRAIN_SECONDS}s",
        "admin_socket": f"{RUN_DIR}/admin.sock",
        "tls_enabled": args.features.sip_tls,
        "sip_tcp_port": settings.ports.sip_tcp,
        "sip_tls_port": settings.ports.sip_tls,
        "management_port": settings.ports.management,
        "stats_port": settings.ports.stats,
        "health_port": settings.ports.health,
        "metrics_port": settings.ports.metrics,
        "sip_backends": backends,
        "mi_srv_record": f"_http._tcp.{domain}",
        # One slot per OpenSIPS the HPA may run, so scaling up never outgrows the backend.
        "server_slots": args.opensips_max_replicas,
        "stick_table_size": "1m",
        "stick_expire": "1h",
        "check_inter": f"{check.inter_seconds}s",
        "check_rise": check.rise,
        "check_fall": check.fall,
        "transition_check": f"{TRANSITION_CHECK_SECONDS}s",
        "resolve_interval": f"{RESOLVE_SECONDS}s",
        "options_probe": OPTIONS_PROBE,
        "control_userlist": CONTROL_USERLIST,
        "control_realm": "ACM HAProxy",
    }


class HaproxyTier(pulumi.ComponentResource):
    """HAProxy Deployment, its rendered config, PDB, and the SIP and admin Services."""

    def __init__(self, name: str, args: HaproxyArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:HaproxyTier", name, None, opts)
        settings = args.settings
        part = kube.HAPROXY
        ports = settings.ports
        self.config = kube.RenderedConfig(
            f"{name}-config", "haproxy-config", args.namespace, part.labels(args.instance),
            {"haproxy.cfg": render("haproxy.cfg.j2", **haproxy_values(args))},
            pulumi.ResourceOptions(parent=self),
        )
        self.control_account = kube.BasicAuth(CONTROL_USER, CONTROL_SECRET)
        self.control_secret = k8s.core.v1.Secret(
            f"{name}-control",
            metadata=kube.metadata(CONTROL_SECRET, args.namespace,
                                   {**part.labels(args.instance),
                                    kube.RENDERED_CONFIG_LABEL: "true"}),
            type="Opaque",
            string_data={USERLIST_FILE: pulumi.Output.secret(
                             control_userlist(args.control_password)),
                         "password": pulumi.Output.secret(args.control_password)},
            opts=pulumi.ResourceOptions(parent=self),
        )
        container_ports = [
            {"name": "sip-tcp", "container_port": ports.sip_tcp, "protocol": "TCP"},
            {"name": "management", "container_port": ports.management, "protocol": "TCP"},
            {"name": "stats", "container_port": ports.stats, "protocol": "TCP"},
            {"name": "health", "container_port": ports.health, "protocol": "TCP"},
            {"name": "metrics", "container_port": ports.metrics, "protocol": "TCP"},
        ]
        if args.features.sip_tls:
            container_ports.insert(
                1, {"name": "sip-tls", "container_port": ports.sip_tls, "protocol": "TCP"}
            )
        container = {
            "name": "haproxy",
            "image": args.images.image(HAPROXY_IMAGE, settings.image, settings.image_build),
            "command": ["haproxy", "-W", "-db", "-f", f"{CONFIG_DIR}/{USERLIST_FILE}",
                        "-f", f"{CONFIG_DIR}/haproxy.cfg"],
            "ports": container_ports,
            "resources": kube.resources(settings.resources),
            "security_context": kube.container_security(),
            "liveness_probe": kube.http_probe("/healthz", "health"),
            "readiness_probe": kube.http_probe("/ready", "health", period=5, failures=2),
            # Leaves the SIP Service before it stops listening.
            "lifecycle": {"pre_stop": {"sleep": {"seconds": HAPROXY_WITHDRAWAL_SECONDS}}},
            "volume_mounts": [
                {"name": "config", "mount_path": CONFIG_DIR, "read_only": True},
                {"name": "run", "mount_path": RUN_DIR},
            ],
        }
        spec = DeploymentSpec(
            part=part, namespace=args.namespace, instance=args.instance,
            containers=[container], priority_class=args.priority_class,
            node_topology_key=args.node_topology_key, zone_topology_key=args.zone_topology_key,
            replicas=settings.replicas, disruption=settings.pdb,
            termination_grace_seconds=HAPROXY_GRACE_SECONDS,
            secrets_digest=secrets_digest(args.digest_key, {
                f"{CONTROL_SECRET}/{USERLIST_FILE}": control_userlist(args.control_password)}),
            volumes=[
                {"name": "config", "projected": {"default_mode": 0o440, "sources": [
                    {"config_map": {"name": self.config.name}},
                    {"secret": {"name": CONTROL_SECRET, "items": [
                        {"key": USERLIST_FILE, "path": USERLIST_FILE}]}},
                ]}},
                {"name": "run", "empty_dir": {"medium": "Memory", "size_limit": "8Mi"}},
            ],
            config_hash=self.config.hash,
        )
        self.workload = managed_deployment(name, spec, self,
                                             depends_on=[self.config.config_map,
                                                         self.control_secret])
        sip_ports = [{"name": "sip-tcp", "port": ports.sip_tcp, "target_port": "sip-tcp",
                      "protocol": "TCP"}]
        if args.features.sip_tls:
            sip_ports.append({"name": "sip-tls", "port": ports.sip_tls, "target_port": "sip-tls",
                              "protocol": "TCP"})
        sip_spec: dict[str, Any] = {"type": settings.service_type}
        if settings.service_type == "LoadBalancer":
            # Local keeps the caller's source address, which send-proxy passes to OpenSIPS.
            sip_spec["external_traffic_policy"] = "Local"
            sip_spec["load_balancer_source_ranges"] = list(args.sip_peer_cidrs)
        self.sip_service = service(
            f"{name}-sip", "haproxy-sip", part, args.namespace, args.instance, sip_ports, self,
            **sip_spec,
        )
        self.admin_service = service(
            f"{name}-admin", "haproxy-admin", part, args.namespace, args.instance,
            [
                {"name": "management", "port": ports.management, "target_port": "management"},
                {"name": "stats", "port": ports.stats, "target_port": "stats"},
                {"name": "health", "port": ports.health, "target_port": "health"},
                {"name": "metrics", "port": ports.metrics, "target_port": "metrics"},
            ],
            # Headless: Prometheus scrapes each HAProxy, the smoke tests read each one's stats.
            self, cluster_ip="None",
        )
        self.register_outputs({"configHash": self.config.hash})

"""OpenSipsCluster: the SIP proxy that screens every call through the ACM engines."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.base import kube
from components.base.credentials import secrets_digest
from components.base.workload import DeploymentSpec, managed_deployment, service
from components.opensips.args import OpenSipsArgs
from components.opensips.config_files import (
    CACHEDB_CREDENTIALS_FILE,
    CONTROL_USER,
    HTTPD_CREDENTIALS_FILE,
    SIDECAR_METRICS_PORT,
    SIDECAR_PASSWORD_FILE,
    OpenSipsFiles,
    cachedb_credentials,
    httpd_credentials,
    opensips_files,
)
from components.opensips.memory import opensips_memory_mib
from components.opensips.modules import DISPATCHER_SYNC_IMAGE, OPENSIPS_IMAGE

CONFIG_DIR = "/etc/opensips"
TLS_DIR = "/etc/opensips/tls"
DB_DIR = "/var/lib/opensips/db"
RUN_DIR = "/run/opensips"
CONTROL_SECRET = "opensips-control"


class OpenSipsCluster(pulumi.ComponentResource):
    """OpenSIPS 4.0 Deployment scaled by an HPA, its config, TLS Secret and SIP Services."""

    def __init__(self, name: str, args: OpenSipsArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:OpenSipsCluster", name, None, opts)
        settings = args.settings
        part = kube.OPENSIPS
        labels = part.labels(args.instance)
        child = pulumi.ResourceOptions(parent=self)

        self.files: OpenSipsFiles = opensips_files(args, TLS_DIR, DB_DIR, RUN_DIR)
        self.config = kube.RenderedConfig(
            f"{name}-config", "opensips-config", args.namespace, labels, self.files.config, child
        )
        self.sidecar_config = kube.RenderedConfig(
            f"{name}-dispatcher-sync", "opensips-dispatcher-sync", args.namespace, labels,
            self.files.sidecar, child,
        )
        self.tls_secret = k8s.core.v1.Secret(
            f"{name}-tls",
            metadata=kube.metadata("opensips-sip-tls", args.namespace, labels),
            type="kubernetes.io/tls",
            string_data={
                "tls.crt": pulumi.Output.secret(args.tls_certificate),
                "tls.key": pulumi.Output.secret(args.tls_private_key),
            },
            opts=child,
        )
        # The httpd's basic-auth account: OpenSIPS includes the cfg fragment, the sidecar and
        # Prometheus read the password. Labelled as rendered config so that the offline render
        # shows (and `opensips -C` checks) the include with its placeholder.
        self.control_account = kube.BasicAuth(CONTROL_USER, CONTROL_SECRET)
        self.control_secret = k8s.core.v1.Secret(
            f"{name}-control",
            metadata=kube.metadata(CONTROL_SECRET, args.namespace,
                                   {**labels, kube.RENDERED_CONFIG_LABEL: "true"}),
            type="Opaque",
            string_data={
                HTTPD_CREDENTIALS_FILE: pulumi.Output.secret(
                    httpd_credentials(args.control_password)),
                CACHEDB_CREDENTIALS_FILE: pulumi.Output.secret(cachedb_credentials(args)),
                "password": pulumi.Output.secret(args.control_password),
            },
            opts=child,
        )
        # Built from the pinned source when the stack says imageBuild, with the sidecar's Python.
        opensips_image = args.images.image(OPENSIPS_IMAGE, settings.image, settings.image_build)
        sidecar_image = args.images.image(DISPATCHER_SYNC_IMAGE, args.sidecar_image,
                                          settings.image_build)
        ports = settings.ports
        shared_mib, private_mib = opensips_memory_mib(
            settings.resources.limits.memory, settings.max_udp_workers, settings.tcp_workers)
        opensips_container = {
            "name": "opensips",
            "image": opensips_image,
            # Memory sized from the container's limit (validated in the stack config): with
            # the 32 MiB default, shared memory ran out far below the limit and the HPA.
            "command": ["opensips", "-F", "-f", f"{CONFIG_DIR}/opensips.cfg",
                        "-m", str(shared_mib), "-M", str(private_mib)],
            "ports": [
                {"name": "sip-udp", "container_port": ports.sip_udp, "protocol": "UDP"},
                {"name": "sip-tcp", "container_port": ports.sip_tcp, "protocol": "TCP"},
                {"name": "sip-tls", "container_port": ports.sip_tls, "protocol": "TCP"},
                {"name": "proxy-tcp", "container_port": ports.proxy_tcp, "protocol": "TCP"},
                {"name": "proxy-tls", "container_port": ports.proxy_tls, "protocol": "TCP"},
                {"name": "http", "container_port": ports.http, "protocol": "TCP"},
            ],
            "resources": kube.resources(settings.resources),
            # The spec allows OpenSIPS exactly these two: raw sockets for its ICMP/MTU handling
            # and socket options (TOS marking) on its SIP sockets.
            "security_context": kube.container_security(add_capabilities=["NET_ADMIN", "NET_RAW"]),
            "liveness_probe": kube.tcp_probe("sip-tcp"),
            # Ready once it listens for SIP (the httpd wants credentials a probe must not hold).
            "readiness_probe": kube.tcp_probe("sip-tcp", period=5, failures=2),
            # A terminating pod leaves the endpoints at once; it goes on serving until HAProxy
            # has stopped sending it calls, then finishes the transactions it holds.
            "lifecycle": {"pre_stop": {"sleep": {"seconds": max(1, args.withdrawal_seconds)}}},
            "volume_mounts": [
                {"name": "config", "mount_path": CONFIG_DIR, "read_only": True},
                {"name": "tls", "mount_path": TLS_DIR, "read_only": True},
                {"name": "db", "mount_path": DB_DIR},
                {"name": "run", "mount_path": RUN_DIR},
            ],
        }
        # Keeps the dispatcher set equal to the ACM engine pods the headless Service lists,
        # started before OpenSIPS (native sidecar) so the first table is there at boot.
        dispatcher_sync = {
            "name": "dispatcher-sync",
            "image": sidecar_image,
            "restart_policy": "Always",
            "command": ["python3", "/opt/dispatcher-sync/dispatcher_sync.py"],
            "args": ["--settings", "/opt/dispatcher-sync/settings.json"],
            "ports": [{"name": "sync-metrics", "container_port": SIDECAR_METRICS_PORT,
                       "protocol": "TCP"}],
            "resources": {
                "requests": {"cpu": "10m", "memory": "32Mi"},
                "limits": {"cpu": "100m", "memory": "64Mi"},
            },
            "security_context": kube.container_security(),
            "startup_probe": {
                "exec": {"command": ["test", "-s", f"{DB_DIR}/dispatcher"]},
                "period_seconds": 1, "failure_threshold": 60,
            },
            "liveness_probe": {
                "exec": {"command": ["python3", "/opt/dispatcher-sync/dispatcher_sync.py",
                                     "--settings", "/opt/dispatcher-sync/settings.json",
                                     "--check"]},
                "period_seconds": 30, "failure_threshold": 3, "timeout_seconds": 5,
            },
            "readiness_probe": {
                "exec": {"command": ["test", "-s", f"{DB_DIR}/dispatcher"]},
                "period_seconds": 10,
            },
            "volume_mounts": [
                {"name": "sidecar", "mount_path": "/opt/dispatcher-sync", "read_only": True},
                {"name": "tables", "mount_path": "/opt/dispatcher-sync/tables", "read_only": True},
                {"name": "db", "mount_path": DB_DIR},
            ],
        }
        volumes = [
            # opensips.cfg and the credentials it includes, in one folder.
            {"name": "config", "projected": {"default_mode": 0o440, "sources": [
                {"config_map": {"name": self.config.name}},
                {"secret": {"name": CONTROL_SECRET, "items": [
                    {"key": HTTPD_CREDENTIALS_FILE, "path": HTTPD_CREDENTIALS_FILE},
                    {"key": CACHEDB_CREDENTIALS_FILE, "path": CACHEDB_CREDENTIALS_FILE}]}},
            ]}},
            {"name": "sidecar", "projected": {"default_mode": 0o440, "sources": [
                {"config_map": {"name": self.sidecar_config.name}},
                {"secret": {"name": CONTROL_SECRET, "items": [
                    {"key": "password", "path": SIDECAR_PASSWORD_FILE.rsplit("/", 1)[1]}]}},
            ]}},
            {"name": "tables", "config_map": {"name": self.config.name,
                                              "items": [{"key": key, "path": key}
                                                        for key in self.files.static_tables]}},
            {"name": "tls", "secret": {"secret_name": "opensips-sip-tls",
                                       "default_mode": 0o440}},
            {"name": "db", "empty_dir": {"size_limit": "16Mi"}},
            {"name": "run", "empty_dir": {"medium": "Memory", "size_limit": "16Mi"}},
        ]
        spec = DeploymentSpec(
            part=part, namespace=args.namespace, instance=args.instance,
            containers=[opensips_container], init_containers=[dispatcher_sync],
            priority_class=args.priority_class,
            node_topology_key=args.node_topology_key, zone_topology_key=args.zone_topology_key,
            autoscaling=settings.autoscaling, disruption=settings.pdb, volumes=volumes,
            config_hash=kube.content_hash({"opensips": self.config.hash,
                                           "sidecar": self.sidecar_config.hash}),
            # What OpenSIPS reads at start: its httpd account and store URL, its certificate.
            secrets_digest=secrets_digest(args.digest_key, {
                f"{CONTROL_SECRET}/{HTTPD_CREDENTIALS_FILE}":
                    httpd_credentials(args.control_password),
                f"{CONTROL_SECRET}/{CACHEDB_CREDENTIALS_FILE}": cachedb_credentials(args),
                "opensips-sip-tls/tls.crt": args.tls_certificate,
                "opensips-sip-tls/tls.key": args.tls_private_key}),
            # In-flight transactions finish before the pod goes (SIP timer B is 32 s).
            termination_grace_seconds=args.withdrawal_seconds + 40,
            min_ready_seconds=args.admission_seconds,
        )
        self.workload = managed_deployment(
            name, spec, self,
            depends_on=[self.config.config_map, self.sidecar_config.config_map, self.tls_secret,
                        self.control_secret],
        )
        self.headless_service_name = "opensips-headless"
        service(
            f"{name}-headless", self.headless_service_name, part, args.namespace, args.instance,
            [
                {"name": "proxy-tcp", "port": ports.proxy_tcp, "target_port": "proxy-tcp"},
                {"name": "proxy-tls", "port": ports.proxy_tls, "target_port": "proxy-tls"},
                {"name": "http", "port": ports.http, "target_port": "http"},
            ],
            self, cluster_ip="None", publish_not_ready_addresses=False,
        )
        self.udp_service = None
        if args.features.sip_udp_load_balancer:
            # HAProxy cannot balance UDP. externalTrafficPolicy Local keeps the caller's source
            # address (the fraud evidence); ClientIP affinity keeps a dialog on one proxy.
            self.udp_service = service(
                f"{name}-sip-udp", "opensips-sip-udp", part, args.namespace, args.instance,
                [{"name": "sip-udp", "port": ports.sip_udp, "target_port": "sip-udp",
                  "protocol": "UDP"}],
                self,
                type=settings.udp_service_type,
                external_traffic_policy="Local",
                session_affinity="ClientIP",
                session_affinity_config={"client_ip": {"timeout_seconds": 3600}},
                **({"load_balancer_source_ranges": list(args.sip_peer_cidrs)}
                   if settings.udp_service_type == "LoadBalancer" else {}),
            )
        self.headless_domain = (
            f"{self.headless_service_name}.{args.namespace}.svc.cluster.local"
        )
        self.register_outputs({
            "configHash": self.config.hash,
            "headlessDomain": self.headless_domain,
        })

"""Stand-ins for what a cluster without the real thing cannot have (the local stack): the media
gateways the calls go on to, the webhook receiver Alertmanager notifies in place of an
operator's on-call tools, and the image they run (the ACM engine's stand-in too). The SIP ones
are SIPp with the scenarios the SIP tests use, so a call through the deployed platform meets
the same far ends as one in the SIP lab."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict

from components.alerting import CredentialName
from components.base import kube
from components.base.credentials import secrets_digest
from components.base.images import ImageRecipe, ImageSource
from components.base.settings import ImageBuild, Model, Port
from components.base.workload import DeploymentSpec, managed_deployment, service

SIP_STAND_IN_IMAGE = ImageRecipe(
    "sip-stand-in", "images/sip-stand-in/Dockerfile",
    ("images/sip-stand-in", "tests/sip/scenarios/acm_engine.xml",
     "tests/sip/scenarios/media_gateway.xml"))
STAND_IN_HTTP_PORT = 8080
ALERT_RECEIVER_PORT = 8080
ALERT_RECEIVER_SECRET = "alert-receiver-stand-in"
ALERT_RECEIVER_SECRET_DIR = "/etc/alert-receiver"


# --- settings: acm-platform:mediaGatewayStandIn -------------------------------------------


class MediaGatewayStandInConfig(Model):
    image_build: ImageBuild
    sip_port: Port = 5060


# --- the component ------------------------------------------------------------------------


class MediaGatewayStandInArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    # Where the part's images come from: the stack's StackImages (each built once).
    images: ImageSource

    namespace: str
    instance: str
    settings: MediaGatewayStandInConfig
    priority_class: str
    node_topology_key: str
    zone_topology_key: str


class MediaGatewayStandIn(pulumi.ComponentResource):
    """One SIPp media gateway (200, then BYE) behind a headless Service; the stack's
    opensips.mediaGateways name its domain."""

    def __init__(self, name: str, args: MediaGatewayStandInArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:MediaGatewayStandIn", name, None, opts)
        part = kube.MEDIA_GATEWAY_STAND_IN
        sip_port = args.settings.sip_port
        container = {
            "name": "media-gateway",
            "image": args.images.image(SIP_STAND_IN_IMAGE, "unused:pinned",
                                       args.settings.image_build),
            "args": ["gateway", "--sip-port", str(sip_port),
                     "--http-port", str(STAND_IN_HTTP_PORT)],
            "ports": [
                {"name": "sip-udp", "container_port": sip_port, "protocol": "UDP"},
                {"name": "http", "container_port": STAND_IN_HTTP_PORT, "protocol": "TCP"},
            ],
            "resources": {"requests": {"cpu": "20m", "memory": "32Mi"},
                          "limits": {"cpu": "500m", "memory": "128Mi"}},
            "security_context": kube.container_security(),
            "liveness_probe": kube.http_probe("/health", "http", failures=3),
            "readiness_probe": kube.http_probe("/health", "http", period=5),
            "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
        }
        spec = DeploymentSpec(
            part=part, namespace=args.namespace, instance=args.instance,
            containers=[container], priority_class=args.priority_class,
            node_topology_key=args.node_topology_key, zone_topology_key=args.zone_topology_key,
            replicas=1, volumes=[{"name": "tmp", "empty_dir": {"size_limit": "64Mi"}}],
        )
        managed_deployment(name, spec, self)
        service(f"{name}-service", part.name, part, args.namespace, args.instance,
                [{"name": "sip-udp", "port": sip_port, "target_port": "sip-udp",
                  "protocol": "UDP"}],
                self, cluster_ip="None", publish_not_ready_addresses=False)
        self.domain = f"{part.name}.{args.namespace}.svc.cluster.local"
        self.register_outputs({"domain": self.domain})


# --- settings: acm-platform:alertReceiverStandIn ------------------------------------------


class AlertReceiverStandInConfig(Model):
    """The webhook receiver the local stack's Alertmanager notifies: it asks for the account its
    webhook receivers send (`username`, and the key of the secret alertmanagerCredentials they
    name as `credential`), so a notification that arrives was sent with the account."""

    image_build: ImageBuild
    username: str = "alertmanager"
    credential: CredentialName


# --- the component ------------------------------------------------------------------------


class AlertReceiverStandInArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    images: ImageSource
    namespace: str
    instance: str
    settings: AlertReceiverStandInConfig
    # The value of the credential the webhooks send (from alertmanagerCredentials).
    password: str
    # The stack's secretsDigestKey: the stand-in reads its password at start.
    digest_key: str
    priority_class: str
    node_topology_key: str
    zone_topology_key: str


class AlertReceiverStandIn(pulumi.ComponentResource):
    """images/sip-stand-in/alert_receiver.py behind a ClusterIP Service: records every
    notification sent with its account, and shows them to the same account."""

    def __init__(self, name: str, args: AlertReceiverStandInArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:AlertReceiverStandIn", name, None, opts)
        part, settings = kube.ALERT_RECEIVER_STAND_IN, args.settings
        secret = k8s.core.v1.Secret(
            f"{name}-account",
            metadata=kube.metadata(ALERT_RECEIVER_SECRET, args.namespace,
                                   part.labels(args.instance)),
            type="Opaque",
            string_data={"password": pulumi.Output.secret(args.password)},
            opts=pulumi.ResourceOptions(parent=self),
        )
        container = {
            "name": "alert-receiver",
            "image": args.images.image(SIP_STAND_IN_IMAGE, "unused:pinned",
                                       settings.image_build),
            "command": ["python3", "/opt/stand-in/alert_receiver.py"],
            "args": ["--port", str(ALERT_RECEIVER_PORT), "--username", settings.username,
                     "--password-file", f"{ALERT_RECEIVER_SECRET_DIR}/password"],
            "ports": [{"name": "http", "container_port": ALERT_RECEIVER_PORT,
                       "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                          "limits": {"cpu": "200m", "memory": "64Mi"}},
            "security_context": kube.container_security(),
            "liveness_probe": kube.http_probe("/health", "http", failures=3),
            "readiness_probe": kube.http_probe("/health", "http", period=5),
            "volume_mounts": [{"name": "account", "mount_path": ALERT_RECEIVER_SECRET_DIR,
                               "read_only": True}],
        }
        spec = DeploymentSpec(
            part=part, namespace=args.namespace, instance=args.instance,
            containers=[container], priority_class=args.priority_class,
            node_topology_key=args.node_topology_key, zone_topology_key=args.zone_topology_key,
            replicas=1,
            secrets_digest=secrets_digest(args.digest_key, {
                f"{ALERT_RECEIVER_SECRET}/password": args.password}),
            volumes=[{"name": "account", "secret": {"secret_name": ALERT_RECEIVER_SECRET,
                                                    "default_mode": 0o440}}],
        )
        managed_deployment(name, spec, self, depends_on=[secret])
        service(f"{name}-service", part.name, part, args.namespace, args.instance,
                [{"name": "http", "port": ALERT_RECEIVER_PORT, "target_port": "http"}],
                self, type="ClusterIP")
        self.register_outputs({})

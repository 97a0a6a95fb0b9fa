"""Stand-ins for what a cluster without the real thing cannot have (the local stack): the media
gateways the calls go on to, the webhook receiver Alertmanager notifies in place of an
operator's on-call tools, the S3 object store in place of the operator's (the evidence archive
and the backups: VersityGW, a real S3 server with Object Lock), and the image the SIP and
webhook ones run (the ACM engine's stand-in too). The SIP ones
are SIPp with the scenarios the SIP tests use, so a call through the deployed platform meets
the same far ends as one in the SIP lab."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict

from components.alerting import CredentialName
from components.base import kube
from components.base.credentials import (
    SECRETS_DIGEST_ANNOTATION,
    derived_mutual_tls,
    secrets_digest,
)
from components.base.images import ImageRecipe, ImageSource, tools_cache_folder
from components.base.settings import ImageBuild, Model, Port, Resources, Storage
from components.base.stateful import StatefulTierSpec, stateful_tier
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
    """Where the stand-in image is built and pushed."""
    sip_port: Port = 5060
    """The stand-in's SIP port."""


# --- the component ------------------------------------------------------------------------


class MediaGatewayStandInArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    images: ImageSource
    """Where the part's images come from: the stack's StackImages (each built once)."""

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
    """Where the stand-in image is built and pushed."""
    username: str = "alertmanager"
    """The basic-auth user the webhooks send."""
    credential: CredentialName
    """The key of `alertmanagerCredentials` holding the webhooks' password."""


# --- the component ------------------------------------------------------------------------


class AlertReceiverStandInArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    images: ImageSource
    namespace: str
    instance: str
    settings: AlertReceiverStandInConfig
    password: str
    """The value of the credential the webhooks send (from alertmanagerCredentials)."""
    digest_key: str
    """The stack's secretsDigestKey: the stand-in reads its password at start."""
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


# --- the object store: acm-platform:objectStoreStandIn -------------------------------------

OBJECT_STORE_PORT = 7070
OBJECT_STORE_SECRET = "object-store"
OBJECT_STORE_SECRET_DIR = "/etc/object-store"
VERSITYGW_VERSION = "1.8.0"


def _versitygw_folder() -> Path:
    return tools_cache_folder() / "object-store" / f"versitygw-{VERSITYGW_VERSION}" / "bin"


def _versitygw_digest() -> dict[str, str]:
    binary = _versitygw_folder() / "versitygw"
    if not binary.is_file():
        raise FileNotFoundError(f"{binary} is missing: run scripts/object-store build (or "
                                "scripts/setup) before building the local images")
    return {"VERSITYGW_VERSION": VERSITYGW_VERSION,
            "VERSITYGW_SHA256": hashlib.sha256(binary.read_bytes()).hexdigest()}


OBJECT_STORE_IMAGE = ImageRecipe("object-store", "images/object-store/Dockerfile",
                                 ("images/object-store",), context=_versitygw_folder,
                                 build_args=_versitygw_digest)


class ObjectStoreStandInConfig(Model):
    image_build: ImageBuild
    """Where the object store's image is built and pushed."""
    storage: Storage
    """The object store's volume."""


class ObjectStoreStandInArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    images: ImageSource
    namespace: str
    instance: str
    settings: ObjectStoreStandInConfig
    access_key_id: str
    """The root account: the evidence store's keys (secrets evidenceStoreAccessKeyId and
    evidenceStoreSecretAccessKey), which the jobs use."""
    secret_access_key: str
    digest_key: str
    """The stack's secretsDigestKey: the store's TLS certificate is derived from it."""
    priority_class: str
    node_topology_key: str
    zone_topology_key: str


def object_store_host(namespace: str) -> str:
    return f"{kube.OBJECT_STORE_STAND_IN.name}.{namespace}.svc.cluster.local"


def object_store_endpoint(namespace: str) -> str:
    return f"https://{object_store_host(namespace)}:{OBJECT_STORE_PORT}"


class ObjectStoreStandIn(pulumi.ComponentResource):
    """VersityGW with its POSIX backend on a volume: buckets under /data/buckets, object
    versions (S3 Object Lock needs them) under /data/versions; TLS with a certificate derived
    from the stack's key, whose CA the jobs trust (`ca_certificate`)."""

    def __init__(self, name: str, args: ObjectStoreStandInArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:ObjectStoreStandIn", name, None, opts)
        part, host = kube.OBJECT_STORE_STAND_IN, object_store_host(args.namespace)
        tls = derived_mutual_tls(args.digest_key, "object-store", host)
        self.ca_certificate = tls.ca_certificate
        files = {"access-key-id": args.access_key_id,
                 "secret-access-key": args.secret_access_key,
                 "tls.crt": tls.certificate, "tls.key": tls.private_key}
        secret = k8s.core.v1.Secret(
            f"{name}-account",
            metadata=kube.metadata(OBJECT_STORE_SECRET, args.namespace,
                                   part.labels(args.instance)),
            type="Opaque",
            string_data={key: pulumi.Output.secret(value) for key, value in files.items()},
            opts=pulumi.ResourceOptions(parent=self),
        )
        folder = OBJECT_STORE_SECRET_DIR
        # The root account's keys only as files: versitygw takes them from its environment,
        # so the shell reads them into it and hands over (exec).
        start = (f"mkdir -p /data/buckets /data/versions && "
                 f'ROOT_ACCESS_KEY_ID="$(cat {folder}/access-key-id)" '
                 f'ROOT_SECRET_ACCESS_KEY="$(cat {folder}/secret-access-key)" '
                 f"exec versitygw --port :{OBJECT_STORE_PORT} --cert {folder}/tls.crt "
                 f"--key {folder}/tls.key --health /health --quiet "
                 "posix --versioning-dir /data/versions /data/buckets")
        spec = StatefulTierSpec(
            part=part, namespace=args.namespace, instance=args.instance,
            image=args.images.image(OBJECT_STORE_IMAGE, "unused:pinned",
                                    args.settings.image_build),
            replicas=1, resources=Resources.model_validate(
                {"requests": {"cpu": "20m", "memory": "64Mi"},
                 "limits": {"cpu": "500m", "memory": "256Mi"}}),
            storage=args.settings.storage, ports={"https": OBJECT_STORE_PORT},
            data_path="/data", command=("sh", "-c", start),
            liveness=kube.tcp_probe("https"), readiness=kube.tcp_probe("https", period=5),
            priority_class=args.priority_class, node_topology_key=args.node_topology_key,
            zone_topology_key=args.zone_topology_key,
            secret_volume=("account", OBJECT_STORE_SECRET, folder),
            extra_annotations={SECRETS_DIGEST_ANNOTATION: secrets_digest(
                args.digest_key, {f"{OBJECT_STORE_SECRET}/{key}": value
                                  for key, value in files.items()})},
        )
        tier = stateful_tier(name, spec, self)
        k8s.core.v1.Service(
            f"{name}-service",
            metadata=kube.metadata(part.name, args.namespace, part.labels(args.instance)),
            spec={"type": "ClusterIP", "selector": part.selector(args.instance),
                  "ports": [{"name": "https", "port": OBJECT_STORE_PORT,
                             "target_port": "https", "protocol": "TCP"}]},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[secret, tier.stateful_set]),
        )
        self.endpoint = object_store_endpoint(args.namespace)
        self.register_outputs({"endpoint": self.endpoint})

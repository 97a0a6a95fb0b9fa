"""The stack as a whole: which parts it has, what crosses parts, and how its config is loaded.

A stack's `Pulumi.<stack>.yaml` holds one key per platform part under the `acm-platform:`
namespace. Each part's settings model, with the rules that are that part's own, lives in the
part's room under `components/`; this module composes them into `StackConfig`, adds the rules
that cross parts (the production floor, secrets stored as secrets) and turns a stack's keys into
a `StackConfig` or one `StackConfigError` that lists every problem with its full key path, so a
bad value fails the program before a single resource is registered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from components.acm_engine import AcmEngineConfig
from components.alerting import compliance_floor, credential_problems
from components.base.settings import DnsLabel, Features, Model, Network
from components.compliance import ComplianceConfig
from components.datastores import ClickHouseConfig, DragonflyConfig, YugabyteConfig
from components.haproxy import HaproxyConfig
from components.monitoring import MonitoringConfig
from components.opensips.settings import OpenSipsConfig
from components.stand_ins import (
    AlertReceiverStandInConfig,
    MediaGatewayStandInConfig,
    ObjectStoreStandInConfig,
    object_store_endpoint,
)

PROJECT = "acm-platform"

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


class KubernetesSettings(Model):
    cluster_identifier: DnsLabel
    """The provider's identity: without it a changed kubeconfig replaces the provider and every
    resource of the stack with it (topology spec, "Known traps")."""
    context: str | None = None
    """The kubeconfig context to use; unset: the kubeconfig's current context."""
    preview_without_cluster: bool = False
    """A stack whose previews run where its cluster cannot be reached (CI review without
    credentials) says so here; its previews then warn instead of failing. `up` always needs the
    cluster."""
    node_topology_key: str = "kubernetes.io/hostname"
    """The node label the SIP path's pods are spread over (one pod per node where possible)."""
    zone_topology_key: str = "topology.kubernetes.io/zone"
    """The node label for zones, the second spread of the SIP path's pods."""


class NetworkSettings(Model):
    sip_peer_cidrs: Annotated[list[Network], Field(min_length=1)]
    """Interconnect partners allowed to send SIP (the source address is fraud evidence)."""


class SecretSettings(Model):
    """Values that only ever come from Pulumi secret config (`pulumi config set --secret`)."""

    database_password: str
    """The report database's password (engines and jobs)."""
    grafana_admin_password: str
    """Grafana's admin password."""
    sip_tls_certificate: str
    """The SIP TLS certificate chain (PEM), served by OpenSIPS."""
    sip_tls_private_key: str
    """The SIP TLS certificate's private key (PEM)."""
    ncc_atrs_client_id: str
    """The ATRS API client ID."""
    ncc_atrs_client_secret: str
    """The ATRS API client secret."""
    ncc_sftp_private_key: str
    """The SFTP private key (OpenSSH format)."""
    ncc_sftp_known_hosts: str
    """The regulator's SFTP host key lines (pinned; the job refuses any other)."""
    opensips_control_password: str
    """Basic-auth passwords of the control and metrics endpoints: OpenSIPS's httpd (MI and metrics)
    and HAProxy's stats, metrics and management frontends."""
    haproxy_control_password: str
    """HAProxy's stats, metrics and management account."""
    alertmanager_control_password: str
    """Alertmanager's web and API account (Prometheus sends with it), and the receivers'
    credentials: a JSON object of credential name (what a receiver's `credential` says) to value (a
    PagerDuty routing key, an Opsgenie API key, a webhook or SMTP password)."""
    alertmanager_credentials: str
    """A JSON object of the receivers' credentials, by name."""
    prometheus_control_password: str
    """Prometheus's web and API account (Grafana and the tests query with it), and the account
    Prometheus scrapes the compliance exporter with."""
    compliance_exporter_password: str
    """The compliance exporter's metrics account."""
    dragonfly_opensips_password: str
    """Dragonfly's ACL users: OpenSIPS (the breaker's keys) and the ACM engines (their cache)."""
    dragonfly_engine_password: str
    """The engines' Dragonfly user."""
    acm_engine_metrics_password: str
    """The account Prometheus scrapes the ACM engines' /metrics with."""
    clickhouse_engine_password: str
    """The engines' ClickHouse user (the image's passwordless default user is removed)."""
    evidence_store_access_key_id: str
    """The evidence store's access key ID (`compliance.evidenceStore`)."""
    evidence_store_secret_access_key: str
    """The evidence store's secret access key."""
    backup_identity: str
    """The age identity that decrypts the database backups: never deployed, read by `acmctl
    restore-database`."""
    secrets_digest_key: str
    """The stack's own key for what is derived from secrets: the digest of the Secrets each workload
    reads at start (so a rotated secret rolls exactly its readers) and the salts of the bcrypt
    hashes in web configs (components/base/credentials.py)."""


SECRET_KEYS = tuple(to_camel(name) for name in SecretSettings.model_fields)


class StackConfig(Model):
    environment: Environment
    """Which environment this stack is: `prod` is held to the production floor (replica minimums,
    real receivers, the NCC production API)."""
    namespace: DnsLabel
    """The Kubernetes namespace every resource of the platform goes into."""
    kubernetes: KubernetesSettings
    """Which cluster the stack deploys to, and how pods are spread over it."""
    network: NetworkSettings
    """Who may send SIP to the platform."""
    features: Features = Features()
    """Parts a stack may leave out."""
    haproxy: HaproxyConfig
    """The TCP/TLS front door: HAProxy in front of OpenSIPS, with the PROXY protocol."""
    opensips: OpenSipsConfig
    """The SIP proxy: screening through the engines, the circuit breaker, media gateways, flood
    protection and shedding."""
    acm_engine: AcmEngineConfig
    """The ACM engines that screen each call (302 clean, 603 fraud)."""
    dragonfly: DragonflyConfig
    """Dragonfly: the breaker's and gateways' shared state, the engines' cache."""
    yugabyte: YugabyteConfig
    """YugabyteDB: the engines' data and the NCC jobs' report database."""
    clickhouse: ClickHouseConfig
    """ClickHouse, the engines' CDR analytics (with `features.clickhouse`)."""
    monitoring: MonitoringConfig
    """Prometheus, Alertmanager and Grafana."""
    compliance: ComplianceConfig
    """The NCC compliance jobs: schedules, the regulator's endpoints, the evidence store and
    backups."""
    media_gateway_stand_in: MediaGatewayStandInConfig | None = None
    """`local` only: SIPp media gateways that answer 200 and hang up."""
    alert_receiver_stand_in: AlertReceiverStandInConfig | None = None
    """`local` only: a webhook receiver every alert route notifies."""
    object_store_stand_in: ObjectStoreStandInConfig | None = None
    """`local` only: an S3 store with Object Lock (VersityGW) for evidence and backups."""
    secrets: SecretSettings
    """The secret settings (top-level keys, set with `--secret`)."""

    @model_validator(mode="after")
    def _stand_ins_only_locally(self) -> Self:
        # A stand-in in a real environment would screen real calls with a test double.
        if self.environment == "local":
            return self
        stand_ins = [key for key, present in (
            ("acmEngine.standIn", self.acm_engine.stand_in),
            ("dragonfly.standIn", self.dragonfly.stand_in is not None),
            ("yugabyte.standIn", self.yugabyte.stand_in is not None),
            ("mediaGatewayStandIn", self.media_gateway_stand_in is not None),
            ("alertReceiverStandIn", self.alert_receiver_stand_in is not None),
            ("objectStoreStandIn", self.object_store_stand_in is not None),
        ) if present]
        if stand_ins:
            raise ValueError(f"{', '.join(stand_ins)}: stand-ins are for the local stack only; "
                             f"environment {self.environment!r} runs the real parts")
        return self

    @model_validator(mode="after")
    def _one_build_per_shared_image(self) -> Self:
        # The engine, media-gateway and alert-receiver stand-ins run one image, built once
        # (StackImages): built twice with different settings, one repository would be pushed
        # twice at once, which the registry answers with 500.
        builds = {key: build for key, build in (
            ("acmEngine.imageBuild", self.acm_engine.image_build
             if self.acm_engine.stand_in else None),
            ("mediaGatewayStandIn.imageBuild", self.media_gateway_stand_in
             and self.media_gateway_stand_in.image_build),
            ("alertReceiverStandIn.imageBuild", self.alert_receiver_stand_in
             and self.alert_receiver_stand_in.image_build),
        ) if build is not None}
        if len({build.model_dump_json() for build in builds.values()}) > 1:
            keys = list(builds)
            raise ValueError(f"{', '.join(keys[:-1])} and {keys[-1]} differ: the stand-ins run "
                             "the one stand-in image, so give them the same registry and "
                             "baseImage")
        return self

    @model_validator(mode="after")
    def _object_store_is_the_evidence_store(self) -> Self:
        # The stand-in only serves the jobs if they are pointed at it.
        if self.object_store_stand_in is None:
            return self
        store, expected = self.compliance.evidence_store, object_store_endpoint(self.namespace)
        if store is None or store.endpoint.rstrip("/") != expected:
            raise ValueError(f"objectStoreStandIn serves {expected}: set "
                             f"compliance.evidenceStore.endpoint to it")
        return self

    @model_validator(mode="after")
    def _alert_receiver_is_sent_to(self) -> Self:
        # A stand-in whose account no webhook sends would refuse every notification.
        stand_in = self.alert_receiver_stand_in
        if stand_in is None:
            return self
        sent = {(r.webhook.username, r.webhook.credential)
                for r in self.monitoring.alertmanager.receivers if r.webhook is not None}
        if (stand_in.username, stand_in.credential) not in sent:
            raise ValueError(
                f"alertReceiverStandIn asks for username {stand_in.username!r} with credential "
                f"{stand_in.credential!r}, which no webhook receiver of "
                "monitoring.alertmanager.receivers sends: give a webhook receiver that "
                "username and credential")
        return self

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
        # The regulator's deadlines carry penalties: their alerts must reach a person.
        problems += compliance_floor(self.monitoring.alertmanager)
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
        if "alertmanagerCredentials" in real:
            problems += credential_problems(config.monitoring.alertmanager,
                                            real["alertmanagerCredentials"])
    if problems:
        raise StackConfigError(stack, problems)
    if config.environment != stack and not (stack.startswith(config.environment + "-")):
        raise StackConfigError(
            stack,
            [("environment", f"is {config.environment!r} but the stack is {stack!r}")],
        )
    return config

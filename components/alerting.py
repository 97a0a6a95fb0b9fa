"""Alerting: Alertmanager, the part that turns Prometheus's firing rules into notifications.

Its room holds the typed receivers and routes of `acm-platform:monitoring.alertmanager`, their
validation, the rendered `alertmanager.yml` and web config, and the component (a StatefulSet
whose replicas gossip as one cluster, a PodDisruptionBudget, the Secrets whose keys the
`*_file` settings read). Monitoring creates it and points Prometheus at it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from components.base import kube
from components.base.credentials import (
    SECRETS_DIGEST_ANNOTATION,
    derived_mutual_tls,
    secrets_digest,
    web_config,
)
from components.base.images import ImageRecipe, ImageSource, tools_cache_folder
from components.base.settings import (
    DnsLabel,
    Host,
    ImageBuild,
    ImageRef,
    Model,
    Network,
    Port,
    Resources,
    Storage,
    described,
)
from components.base.stateful import StatefulTierSpec, quorum_disruption_budget, stateful_tier
from components.base.templating import render

ALERTMANAGER_VERSION = "0.35.0"
ALERTMANAGER_PORT = 9093
GOSSIP_PORT = 9094
CONTROL_SECRET = "alertmanager-control"
CONTROL_USER = "acm-control"
RECEIVER_SECRET = "alertmanager-receivers"
CONFIG_DIR = "/etc/alertmanager/config"
CONTROL_DIR = "/etc/alertmanager/control"
CREDENTIALS_DIR = "/etc/alertmanager/credentials"
WEB_CONFIG_FILE = "web-config.yml"
# Gossip between replicas: mutual TLS with certificates derived from the stack's key.
GOSSIP_SECRET = "alertmanager-gossip"
GOSSIP_DIR = "/etc/alertmanager/gossip"
GOSSIP_TLS_FILE = "cluster-tls.yml"
GOSSIP_SERVER_NAME = "alertmanager-gossip"
UNROUTED_WATCHDOG = "watchdog-unrouted"


def alertmanager_binaries() -> str:
    """The folder scripts/alertmanager builds alertmanager and amtool into (tools cache)."""
    return str(tools_cache_folder() / "alertmanager" / f"alertmanager-{ALERTMANAGER_VERSION}"
               / "bin")


def _binary_digests() -> dict[str, str]:
    folder = Path(alertmanager_binaries())
    digests = {}
    for program in ("alertmanager", "amtool"):
        path = folder / program
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run scripts/alertmanager build "
                                    "(or scripts/setup) before building the local images")
        digests[f"{program.upper()}_SHA256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"ALERTMANAGER_VERSION": ALERTMANAGER_VERSION, **digests}


# Where upstream's image cannot be pulled (the local stack): the binaries built here from the
# Go module proxy, on the Debian base.
ALERTMANAGER_IMAGE = ImageRecipe("alertmanager", "images/alertmanager/Dockerfile",
                                 ("images/alertmanager",),
                                 context=lambda: tools_cache_folder() / "alertmanager"
                                 / f"alertmanager-{ALERTMANAGER_VERSION}" / "bin",
                                 build_args=_binary_digests)


# --- settings: acm-platform:monitoring.alertmanager -----------------------------------------


def _credential_name(text: str) -> str:
    if not text or len(text) > 63 or not all(c.isalnum() or c in "-_" for c in text):
        raise ValueError(f"{text!r} is not a credential name: 1 to 63 letters, digits, '-' or "
                         "'_', a key of the secret acm-platform:alertmanagerCredentials")
    return text


def _web_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in text:
        raise ValueError(f"{text!r} is not an http:// or https:// address")
    return text


CredentialName = Annotated[str, AfterValidator(_credential_name)]
WebUrl = Annotated[str, AfterValidator(_web_url)]
EmailAddress = Annotated[str, AfterValidator(described(
    r"[^@\s,]+@[^@\s,]+\.[^@\s,]+",
    "is not an e-mail address: one name@domain, no spaces or commas"))]


class WebhookReceiver(Model):
    url: WebUrl
    """The webhook's URL."""
    username: str | None = None
    """Basic auth toward the receiver: both or neither."""
    credential: CredentialName | None = None
    """The key of `alertmanagerCredentials` holding the webhook's bearer token; unset: none."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> Self:
        if (self.username is None) != (self.credential is None):
            raise ValueError("give username and credential together (basic auth toward the "
                             "webhook), or neither")
        return self


class PagerDutyReceiver(Model):
    credential: CredentialName
    """The Events API v2 integration (routing) key."""
    url: WebUrl | None = None
    """The Events API URL; unset: PagerDuty's."""


class OpsgenieReceiver(Model):
    credential: CredentialName  # the API key
    """The key of `alertmanagerCredentials` holding the Opsgenie API key."""
    api_url: WebUrl | None = None
    """The Opsgenie API URL; unset: Opsgenie's."""


class EmailReceiver(Model):
    to: Annotated[list[EmailAddress], Field(min_length=1)]
    """The addresses notified."""
    sender: EmailAddress
    """The From address."""
    smarthost: Host
    """The SMTP server."""
    smarthost_port: Port = 587
    """The SMTP server's port (STARTTLS required)."""
    username: str
    """The SMTP user."""
    credential: CredentialName
    """The key of `alertmanagerCredentials` holding the SMTP password."""


class Receiver(Model):
    name: DnsLabel
    """The receiver's name, used by `routes`."""
    webhook: WebhookReceiver | None = None
    """A generic webhook."""
    pagerduty: PagerDutyReceiver | None = None
    """PagerDuty (Events API v2); its routing key is the credential named after the receiver."""
    opsgenie: OpsgenieReceiver | None = None
    """Opsgenie."""
    email: EmailReceiver | None = None
    """Email through an SMTP smarthost."""

    def integrations(self) -> list[Model]:
        return [i for i in (self.webhook, self.pagerduty, self.opsgenie, self.email)
                if i is not None]

    def credentials(self) -> list[str]:
        return [c for i in self.integrations() if (c := getattr(i, "credential", None))]


class Routes(Model):
    """Which receiver gets what an alert is about; an absent route falls to `default`."""

    default: DnsLabel
    """The receiver of alerts no other route takes."""
    compliance: DnsLabel | None = None
    """Every Ncc* alert (area=compliance): at once, repeated until resolved."""
    on_call: DnsLabel | None = None
    """The SIP path's critical alerts (area=sip-path, severity=critical)."""
    warnings: DnsLabel | None = None
    """Every other warning."""
    watchdog: DnsLabel | None = None
    """The always-firing Watchdog: its receiver notices when notifications stop."""
    compliance_repeat_minutes: Annotated[int, Field(ge=5, le=24 * 60)] = 60
    """Minutes between repeats of an unresolved compliance (`Ncc*`) alert."""
    on_call_repeat_minutes: Annotated[int, Field(ge=5, le=24 * 60)] = 4 * 60
    """Minutes between repeats of an unresolved on-call alert."""
    watchdog_repeat_minutes: Annotated[int, Field(ge=1, le=60)] = 5
    """Minutes between the Watchdog's notifications (the dead man's switch expects them)."""

    def named(self) -> dict[str, str]:
        return {key: value for key in ("default", "compliance", "on_call", "warnings", "watchdog")
                if (value := getattr(self, key)) is not None}


class AlertmanagerConfig(Model):
    image: ImageRef
    """Alertmanager's image, pinned by tag or digest."""
    image_build: ImageBuild | None = None
    """Build Alertmanager's image here (from the Go module proxy) instead."""
    replicas: Annotated[int, Field(ge=1, le=5)] = 1
    """Alertmanager pods, gossiping as one cluster (3 in prod)."""
    resources: Resources
    """CPU and memory of each Alertmanager pod."""
    storage: Storage
    """Each Alertmanager's volume (silences, notification log)."""
    receivers: Annotated[list[Receiver], Field(min_length=1)]
    """Where notifications go; each names the credential it reads from `alertmanagerCredentials`."""
    routes: Routes
    """Which receiver gets which alerts."""
    egress_cidrs: Annotated[list[Network], Field(default_factory=list)]
    """Where the receivers are, outside the cluster (PagerDuty, Opsgenie, the mail relay): the only
    egress its NetworkPolicy allows besides DNS and its peers."""

    @model_validator(mode="after")
    def _receivers_are_known_and_unique(self) -> Self:
        names = [r.name for r in self.receivers]
        if UNROUTED_WATCHDOG in names:
            raise ValueError(f"receivers: {UNROUTED_WATCHDOG!r} is the platform's own (the "
                             "Watchdog's when routes.watchdog is not set): pick another name")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"receivers: {', '.join(twice)} named twice: receiver names are "
                             "unique")
        unknown = [f"routes.{_camel(route)} names {receiver!r}"
                   for route, receiver in self.routes.named().items() if receiver not in names]
        if unknown:
            raise ValueError(f"{'; '.join(unknown)}, which is not a receiver (receivers: "
                             f"{', '.join(names)})")
        return self

    def receiver(self, name: str) -> Receiver:
        return next(r for r in self.receivers if r.name == name)

    def credentials(self) -> list[str]:
        return sorted({c for r in self.receivers for c in r.credentials()})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def credential_problems(settings: AlertmanagerConfig, credentials_text: str
                        ) -> list[tuple[str, str]]:
    """(key, problem) for each receiver credential the secret `alertmanagerCredentials` does
    not hold; runs where the engine decrypted it. Messages never contain a value."""
    key = "alertmanagerCredentials"
    try:
        credentials = json.loads(credentials_text)
    except json.JSONDecodeError:
        return [(key, "is not a JSON object of credential name to value, e.g. "
                      "'{\"oncall-pagerduty\": \"...\"}'")]
    if not isinstance(credentials, dict) or not all(
            isinstance(v, str) for v in credentials.values()):
        return [(key, "is not a JSON object whose values are strings")]
    problems = []
    for index, receiver in enumerate(settings.receivers):
        for name in receiver.credentials():
            if not str(credentials.get(name, "")).strip():
                problems.append((f"monitoring.alertmanager.receivers[{index}]",
                                 f"receiver {receiver.name!r} needs credential {name!r}, which "
                                 f"the secret {key} does not hold (set it with `pulumi config "
                                 f"set --secret acm-platform:{key} '{{...}}'`)"))
    return problems


def compliance_floor(settings: AlertmanagerConfig) -> list[str]:
    """What a production stack lacks for the regulator's alerts to reach a person."""
    routes = settings.routes
    problems = []
    for route in ("compliance", "watchdog"):
        receiver = getattr(routes, route)
        if receiver is None:
            problems.append(f"monitoring.alertmanager.routes.{route} is not set")
        elif not settings.receiver(receiver).integrations():
            problems.append(f"monitoring.alertmanager.routes.{route} names receiver "
                            f"{receiver!r}, which notifies no one")
    return problems


# --- rendered files ---------------------------------------------------------------------------


def credential_file(name: str) -> str:
    return f"{CREDENTIALS_DIR}/{name}"


def _receiver_values(receiver: Receiver) -> dict[str, Any]:
    values: dict[str, Any] = {"name": receiver.name, "webhook": None, "pagerduty": None,
                              "opsgenie": None, "email": None}
    if (webhook := receiver.webhook) is not None:
        values["webhook"] = {"url": webhook.url, "basic_auth": None if webhook.username is None
                             else {"username": webhook.username,
                                   "password_file": credential_file(str(webhook.credential))}}
    if (pagerduty := receiver.pagerduty) is not None:
        values["pagerduty"] = {"routing_key_file": credential_file(pagerduty.credential),
                               "url": pagerduty.url}
    if (opsgenie := receiver.opsgenie) is not None:
        values["opsgenie"] = {"api_key_file": credential_file(opsgenie.credential),
                              "api_url": opsgenie.api_url}
    if (email := receiver.email) is not None:
        values["email"] = {"to": ", ".join(email.to), "sender": email.sender,
                           "smarthost": f"{email.smarthost}:{email.smarthost_port}",
                           "username": email.username,
                           "password_file": credential_file(email.credential)}
    return values


# Inhibitions: (the alert that explains, the alerts it explains). With no engine up, every call
# fails open, so the breaker opening is a consequence and not a second page.
INHIBITIONS = (("AcmNoHealthyEngine", ("AcmCircuitBreakerOpen", "AcmHighDetectionLatency")),
               ("AcmNoHealthyOpenSipsBackend", ("AcmCallsShed",)))


def rendered_alertmanager_config(settings: AlertmanagerConfig) -> str:
    routes = settings.routes
    # Without a dead man's switch, the always-firing Watchdog goes to a receiver that notifies
    # no one, not to the default receiver every 12 hours.
    child_routes = [{"receiver": routes.watchdog or UNROUTED_WATCHDOG,
                     "matchers": ['alertname = "Watchdog"'],
                     "group_wait": "0s", "group_interval": "1m",
                     "repeat_interval": f"{routes.watchdog_repeat_minutes}m"}]
    if routes.compliance is not None:
        child_routes.append({"receiver": routes.compliance, "matchers": ['area = "compliance"'],
                             "group_wait": "0s", "group_interval": "1m",
                             "repeat_interval": f"{routes.compliance_repeat_minutes}m"})
    if routes.on_call is not None:
        child_routes.append({"receiver": routes.on_call,
                             "matchers": ['area = "sip-path"', 'severity = "critical"'],
                             "group_wait": "10s", "group_interval": "1m",
                             "repeat_interval": f"{routes.on_call_repeat_minutes}m"})
    if routes.warnings is not None:
        child_routes.append({"receiver": routes.warnings, "matchers": ['severity = "warning"'],
                             "group_wait": "1m", "group_interval": "5m",
                             "repeat_interval": "12h"})
    receivers = [_receiver_values(r) for r in settings.receivers]
    if routes.watchdog is None:
        receivers.append(_receiver_values(Receiver(name=UNROUTED_WATCHDOG)))
    return render("alertmanager.yml.j2",
                  default_receiver=routes.default, routes=child_routes, receivers=receivers,
                  inhibitions=[{"source": source, "targets": "|".join(targets)}
                               for source, targets in INHIBITIONS])


# --- the component ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertmanagerEndpoints:
    """What Prometheus needs to reach every replica: the headless domain, the port, the
    account."""

    domain: str
    port: int
    account: kube.BasicAuth


class AlertmanagerArgs(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    images: ImageSource
    namespace: str
    instance: str
    settings: AlertmanagerConfig
    control_password: str
    credentials: str
    """The secret alertmanagerCredentials (a JSON object), or its offline placeholder."""
    digest_key: str
    """The stack's secretsDigestKey: the web config's bcrypt salt is keyed with it."""
    priority_class: str
    node_topology_key: str
    zone_topology_key: str


def credential_value(credentials_text: str, name: str) -> str:
    """One credential of the secret alertmanagerCredentials; offline (a placeholder, not JSON)
    the placeholder."""
    try:
        credentials = json.loads(credentials_text)
    except json.JSONDecodeError:
        credentials = {}
    if not isinstance(credentials, dict):
        credentials = {}
    return str(credentials.get(name, credentials_text))


def credential_values(settings: AlertmanagerConfig, credentials_text: str) -> dict[str, str]:
    """Each credential a receiver names, from the secret (see `credential_value`)."""
    return {name: credential_value(credentials_text, name) for name in settings.credentials()}


def peer_arguments(args: AlertmanagerArgs, domain: str) -> list[str]:
    replicas = args.settings.replicas
    if replicas == 1:
        # One replica has no one to gossip with; an empty listen address turns the cluster off.
        return ["--cluster.listen-address="]
    return [f"--cluster.listen-address=0.0.0.0:{GOSSIP_PORT}",
            f"--cluster.tls-config={CONFIG_DIR}/{GOSSIP_TLS_FILE}",
            *(f"--cluster.peer={kube.ALERTMANAGER.name}-{index}.{domain}:{GOSSIP_PORT}"
              for index in range(replicas))]


def gossip_tls(digest_key: str) -> dict[str, str]:
    """The gossip Secret's files: a CA and the one certificate every replica presents and
    asks for (derived, so byte-identical on every up; components/base/credentials.py)."""
    material = derived_mutual_tls(digest_key, "alertmanager-gossip", GOSSIP_SERVER_NAME)
    return {"ca.crt": material.ca_certificate, "tls.crt": material.certificate,
            "tls.key": material.private_key}


class Alertmanager(pulumi.ComponentResource):
    def __init__(self, name: str, args: AlertmanagerArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:Alertmanager", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        part, settings = kube.ALERTMANAGER, args.settings
        labels = part.labels(args.instance)
        gossiping = settings.replicas > 1
        files = {"alertmanager.yml": rendered_alertmanager_config(settings)}
        if gossiping:
            files[GOSSIP_TLS_FILE] = render("alertmanager-cluster-tls.yml.j2",
                                            directory=GOSSIP_DIR, server_name=GOSSIP_SERVER_NAME)
            self.gossip_secret = k8s.core.v1.Secret(
                f"{name}-gossip",
                metadata=kube.metadata(GOSSIP_SECRET, args.namespace, labels),
                type="Opaque",
                string_data={key: pulumi.Output.secret(value)
                             for key, value in gossip_tls(args.digest_key).items()},
                opts=child,
            )
        self.config = kube.RenderedConfig(
            f"{name}-config", "alertmanager-config", args.namespace, labels, files, child)
        self.control_secret = k8s.core.v1.Secret(
            f"{name}-control",
            metadata=kube.metadata(CONTROL_SECRET, args.namespace, labels),
            type="Opaque",
            string_data={WEB_CONFIG_FILE: pulumi.Output.secret(web_config(
                CONTROL_USER, args.control_password, args.digest_key, "alertmanager-web")),
                         "password": pulumi.Output.secret(args.control_password)},
            opts=child,
        )
        credentials = credential_values(settings, args.credentials)
        # Receivers that hold no credential (a webhook without basic auth) need no Secret: an
        # empty one was replaced on every `pulumi up` (CI saw it in the local stack's second
        # up and in its HAProxy-only change).
        self.receiver_secret = k8s.core.v1.Secret(
            f"{name}-receivers",
            metadata=kube.metadata(RECEIVER_SECRET, args.namespace, labels),
            type="Opaque",
            string_data={key: pulumi.Output.secret(value) for key, value in credentials.items()},
            opts=child,
        ) if credentials else None
        domain = f"{part.name}-headless.{args.namespace}.svc.cluster.local"
        ports = {"http": ALERTMANAGER_PORT}
        if settings.replicas > 1:
            ports["gossip"] = GOSSIP_PORT
        spec = StatefulTierSpec(
            part=part, namespace=args.namespace, instance=args.instance,
            image=args.images.image(ALERTMANAGER_IMAGE, settings.image, settings.image_build),
            replicas=settings.replicas, resources=settings.resources, storage=settings.storage,
            ports=ports, data_path="/alertmanager",
            args=[f"--config.file={CONFIG_DIR}/alertmanager.yml",
                  "--storage.path=/alertmanager",
                  f"--web.listen-address=:{ALERTMANAGER_PORT}",
                  f"--web.config.file={CONTROL_DIR}/{WEB_CONFIG_FILE}",
                  *peer_arguments(args, domain)],
            # Every path of the web port asks for the account, the health pages too: the
            # kubelet checks that the port answers.
            liveness=kube.tcp_probe("http"),
            readiness=kube.tcp_probe("http", period=5),
            priority_class=args.priority_class, node_topology_key=args.node_topology_key,
            zone_topology_key=args.zone_topology_key,
            config_volume=("config", self.config.name, CONFIG_DIR),
            secret_volume=("control", CONTROL_SECRET, CONTROL_DIR),
            more_secret_volumes=[("gossip", GOSSIP_SECRET, GOSSIP_DIR)] if gossiping else [],
            credential_files=(CREDENTIALS_DIR, [(RECEIVER_SECRET, key, key)
                                                for key in sorted(credentials)])
            if credentials else None,
            extra_annotations={
                kube.CONFIG_HASH_ANNOTATION: self.config.hash,
                # Alertmanager reads its gossip certificates at start.
                SECRETS_DIGEST_ANNOTATION: secrets_digest(args.digest_key, {
                    f"{GOSSIP_SECRET}/{key}": value
                    for key, value in (gossip_tls(args.digest_key) if gossiping
                                       else {}).items()})},
        )
        self.tier = stateful_tier(f"{name}", spec, self)
        quorum_disruption_budget(f"{name}-pdb", spec, self)
        self.endpoints = AlertmanagerEndpoints(domain, ALERTMANAGER_PORT,
                                               kube.BasicAuth(CONTROL_USER, CONTROL_SECRET))
        self.register_outputs({"alertmanagerConfigHash": self.config.hash})


def receiver_ports(settings: AlertmanagerConfig) -> list[int]:
    """The TCP ports the receivers listen on (443 for the services' APIs by default)."""
    ports = set()
    for receiver in settings.receivers:
        for url in (receiver.webhook and receiver.webhook.url,
                    receiver.pagerduty
                    and (receiver.pagerduty.url or "https://events.pagerduty.com"),
                    receiver.opsgenie and (receiver.opsgenie.api_url or "https://api.opsgenie.com")):
            if url:
                parts = urlsplit(url)
                ports.add(parts.port or (443 if parts.scheme == "https" else 80))
        if receiver.email is not None:
            ports.add(receiver.email.smarthost_port)
    return sorted(ports)

"""What the smoke suite checks and where: a JSON plan, written for a cluster by
`tests/smoke/write_plan.py` (through `scripts/smoke`: the expected numbers from the stack's
rendering, one testinfra host spec per role such as `kubectl://haproxy-7c9f?namespace=acm`),
or by the suite's own self-tests for daemons on loopback (`local://`) and for the local
control plane. A section the plan leaves out is reported as skipped, with its name."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import pytest
from pydantic import BaseModel, ConfigDict, Field, model_validator

T = TypeVar("T")


def section(value: T | None, name: str) -> T:
    """A plan section a check needs; a plan without it skips the check, saying so."""
    if value is None:
        pytest.skip(f"the plan has no {name!r} section")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigFile(Strict):
    role: str
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Haproxy(Strict):
    listen: list[str]  # testinfra socket specs, e.g. tcp://0.0.0.0:5060
    stats_csv_url: str
    # The stats page asks for the control account; its password comes from this environment
    # variable (the haproxy-control Secret's `password`), never the plan.
    stats_user: str
    stats_password_env: str
    # Backends that must have at least one server UP.
    backends: list[str]


class FrontDoor(Strict):
    sip_tcp_address: str  # HAProxy's SIP TCP Service
    sip_udp_address: str  # the OpenSIPS UDP LoadBalancer Service


class OpenSips(Strict):
    # The HTTP MI as seen from inside the pod: the check runs in the `opensips-mi` role (the
    # dispatcher-sync sidecar, which shares OpenSIPS's network namespace and has Python).
    mi_url: str
    # The httpd's account, and where the password is mounted in the `opensips-mi` container.
    mi_user: str
    mi_password_file: str
    # Its SIP sockets inside the pod (`opensips` role), as testinfra specs, e.g. udp://5060.
    listen: list[str] = []


class Database(Strict):
    address: str
    dbname: str
    user: str
    password_env: str  # the password comes from this environment variable, never the plan


class Compliance(Strict):
    secrets_dir: str
    files: list[str]


class Workload(Strict):
    kind: Literal["Deployment", "StatefulSet"]
    name: str
    selector: dict[str, str]
    # The configured count: spec.replicas, or the HPA's floor when an HPA owns the count.
    min_replicas: int = Field(ge=0)
    config_hash: str | None = None  # the pod template's config-hash annotation, if it has one


class Autoscaler(Strict):
    name: str
    target: str  # the Deployment it scales
    min_replicas: int
    max_replicas: int


class Budget(Strict):
    """A PodDisruptionBudget as rendered: a floor (minAvailable, the SIP path) or a most
    down at once (maxUnavailable, the quorum tiers); Kubernetes takes exactly one."""

    name: str
    min_available: int | str | None = None
    max_unavailable: int | str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Budget:
        if (self.min_available is None) == (self.max_unavailable is None):
            raise ValueError(f"budget {self.name}: give exactly one of min_available and "
                             "max_unavailable")
        return self


class CronJobCheck(Strict):
    name: str
    schedule: str
    time_zone: str
    # The longest gap between two scheduled runs plus the run's own deadlines: a last success
    # older than this means a run was missed or failed.
    max_age_seconds: int


class Cluster(Strict):
    kubeconfig: str | None = None  # default: $KUBECONFIG, then ~/.kube/config
    context: str | None = None
    namespace: str
    workloads: list[Workload]
    services: list[str]  # each must have a ready endpoint
    autoscalers: list[Autoscaler]
    budgets: list[Budget]
    cron_jobs: list[CronJobCheck]


class SmokePlan(Strict):
    environment: str
    hosts: dict[str, str] = {}  # role -> testinfra host spec
    haproxy: Haproxy | None = None
    front_door: FrontDoor | None = None
    dragonfly_address: str | None = None
    opensips: OpenSips | None = None
    acm_engine_health_urls: list[str] | None = None  # GET must answer 200
    database: Database | None = None
    compliance: Compliance | None = None
    config_files: list[ConfigFile] = []
    cluster: Cluster | None = None

    @classmethod
    def load(cls, path: Path) -> SmokePlan:
        return cls.model_validate_json(path.read_text())

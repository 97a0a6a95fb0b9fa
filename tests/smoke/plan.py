"""What the smoke suite checks and where: a JSON plan, written for a real environment by the
platform team's wrapper (one host spec per role, e.g. `kubectl://haproxy-7c9f?namespace=acm`)
or by the suite's own self-test for daemons on loopback (`local://`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigFile(Strict):
    role: str
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Haproxy(Strict):
    listen: list[str]  # testinfra socket specs, e.g. tcp://0.0.0.0:5060
    stats_csv_url: str
    # Backends that must have at least one server UP.
    backends: list[str]


class FrontDoor(Strict):
    sip_tcp_address: str  # HAProxy's SIP TCP Service
    sip_udp_address: str  # the OpenSIPS UDP LoadBalancer Service


class Database(Strict):
    address: str
    dbname: str
    user: str
    password_env: str  # the password comes from this environment variable, never the plan


class Compliance(Strict):
    secrets_dir: str
    files: list[str]


class SmokePlan(Strict):
    environment: str
    hosts: dict[str, str]  # role -> testinfra host spec
    haproxy: Haproxy
    front_door: FrontDoor
    dragonfly_address: str
    database: Database
    compliance: Compliance
    config_files: list[ConfigFile]

    @classmethod
    def load(cls, path: Path) -> SmokePlan:
        return cls.model_validate_json(path.read_text())

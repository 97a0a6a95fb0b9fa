"""The platform's stores: Dragonfly (shared state), YugabyteDB (system of record), ClickHouse."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Annotated, Literal, Self

import pulumi
import pulumi_kubernetes as k8s
from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.base import kube
from components.base.credentials import SECRETS_DIGEST_ANNOTATION, secrets_digest
from components.base.images import ImageRecipe, ImageSource
from components.base.settings import (
    ImageBuild,
    ImageRef,
    Model,
    Port,
    Resources,
    Storage,
    require_distinct_ports,
    require_stand_in_build,
)
from components.base.stateful import StatefulTierSpec, quorum_disruption_budget, stateful_tier
from components.base.templating import render

YB_MASTER_RPC = 7100
YB_MASTER_WEB = 7000
YB_TSERVER_RPC = 9100
YB_TSERVER_WEB = 9000
CLUSTER_DOMAIN = "cluster.local"


# --- settings: acm-platform:dragonfly, yugabyte, clickhouse -------------------------------


# Stand-ins for stacks where the real stores cannot be had (local): protocol-compatible
# servers from Debian, built by the stack.
REDIS_IMAGE = ImageRecipe("redis", "images/redis/Dockerfile", ("images/redis",))
POSTGRESQL_IMAGE = ImageRecipe("postgresql", "images/postgresql/Dockerfile",
                               ("images/postgresql", "jobs/sql/acm_source_v1.sql"))


class DragonflyConfig(Model):
    image: ImageRef
    """Dragonfly's image, pinned by tag or digest."""
    resources: Resources
    """CPU and memory of the Dragonfly pod."""
    storage: Storage
    """Dragonfly's volume."""
    port: Port = 6379
    """The Redis protocol port."""
    image_build: ImageBuild | None = None
    """Build a Redis stand-in's image here instead (`local`)."""
    stand_in: Literal["redis"] | None = None
    """"redis": Redis 7 from Debian in Dragonfly's place (same protocol for what the platform uses),
    given Redis's own arguments."""

    @model_validator(mode="after")
    def _stand_in_built(self) -> Self:
        require_stand_in_build(self.stand_in, self.image_build)
        return self


class YugabyteTier(Model):
    replicas: Annotated[int, Field(ge=1)]
    """Pods of this tier."""
    resources: Resources
    """CPU and memory of each pod of this tier."""
    storage: Storage
    """Each pod's volume."""


class YugabyteConfig(Model):
    image: ImageRef
    """YugabyteDB's image, pinned by tag or digest."""
    replication_factor: Annotated[int, Field(ge=1, le=7)]
    """Copies of each tablet: odd, 3 or more in prod."""
    masters: YugabyteTier
    """The YB-Master StatefulSet."""
    tservers: YugabyteTier
    """The YB-TServer StatefulSet (the SQL endpoint)."""
    ysql_port: Port = 5433
    """The PostgreSQL-compatible SQL port."""
    image_build: ImageBuild | None = None
    """Build a PostgreSQL stand-in's image here instead (`local`)."""
    stand_in: Literal["postgresql"] | None = None
    """"postgresql": one PostgreSQL 15 server answers YSQL (same wire protocol and SQL for what the
    platform uses) in the tservers' place and under their Service names; no masters."""

    @model_validator(mode="after")
    def _enough_replicas(self) -> Self:
        require_stand_in_build(self.stand_in, self.image_build)
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
    """ClickHouse's image, pinned by tag or digest."""
    resources: Resources
    """CPU and memory of the ClickHouse pod."""
    storage: Storage
    """ClickHouse's volume."""
    http_port: Port = 8123
    """ClickHouse's HTTP port, with a password."""
    native_port: Port = 9000
    """ClickHouse's native protocol port, with a password."""

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        require_distinct_ports({"httpPort": self.http_port, "nativePort": self.native_port})
        return self


# --- the component ------------------------------------------------------------------------


def clickhouse_host(namespace: str) -> str:
    """ClickHouse's client Service name (known to its clients even where it is switched off)."""
    return f"{kube.CLICKHOUSE.name}.{namespace}.svc.{CLUSTER_DOMAIN}"


class StoreArgs(BaseModel):
    """What every store needs to know about where it runs."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    images: ImageSource
    """Where the part's images come from: the stack's StackImages (each built once)."""

    namespace: str
    instance: str
    priority_class: str
    node_topology_key: str
    zone_topology_key: str


def _client_service(
    resource_name: str, part: kube.Part, args: StoreArgs, ports: dict[str, int],
    parent: pulumi.Resource,
) -> k8s.core.v1.Service:
    return k8s.core.v1.Service(
        resource_name,
        metadata=kube.metadata(part.name, args.namespace, part.labels(args.instance)),
        spec={
            "type": "ClusterIP",
            "selector": part.selector(args.instance),
            "ports": [
                {"name": name, "port": port, "target_port": name, "protocol": "TCP"}
                for name, port in ports.items()
            ],
        },
        opts=pulumi.ResourceOptions(parent=parent),
    )


@dataclasses.dataclass(frozen=True)
class StoreUser:
    """A client's ACL user of the breaker store: its password (a stack secret) and what it may
    do, which the client's own room decides (key patterns, commands)."""

    name: str
    password: str
    key_patterns: tuple[str, ...]
    commands: tuple[str, ...]


USERS_SECRET = "dragonfly-users"
ACL_FILE = "users.acl"
ACL_DIR = "/etc/dragonfly"


def acl_file(users: list[StoreUser]) -> str:
    """Dragonfly's ACL file (Redis's syntax, which the Redis stand-in reads too; it takes no
    comments, so templates/dragonfly-users.acl.j2 holds none): the default user off, so a
    client that does not authenticate as one of `users` can do nothing (NOAUTH); passwords
    only as SHA-256 hashes."""
    return render("dragonfly-users.acl.j2", users=[
        {"name": user.name,
         "password_sha256": hashlib.sha256(user.password.encode()).hexdigest(),
         "key_patterns": " ".join(f"~{pattern}" for pattern in user.key_patterns),
         "commands": " ".join(user.commands)}
        for user in users])


class DragonflyArgs(StoreArgs):
    settings: DragonflyConfig
    users: list[StoreUser]
    """Every client's user; nobody else may connect (the default user is off)."""
    digest_key: str
    """The stack's secretsDigestKey: the server reads its ACL file at start."""


class Dragonfly(pulumi.ComponentResource):
    """Redis-compatible shared state: dialog/profile cache and the circuit-breaker state."""

    def __init__(self, name: str, args: DragonflyArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:Dragonfly", name, None, opts)
        settings = args.settings
        labels = kube.DRAGONFLY.labels(args.instance)
        self.users_secret = k8s.core.v1.Secret(
            f"{name}-users",
            metadata=kube.metadata(USERS_SECRET, args.namespace, labels),
            type="Opaque",
            string_data={ACL_FILE: pulumi.Output.secret(acl_file(args.users)),
                         **{user.name: pulumi.Output.secret(user.password)
                            for user in args.users}},
            opts=pulumi.ResourceOptions(parent=self),
        )
        acl = f"{ACL_DIR}/{ACL_FILE}"
        if settings.stand_in == "redis":
            # protected-mode off: the default user is off, every client authenticates.
            server_args = ["--port", str(settings.port), "--bind", "0.0.0.0",
                           "--protected-mode", "no", "--dir", "/data",
                           "--dbfilename", "dump.rdb", "--save", "300 1", "--aclfile", acl]
        else:
            # No HTTP on the data port: Dragonfly's /metrics there bypasses authentication
            # upstream, and its console would be a second way in; only the Redis protocol,
            # where every connection meets the ACL.
            server_args = ["--port", str(settings.port), "--dir", "/data", "--dbfilename",
                           "dump", "--snapshot_cron", "*/5 * * * *", "--aclfile", acl,
                           "--primary_port_http_enabled=false"]
        spec = StatefulTierSpec(
            part=kube.DRAGONFLY, namespace=args.namespace, instance=args.instance,
            image=args.images.image(REDIS_IMAGE, settings.image, settings.image_build),
            replicas=1, resources=settings.resources,
            storage=settings.storage, ports={"redis": settings.port}, data_path="/data",
            args=server_args,
            liveness=kube.tcp_probe("redis"), readiness=kube.tcp_probe("redis", period=5),
            priority_class=args.priority_class, node_topology_key=args.node_topology_key,
            zone_topology_key=args.zone_topology_key,
            credential_files=(ACL_DIR, [(USERS_SECRET, ACL_FILE, ACL_FILE)]),
            extra_annotations={SECRETS_DIGEST_ANNOTATION: secrets_digest(
                args.digest_key, {f"{USERS_SECRET}/{ACL_FILE}": acl_file(args.users)})},
        )
        self.tier = stateful_tier(name, spec, self)
        self.service = _client_service(f"{name}-service", kube.DRAGONFLY, args,
                                       {"redis": settings.port}, self)
        self.host = f"{kube.DRAGONFLY.name}.{args.namespace}.svc.{CLUSTER_DOMAIN}"
        self.port = settings.port
        self.register_outputs({"host": self.host, "port": self.port})


CLICKHOUSE_USERS_SECRET = "clickhouse-users"
CLICKHOUSE_USERS_DIR = "/etc/clickhouse-server/users.d"
CLICKHOUSE_ENGINE_USER = "acm_engine"


class ClickHouseArgs(StoreArgs):
    settings: ClickHouseConfig
    engine_password: str
    """The engines' ClickHouse password; the image's default user is removed."""
    digest_key: str


def clickhouse_users(engine_password: str) -> str:
    return render("clickhouse-users.xml.j2", users=[{
        "name": CLICKHOUSE_ENGINE_USER,
        "password_sha256": hashlib.sha256(engine_password.encode()).hexdigest()}])


class ClickHouse(pulumi.ComponentResource):
    """CDR analytics store."""

    def __init__(self, name: str, args: ClickHouseArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:ClickHouse", name, None, opts)
        settings = args.settings
        ports = {"http": settings.http_port, "native": settings.native_port}
        users = clickhouse_users(args.engine_password)
        self.users_secret = k8s.core.v1.Secret(
            f"{name}-users",
            metadata=kube.metadata(CLICKHOUSE_USERS_SECRET, args.namespace,
                                   kube.CLICKHOUSE.labels(args.instance)),
            type="Opaque",
            string_data={"acm.xml": pulumi.Output.secret(users),
                         CLICKHOUSE_ENGINE_USER: pulumi.Output.secret(args.engine_password)},
            opts=pulumi.ResourceOptions(parent=self),
        )
        spec = StatefulTierSpec(
            part=kube.CLICKHOUSE, namespace=args.namespace, instance=args.instance,
            image=settings.image, replicas=1, resources=settings.resources,
            storage=settings.storage, ports=ports, data_path="/var/lib/clickhouse",
            liveness=kube.http_probe("/ping", "http"),
            readiness=kube.http_probe("/ping", "http", period=5),
            priority_class=args.priority_class, node_topology_key=args.node_topology_key,
            zone_topology_key=args.zone_topology_key,
            # The server writes its logs and preprocessed config beside its data.
            scratch_paths=("/tmp", "/var/log/clickhouse-server", "/etc/clickhouse-server/config.d"),
            credential_files=(CLICKHOUSE_USERS_DIR, [(CLICKHOUSE_USERS_SECRET, "acm.xml",
                                                      "acm.xml")]),
            extra_annotations={SECRETS_DIGEST_ANNOTATION: secrets_digest(
                args.digest_key, {f"{CLICKHOUSE_USERS_SECRET}/acm.xml": users})},
        )
        self.tier = stateful_tier(name, spec, self)
        self.service = _client_service(f"{name}-service", kube.CLICKHOUSE, args, ports, self)
        self.host = clickhouse_host(args.namespace)
        self.http_port = settings.http_port
        self.register_outputs({"host": self.host, "httpPort": self.http_port})


class YugabyteArgs(StoreArgs):
    settings: YugabyteConfig
    database_secret_name: str
    """The Secret with the platform's database role (username, password): the PostgreSQL stand-in
    makes its role from it at start (the pod template's keyed digest of it, under the stack's
    secretsDigestKey, rolls it when the password is rotated)."""
    database_password: str
    digest_key: str


class YugabyteDb(pulumi.ComponentResource):
    """PostgreSQL-compatible system of record: masters and tservers as StatefulSets."""

    def __init__(self, name: str, args: YugabyteArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("acm:platform:YugabyteDb", name, None, opts)
        settings = args.settings
        masters_domain = f"{kube.YB_MASTER.name}-headless.{args.namespace}.svc.{CLUSTER_DOMAIN}"
        tservers_domain = f"{kube.YB_TSERVER.name}-headless.{args.namespace}.svc.{CLUSTER_DOMAIN}"
        master_addresses = ",".join(
            f"{kube.YB_MASTER.name}-{index}.{masters_domain}:{YB_MASTER_RPC}"
            for index in range(settings.masters.replicas)
        )
        common = {
            "namespace": args.namespace, "instance": args.instance, "image": settings.image,
            "priority_class": args.priority_class, "node_topology_key": args.node_topology_key,
            "zone_topology_key": args.zone_topology_key, "data_path": "/mnt/data",
        }
        master_spec = StatefulTierSpec(
            part=kube.YB_MASTER, replicas=settings.masters.replicas,
            resources=settings.masters.resources, storage=settings.masters.storage,
            ports={"rpc": YB_MASTER_RPC, "web": YB_MASTER_WEB},
            command=["/home/yugabyte/bin/yb-master"],
            args=[
                "--fs_data_dirs=/mnt/data",
                f"--master_addresses={master_addresses}",
                f"--replication_factor={settings.replication_factor}",
                f"--rpc_bind_addresses=$(POD_NAME).{masters_domain}:{YB_MASTER_RPC}",
                f"--server_broadcast_addresses=$(POD_NAME).{masters_domain}:{YB_MASTER_RPC}",
                "--logtostderr",
            ],
            liveness=kube.tcp_probe("rpc", initial_delay=30),
            readiness=kube.tcp_probe("rpc", period=5),
            **common,  # type: ignore[arg-type]
        )
        tserver_spec = StatefulTierSpec(
            part=kube.YB_TSERVER, replicas=settings.tservers.replicas,
            resources=settings.tservers.resources, storage=settings.tservers.storage,
            ports={"rpc": YB_TSERVER_RPC, "web": YB_TSERVER_WEB, "ysql": settings.ysql_port},
            command=["/home/yugabyte/bin/yb-tserver"],
            args=[
                "--fs_data_dirs=/mnt/data",
                f"--tserver_master_addrs={master_addresses}",
                f"--rpc_bind_addresses=$(POD_NAME).{tservers_domain}:{YB_TSERVER_RPC}",
                f"--server_broadcast_addresses=$(POD_NAME).{tservers_domain}:{YB_TSERVER_RPC}",
                "--enable_ysql=true",
                f"--pgsql_proxy_bind_address=0.0.0.0:{settings.ysql_port}",
                "--ysql_enable_auth=true",
                "--logtostderr",
            ],
            liveness=kube.tcp_probe("rpc", initial_delay=30),
            readiness=kube.tcp_probe("ysql", period=5),
            **common,  # type: ignore[arg-type]
        )
        if settings.stand_in == "postgresql":
            self._postgresql_stand_in(name, args, tserver_spec)
        else:
            self.masters = stateful_tier(f"{name}-master", master_spec, self)
            self.tservers = stateful_tier(f"{name}-tserver", tserver_spec, self)
            self.master_pdb = quorum_disruption_budget(f"{name}-master-pdb", master_spec, self)
            self.tserver_pdb = quorum_disruption_budget(f"{name}-tserver-pdb", tserver_spec,
                                                        self)
        self.ysql_service = _client_service(
            f"{name}-ysql-service", kube.YB_TSERVER, args, {"ysql": settings.ysql_port}, self
        )
        self.host = f"{kube.YB_TSERVER.name}.{args.namespace}.svc.{CLUSTER_DOMAIN}"
        self.ysql_port = settings.ysql_port
        self.register_outputs({"host": self.host, "ysqlPort": self.ysql_port,
                               "replicationFactor": settings.replication_factor})

    def _postgresql_stand_in(self, name: str, args: YugabyteArgs,
                             tservers: StatefulTierSpec) -> None:
        """PostgreSQL under the tservers' names and ports: clients (the compliance job, the
        engine) see the same host, port and credentials as with YugabyteDB."""
        settings = args.settings
        spec = dataclasses.replace(
            tservers,
            image=args.images.image(POSTGRESQL_IMAGE, settings.image, settings.image_build),
            replicas=1, ports={"ysql": settings.ysql_port}, command=(), args=(),
            env=({"name": "PGDATA", "value": "/mnt/data/pgdata"},
                 {"name": "ACM_DATABASE_PORT", "value": str(settings.ysql_port)},
                 {"name": "ACM_DATABASE_SECRET_DIR", "value": "/etc/acm/database"}),
            liveness=kube.tcp_probe("ysql", initial_delay=10),
            readiness=kube.tcp_probe("ysql", period=5),
            secret_volume=("credentials", args.database_secret_name, "/etc/acm/database"),
            extra_annotations={SECRETS_DIGEST_ANNOTATION: secrets_digest(
                args.digest_key,
                {f"{args.database_secret_name}/password": args.database_password})},
        )
        self.tservers = stateful_tier(f"{name}-tserver", spec, self)

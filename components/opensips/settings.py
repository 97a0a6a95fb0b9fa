"""OpenSIPS settings (`acm-platform:opensips`): ports, media gateways, flood protection, the
circuit breaker, workers and memory, validated before anything is deployed."""

from __future__ import annotations

import math
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from components.base.quantities import parse_quantity
from components.base.settings import (
    Autoscaling,
    Disruption,
    Host,
    ImageBuild,
    ImageRef,
    Model,
    Network,
    Percent,
    Port,
    Resources,
    require_disruption_below,
    require_distinct_ports,
    require_scalable,
    tag_version,
)
from components.opensips.memory import (
    OPENSIPS_HELPER_PROCESSES,
    OPENSIPS_MIN_SHARED_MIB,
    opensips_memory_mib,
)


class OpenSipsPorts(Model):
    sip_udp: Port = 5060
    """SIP over UDP (the UDP Service sends here directly: HAProxy does not proxy UDP)."""
    sip_tcp: Port = 5060
    """SIP over TCP inside the cluster."""
    sip_tls: Port = 5061
    """SIP over TLS inside the cluster."""
    proxy_tcp: Port = 5070
    """PROXY-protocol sockets: only the HAProxy pods may reach them (NetworkPolicy)."""
    proxy_tls: Port = 5071
    """SIP over TLS from HAProxy, with the PROXY protocol header; only HAProxy may reach it."""
    http: Port = 8888
    """OpenSIPS's HTTP MI and metrics, with the control account."""

    @model_validator(mode="after")
    def _distinct_tcp_ports(self) -> Self:
        require_distinct_ports({"sipTcp": self.sip_tcp, "sipTls": self.sip_tls,
                                 "proxyTcp": self.proxy_tcp, "proxyTls": self.proxy_tls,
                                 "http": self.http})
        return self


class MediaGateway(Model):
    host: Host
    """The gateway's host name or IP address."""
    port: Port = 5060
    """The gateway's SIP port."""
    capacity: Annotated[int, Field(ge=1)]
    """load_balancer capacity: concurrent calls this gateway takes."""


class FloodProtection(Model):
    """Requests per second one source address may send before OpenSIPS drops the excess.

    The source is the caller's own address (on the PROXY sockets, the one HAProxy's header
    carries). Interconnect partners send thousands of calls per second from a handful of
    addresses, so a known trunk (an address in network.sipPeerCidrs) has a limit of its own.
    """

    requests_per_second: Annotated[int, Field(ge=1)] = 30
    """New requests a second one address may send."""
    trunk_requests_per_second: Annotated[int, Field(ge=1)] = 5000
    """New requests a second an address in `network.sipPeerCidrs` may send."""


# New calls a second one core of OpenSIPS screens (benchmarks/opensips_capacity.py: OpenSIPS
# alone on a core, 8 UDP workers, the screened path; ramps gave 2,316, 2,382 and 2,001 one day,
# 1,525, 1,906 and 1,525 another; 1,906 in all three once the UDP receive buffer was 4 MiB:
# the lowest of all, rounded down; docs/measurements.md). A pod's
# shedding ceiling may not promise more than its CPU limit can carry; the stacks set 90 % of it.
SCREENED_CPS_PER_CORE = 1500
SHED_SLOTS_PER_SECOND = 10
# OpenSIPS's UDP receive buffer (`maxbuffer`; its default probes up to 256 KiB, about 25 ms of
# traffic at 4x the capacity): with it, a burst or a worker's wait on Dragonfly dropped
# datagrams in the kernel (UdpRcvbufErrors), and each dropped INVITE came back as a
# retransmission 500 ms later; with 4 MiB, 0 of 146-919 calls failed at 4x. The kernel caps
# the buffer at the node's net.core.rmem_max (not a pod's to set): docs/operations.md says so.
UDP_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024


# OpenSIPS's TCP I/O threads unless a stack says otherwise (benchmarks/proxy_protocol_callers.py,
# calls each on its own TCP connection through HAProxy, 2 cores): with 1 thread, 0 of 100,000
# calls lost at 1,747 calls/s; with 8 threads, 1,244/s and 61 of 100,000 calls never got the
# final answer OpenSIPS counted as sent (2 threads: 3 of 20,000), a race in 4.0.1's threaded
# TCP writes, not yet found (the PROXY-header race is patched, images/opensips/patches).
DEFAULT_TCP_IO_THREADS = 1


class LoadShedding(Model):
    """Backpressure: new calls a second one pod admits. The excess is refused at once with a
    stateless 503 and Retry-After, before the screening transaction and before any dialog, so
    that the calls admitted still complete (past its capacity the proxy once collapsed: at
    twice its capacity 72 % of calls failed). Flood protection per caller stays as it is."""

    calls_per_second: Annotated[int, Field(ge=1)]
    """New calls a second each OpenSIPS pod admits; at most `SCREENED_CPS_PER_CORE` times its CPU
    limit."""
    retry_after_seconds: Annotated[int, Field(ge=1, le=60)] = 2
    """The `Retry-After` of a shed call's 503."""

    @property
    def slots_per_second(self) -> int:
        """The admission pipe counts in slots of a tenth of a second. With one 1-second window
        the calls admitted in a second arrived together at its start, at the offered rate: at
        twice the capacity, a burst at twice the capacity for half a second (benchmark: admitted
        setup p95 428 ms, against 68 ms in slots). Below 100 calls a second a tenth rounds too
        coarsely, and one window is kept. ratelimit's 1-second timer also resets the pipe of
        the slot it falls in: that slot may admit up to twice its tenth (at most 10 % over the
        ceiling in that second)."""
        return SHED_SLOTS_PER_SECOND if self.calls_per_second >= 10 * SHED_SLOTS_PER_SECOND \
            else 1

    @property
    def calls_per_slot(self) -> int:
        # Rounded down, so that the slots add up to no more than the ceiling (at least 90 % of
        # it from 100 up); the timer's slot aside (see slots_per_second).
        return self.calls_per_second // self.slots_per_second


class CircuitBreaker(Model):
    failure_threshold: Annotated[int, Field(ge=1)] = 5
    """Calls the engines failed to screen that open the breaker."""
    open_seconds: Annotated[int, Field(ge=1)] = 30
    """Seconds the breaker stays open before half-open trials."""
    half_open_percent: Percent = 10
    """Share of calls, in percent, that try the engines while half open."""


class OpenSipsConfig(Model):
    image: ImageRef
    """Deployed as is unless imageBuild is set; then built from images/opensips/Dockerfile (and the
    sidecar's Python from images/dispatcher-sync/Dockerfile)."""
    image_build: ImageBuild | None = None
    """Build OpenSIPS's image here from the pinned source archive instead of pulling `image`."""
    dispatcher_sync_image: ImageRef
    """Python image of the dispatcher-sync sidecar (stdlib only)."""
    resources: Resources
    """CPU and memory of each OpenSIPS pod; the memory limit sets OpenSIPS's shared and private
    memory."""
    autoscaling: Autoscaling
    """OpenSIPS's HorizontalPodAutoscaler."""
    pdb: Disruption
    """OpenSIPS's PodDisruptionBudget."""
    ports: OpenSipsPorts = OpenSipsPorts()
    """OpenSIPS's listening ports."""
    udp_workers: Annotated[int, Field(ge=1, le=64)]
    """UDP worker processes at start (the auto-scaling profile's floor)."""
    tcp_workers: Annotated[int, Field(ge=1, le=64)]
    """TCP worker processes."""
    tcp_io_threads: Annotated[int, Field(ge=1, le=64)] | None = None
    """The I/O threads of TCP main that read and write TCP and TLS connections (OpenSIPS's
    `tcp_threads`). Left unset in the cfg, OpenSIPS starts one per online CPU, which in a container
    is the node's count, not the pod's limit (64 threads for a 2-CPU pod on a 64-core node). Unset
    here, it is 1 (`tcp_threads` below); set, it may not exceed the pod's CPU limit in whole cores.
    """
    max_udp_workers: Annotated[int, Field(ge=1, le=128)]
    """The most UDP workers the auto-scaling profile may run (equal to `udpWorkers`: fixed)."""
    dispatcher_probe_seconds: Annotated[int, Field(ge=1)] = 5
    """Seconds between OPTIONS probes of each engine, and between the sidecar's refreshes of the
    engine list."""
    gateway_probe_seconds: Annotated[int, Field(ge=1)] = 30
    """Seconds between probes of a disabled media gateway."""
    gateway_failures_before_inactive: Annotated[int, Field(ge=1)] = 2
    """Consecutive call failures that disable a media gateway (a 2xx resets the count)."""
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    """The circuit breaker shared by every OpenSIPS in Dragonfly: open, calls go unscreened
    (fail-open)."""
    media_gateways: Annotated[list[MediaGateway], Field(min_length=1)]
    """The media gateways screened calls continue to (load-balanced by channels)."""
    media_gateway_cidrs: Annotated[list[Network], Field(min_length=1)]
    """Where the media gateways live, for the NetworkPolicy egress rule."""
    flood_protection: FloodProtection = FloodProtection()
    """Per-caller request limits, keyed on the caller's address from the PROXY header."""
    load_shedding: LoadShedding
    """Admission control: past the ceiling, new INVITEs get a stateless 503 before screening."""
    udp_service_type: Literal["LoadBalancer", "NodePort"] = "LoadBalancer"
    """A cluster without a cloud load balancer (the local stack) exposes SIP/UDP on a NodePort."""

    @property
    def limit_cores(self) -> int:
        """The pod's CPU limit in whole cores, rounded up (at least 1)."""
        return max(1, math.ceil(parse_quantity(self.resources.limits.cpu)))

    @property
    def tcp_threads(self) -> int:
        """OpenSIPS's `tcp_threads`: the setting, or DEFAULT_TCP_IO_THREADS."""
        return self.tcp_io_threads if self.tcp_io_threads is not None \
            else DEFAULT_TCP_IO_THREADS

    @model_validator(mode="after")
    def _pdb_below_floor(self) -> Self:
        require_disruption_below(
            self.autoscaling.min_replicas, self.pdb, "autoscaling.minReplicas"
        )
        require_scalable(self.resources, self.autoscaling)
        version = tag_version(self.image)
        if version is not None and version < (4, 0):
            raise ValueError(
                f"image {self.image!r} is OpenSIPS {version[0]}.{version[1]}: the config "
                "accepts HAProxy's PROXY protocol on its sockets (allow_proxy_protocol), which "
                "OpenSIPS has from 4.0 on; use a 4.0 image")
        gateways = [(g.host.lower(), g.port) for g in self.media_gateways]
        repeated = sorted({f"{host}:{port}" for host, port in gateways
                           if gateways.count((host, port)) > 1})
        if repeated:
            raise ValueError(f"mediaGateways lists {', '.join(repeated)} more than once: "
                             "load_balancer would count its channels twice; list each gateway "
                             "once with its whole capacity")
        if self.max_udp_workers < self.udp_workers:
            raise ValueError(
                f"maxUdpWorkers {self.max_udp_workers} is below udpWorkers {self.udp_workers}"
            )
        if self.tcp_io_threads is not None and self.tcp_io_threads > self.limit_cores:
            raise ValueError(
                f"tcpIoThreads {self.tcp_io_threads} is more than the {self.limit_cores} "
                f"core(s) of resources.limits.cpu {self.resources.limits.cpu}: I/O threads "
                "beyond the pod's cores only wait for one another; leave it unset (1) or raise "
                "the CPU limit")
        cores = parse_quantity(self.resources.limits.cpu)
        carried = int(SCREENED_CPS_PER_CORE * cores)
        if self.load_shedding.calls_per_second > carried:
            raise ValueError(
                f"loadShedding.callsPerSecond {self.load_shedding.calls_per_second} is more than "
                f"a pod with resources.limits.cpu {self.resources.limits.cpu} can screen (about "
                f"{carried}: {SCREENED_CPS_PER_CORE} calls a second per core, measured); past it "
                "the proxy fails admitted calls instead of refusing the excess: lower the "
                "ceiling or raise the CPU limit")
        shared, private = opensips_memory_mib(self.resources.limits.memory,
                                              self.max_udp_workers, self.tcp_workers)
        if shared < OPENSIPS_MIN_SHARED_MIB:
            processes = self.max_udp_workers + self.tcp_workers + OPENSIPS_HELPER_PROCESSES
            raise ValueError(
                f"resources.limits.memory {self.resources.limits.memory} leaves {shared} MiB of "
                f"shared memory once {processes} processes have {private} MiB each; OpenSIPS "
                f"needs at least {OPENSIPS_MIN_SHARED_MIB} MiB (about 0.21 MiB per call per "
                "second): raise the limit or lower maxUdpWorkers/tcpWorkers")
        return self

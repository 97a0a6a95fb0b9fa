"""OpenSIPS memory sizing: `opensips -m/-M` from the container's memory limit."""

from __future__ import annotations

from components.base.quantities import parse_quantity

# OpenSIPS memory, from the container's limit. Shared memory holds transactions, dialogs and
# the dispatcher/load_balancer state (about 0.21 MiB per call per second, measured); each
# process has private memory of its own. Started with the 32 MiB default, a pod ran out at
# about 130 calls per second while using a fraction of its limit.
OPENSIPS_PRIVATE_MIB = 8
OPENSIPS_HELPER_PROCESSES = 8  # main, timers, TCP main, httpd and module helpers (measured: 6)
OPENSIPS_LIMIT_PERCENT = 90  # the rest of the limit is the runtime's and the kernel's
OPENSIPS_MIN_SHARED_MIB = 256


def opensips_memory_mib(limit: str, udp_processes: int, tcp_processes: int) -> tuple[int, int]:
    """(shared, private per process) MiB for `opensips -m/-M` under a memory limit."""
    processes = udp_processes + tcp_processes + OPENSIPS_HELPER_PROCESSES
    budget = int(parse_quantity(limit) * OPENSIPS_LIMIT_PERCENT / 100) // (1024 * 1024)
    return budget - processes * OPENSIPS_PRIVATE_MIB, OPENSIPS_PRIVATE_MIB

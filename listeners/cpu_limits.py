"""How many CPUs the service may use: its affinity, capped by its cgroup's CPU quota.

A container limited to 2 CPUs on a 64-CPU node would otherwise start 64 conversion
processes (~41 MB each), throttled by the quota all the same.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

__all__ = ["cgroup_cpu_limit", "cpu_quota", "usable_cpus"]

#: The CPU quota of the service's cgroup: v2 (``$MAX $PERIOD``, a container's own in its
#: cgroup namespace), else v1 (quota and period in µs, quota -1 = none).
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CFS_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_CFS_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cpu_quota(quota: str, period: str) -> int | None:
    """CPUs a cgroup quota allows, rounded up (1.5 CPUs: 2 processes), or None
    for no limit (``max``, -1) or a value that is not a quota."""
    try:
        allowed, every = int(quota), int(period)
    except ValueError:
        return None  # "max" (v2), or unreadable: no limit known
    if allowed <= 0 or every <= 0:
        return None  # -1 (v1): no limit
    return max(1, math.ceil(allowed / every))


def cgroup_cpu_limit(
    cpu_max: Path | None = None, cfs_quota: Path | None = None, cfs_period: Path | None = None
) -> int | None:
    """The CPU limit of the cgroup from its files (v2 first; default: the ``CGROUP_…``
    paths), or None when none is set or the files are absent or unreadable."""
    with contextlib.suppress(OSError):
        text = (cpu_max or CGROUP_V2_CPU_MAX).read_text(encoding="ascii", errors="replace")
        fields = text.split()
        return cpu_quota(*fields) if len(fields) == 2 else None
    with contextlib.suppress(OSError):
        return cpu_quota(
            (cfs_quota or CGROUP_V1_CFS_QUOTA).read_text(encoding="ascii", errors="replace"),
            (cfs_period or CGROUP_V1_CFS_PERIOD).read_text(encoding="ascii", errors="replace"),
        )
    return None


def usable_cpus(limit: int | None) -> int:
    """CPUs the service may use: those of its affinity (``taskset``, a cpuset), not the
    host's, capped by the cgroup CPU ``limit`` (``docker --cpus``, Kubernetes
    ``limits.cpu``: :func:`cgroup_cpu_limit`; None: no limit); at least 1. A container
    limited to 2 CPUs on a 64-CPU node would otherwise start 64 conversion processes
    (~41 MB each), throttled by the quota all the same."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on macOS and Windows
        cpus = os.cpu_count() or 1
    return max(1, cpus if limit is None else min(cpus, limit))

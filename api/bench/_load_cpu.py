"""CPU time per component of the stack (Linux /proc), for bench/load.py.

A snapshot before and after a timed phase says which process used the CPU
while it ran: on a host with few CPUs, a busy API, pool manager or benchmark
client shows up as queueing in every other process's latency.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 is index 0)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its own threads, not its children)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    """Direct children of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def snapshot(groups: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """CPU seconds of every pid of every group, now."""
    return {name: {pid: cpu_seconds(pid) for pid in pids} for name, pids in groups.items()}


def used(before: dict[str, dict[int, float]],
         after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds each group used between two snapshots (pids present in both)."""
    return {
        name: sum(after[name][pid] - before[name].get(pid, after[name][pid])
                  for pid in after[name])
        for name in after
    }


def host_busy_seconds() -> float:
    """CPU seconds the whole host spent busy (all CPUs, /proc/stat), since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS

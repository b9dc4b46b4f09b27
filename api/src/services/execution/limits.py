"""What each execution may use: time, memory, tasks, result and output size."""

from __future__ import annotations

from dataclasses import dataclass

from src.services.execution.protocol import WorkOrder


@dataclass(frozen=True)
class Limits:
    timeout: float  # seconds; also the most a caller may ask for
    max_result_bytes: int
    memory_mb: int  # 0: unbounded
    output_bytes: int = 8192  # of stdout, and of stderr, the last this many are kept
    max_pids: int = 0  # tasks (processes and threads) at once; 0: unbounded


def timeout_of(order: WorkOrder, most: float) -> float:
    """The order's own timeout when it asked for one under `most`, else `most`."""
    asked = order.get("timeout")
    if isinstance(asked, (int, float)) and not isinstance(asked, bool) and 0 < asked < most:
        return float(asked)
    return most

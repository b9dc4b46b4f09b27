"""An execution's outcome as JSON bytes: encoded by the execution's own process.

A workflow may return anything. What leaves its process is JSON, so a value
the reader could not import (an Enum defined in a workspace module, a numpy
scalar) or could not even unpickle never reaches the pool. Types with one
obvious JSON form are converted: Enum -> its value, numpy scalars -> Python
numbers, numpy arrays -> lists, sets -> lists, datetimes -> ISO 8601 text,
UUIDs -> text; NaN and Infinity become null, with a note saying where. Any
other type fails the execution, naming the type and where it was found.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import json
import math
import uuid
from typing import Any

from src.services.execution.protocol import ExecutionOutcome, ExecutionStatus

# Notes kept per outcome; the rest are counted.
MAX_NOTES = 10
# An error message longer than this is cut (the execution failed either way).
MAX_ERROR_CHARS = 64 * 1024
# The deepest nesting of lists and objects a result may have: the API's
# serialiser stops at about 255, and a record it cannot serialise would make
# every read of it fail. A deeper result fails the execution when it is encoded.
MAX_RESULT_DEPTH = 100


# Made when the worker starts, before any user code: a workflow that replaces
# `json.dumps` in its process changes nothing here.
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False)


class Unencodable(Exception):
    """The result holds a value with no obvious JSON form."""


def encode_outcome(
    status: ExecutionStatus,
    result: Any,
    error: str | None,
    duration_ms: float,
    *,
    max_bytes: int,
) -> bytes:
    """The outcome as UTF-8 JSON, never longer than about `max_bytes`.

    A result that cannot be encoded, or is over the limit, turns the outcome
    into `Failed` saying why; this function itself never raises.
    """
    notes: list[str] = []
    error = _cut(error)
    data = _dumps(status, result, error, duration_ms, notes)  # plain JSON types: done
    if data is None and status == "Success":
        try:
            result = to_json_value(result, notes)
        except Unencodable as exc:
            status, result, error = "Failed", None, f"TypeError: {exc}"
        except RecursionError:
            status, result = "Failed", None
            error = "RecursionError: the result is nested too deeply to encode as JSON"
        data = _dumps(status, result, error, duration_ms, notes)
    if data is None:
        data = _dumps("Failed", None, "TypeError: the result could not be encoded as JSON",
                      duration_ms, [])
    elif status == "Success" and (depth := json_depth(result)) > MAX_RESULT_DEPTH:
        data = _dumps("Failed", None,
                      f"ResultTooDeep: the result is nested {depth} levels deep, over the "
                      f"limit of {MAX_RESULT_DEPTH}", duration_ms, [])
    if data is not None and len(data) > max_bytes:
        kind = "result" if status == "Success" else "error"
        data = _dumps("Failed", None,
                      f"ResultTooLarge: the {kind} is {len(data)} bytes as JSON, over the "
                      f"limit of {max_bytes} bytes (BIFROST_MAX_RESULT_BYTES)", duration_ms, [])
    assert data is not None
    return data


def json_depth(value: Any, stop_after: int = MAX_RESULT_DEPTH + 1) -> int:
    """How deeply lists and dicts nest in `value` (a scalar is 0, `[]` is 1),
    counted without recursion and no further than `stop_after`."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (list, tuple, dict)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest >= stop_after:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth) for child in children)
    return deepest


def failure(error: str, duration_ms: float, status: ExecutionStatus = "Failed") -> bytes:
    """An outcome the worker writes itself (its execution process gave none)."""
    return encode_outcome(status, None, error, duration_ms, max_bytes=2 * MAX_ERROR_CHARS)


def decode_outcome(payload: bytes) -> ExecutionOutcome:
    """Read an outcome back; anything malformed is a `Failed` outcome saying so."""
    try:
        data = json.loads(payload)
        status = data["status"]
        if status not in ("Success", "Failed", "Timeout") or not isinstance(data, dict):
            raise ValueError(f"unknown status {status!r}")
        error = data.get("error")
        return ExecutionOutcome(
            status=status,
            result=data.get("result"),
            error=error if isinstance(error, str) else None,
            duration_ms=_duration(data.get("duration_ms")),
            notes=[str(note) for note in data.get("notes") or []],
        )
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError) as exc:
        return ExecutionOutcome(
            status="Failed", result=None, duration_ms=0, notes=[],
            error=f"ResultUnreadable: the execution's answer is not a valid outcome ({exc})",
        )


def _duration(value: Any) -> float:
    """An outcome's `duration_ms`: a finite, non-negative number of milliseconds."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"duration_ms is not a number: {value!r:.40}")
    duration = float(value)
    if not math.isfinite(duration) or duration < 0:
        raise ValueError(f"duration_ms is not a finite, non-negative number: {value!r:.40}")
    return duration


def _dumps(status: ExecutionStatus, result: Any, error: str | None, duration_ms: float,
           notes: list[str]) -> bytes | None:
    outcome = ExecutionOutcome(status=status, result=result, error=error,
                               duration_ms=duration_ms, notes=_capped(notes))
    try:
        text = _ENCODER.encode(outcome)
    except (ValueError, TypeError, RecursionError):
        return None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Unpaired surrogates ("\ud800") are not text any reader can take.
        outcome["notes"] = _capped([*notes, "unpaired surrogates in strings became U+FFFD"])
        text = _ENCODER.encode(outcome)
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return text.encode("utf-8")


def _cut(error: str | None) -> str | None:
    if error is None or len(error) <= MAX_ERROR_CHARS:
        return error
    return error[:MAX_ERROR_CHARS] + f"... (cut: the error was {len(error)} characters)"


def _capped(notes: list[str]) -> list[str]:
    if len(notes) <= MAX_NOTES:
        return notes
    return [*notes[:MAX_NOTES], f"... and {len(notes) - MAX_NOTES} more"]


def to_json_value(value: Any, notes: list[str], where: str = "result") -> Any:
    """`value` made of JSON types only (see the module docstring for the
    conversions); notes say where a value was replaced."""
    if value is None or isinstance(value, (str, bool, int)):
        if isinstance(value, int) and not isinstance(value, bool) and type(value) is not int:
            return _convert_other(value, notes, where)  # an IntEnum, an int subclass
        return value
    if type(value) is float:
        if math.isfinite(value):
            return value
        label = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        notes.append(f"{where}: {label} became null (JSON has no NaN or Infinity)")
        return None
    if type(value) is dict:
        return {_key(k, where): to_json_value(v, notes, f"{where}[{k!r}]")
                for k, v in value.items()}
    if type(value) in (list, tuple):
        return [to_json_value(v, notes, f"{where}[{i}]") for i, v in enumerate(value)]
    return _convert_other(value, notes, where)


def _convert_other(value: Any, notes: list[str], where: str) -> Any:
    if isinstance(value, enum.Enum):
        return to_json_value(value.value, notes, where)
    if isinstance(value, (set, frozenset)):
        items = list(value)
        with contextlib.suppress(TypeError):  # mixed types: any order is as good as another
            items.sort()
        return [to_json_value(v, notes, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if _is_numpy(value):
        return to_json_value(value.tolist() if hasattr(value, "tolist") else value.item(),
                             notes, where)
    if isinstance(value, float):  # a float subclass
        return to_json_value(float(value), notes, where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, dict):
        return to_json_value(dict(value), notes, where)
    if isinstance(value, (list, tuple)):
        return to_json_value(list(value), notes, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json_value(dataclasses.asdict(value), notes, where)
    raise Unencodable(
        f"{where} is a {_type_name(value)}, which has no JSON form; return JSON types "
        "(dict, list, str, int, float, bool, None) or convert it first"
    )


def _key(key: Any, where: str) -> str:
    # The keys json itself accepts, and Enum keys by value.
    if isinstance(key, enum.Enum):
        key = key.value
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    raise Unencodable(f"{where} has a key of type {_type_name(key)}; JSON keys are strings")


def _is_numpy(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "numpy"


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"

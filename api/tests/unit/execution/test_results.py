"""Outcomes encoded by the execution's own process: conversions, limits, decoding."""

from __future__ import annotations

import datetime
import enum
import json
import math
import uuid
from collections import defaultdict
from typing import Any

from src.services.execution.results import (
    MAX_RESULT_DEPTH,
    decode_outcome,
    encode_outcome,
    failure,
    json_depth,
)

LIMIT = 1024 * 1024


def _roundtrip(value: Any, max_bytes: int = LIMIT) -> dict[str, Any]:
    return dict(decode_outcome(encode_outcome("Success", value, None, 7, max_bytes=max_bytes)))


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def _numpy_like(name: str, value: Any) -> Any:
    """An object of a type whose module is numpy, as numpy's scalars are."""
    kind = type(name, (), {"__module__": "numpy", "item": lambda self: value})
    return kind()


def test_plain_json_is_kept_as_is() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": []}}
    assert _roundtrip(value) == {"status": "Success", "result": value, "error": None,
                                 "duration_ms": 7, "notes": []}


def test_obvious_conversions() -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    ident = uuid.UUID(int=1)
    counts: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    counts["a"]["b"] = 1
    out = _roundtrip({"color": Color.RED, "level": Level.HIGH, "tags": {3, 1, 2},
                      "when": when, "id": ident, "counts": counts, Color.RED: "by value",
                      "n": _numpy_like("float64", 2.5)})
    assert out["status"] == "Success"
    assert out["result"] == {"color": "red", "level": 3, "tags": [1, 2, 3],
                             "when": "2026-01-02T03:04:05", "id": str(ident),
                             "counts": {"a": {"b": 1}}, "red": "by value", "n": 2.5}


def test_nan_and_infinity_become_null_with_notes() -> None:
    out = _roundtrip({"mean": math.nan, "values": [1.0, -math.inf]})
    assert out["result"] == {"mean": None, "values": [1.0, None]}
    assert out["notes"] == [
        "result['mean']: NaN became null (JSON has no NaN or Infinity)",
        "result['values'][1]: -Infinity became null (JSON has no NaN or Infinity)",
    ]


def test_notes_are_capped() -> None:
    out = _roundtrip([math.nan] * 50)
    assert len(out["notes"]) == 11 and out["notes"][-1] == "... and 40 more"


def test_unknown_types_fail_naming_the_type_and_where() -> None:
    class Local:
        pass

    out = _roundtrip({"x": [1, Local()]})
    assert out["status"] == "Failed" and out["result"] is None
    assert "result['x'][1]" in out["error"] and "Local" in out["error"]
    assert out["error"].startswith("TypeError: ")
    assert _roundtrip({(1, 2): "tuple key"})["error"].startswith("TypeError: result has a key")
    assert _roundtrip(b"bytes")["error"].startswith("TypeError: result is a bytes")


def test_cycles_and_deep_nesting_fail_cleanly() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert _roundtrip(loop)["status"] == "Failed"
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    out = _roundtrip(deep)
    assert out["status"] == "Failed" and "nested too deeply" in out["error"]


def nested(depth: int, innermost: Any = None) -> Any:
    value = innermost
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_json_depth_counts_lists_and_objects() -> None:
    assert [json_depth(v) for v in (None, 1, "x", [], {}, [[]], {"a": [1, {"b": []}]})] == [
        0, 0, 0, 1, 1, 2, 4]
    assert json_depth(nested(40)) == 40
    assert json_depth(nested(10_000)) == MAX_RESULT_DEPTH + 1  # stops counting there


def test_a_result_deeper_than_the_api_can_show_fails_when_it_is_encoded() -> None:
    assert _roundtrip(nested(MAX_RESULT_DEPTH, "leaf"))["status"] == "Success"
    # 256 levels: plain JSON for the encoder, past what the API's serialiser takes.
    for depth in (MAX_RESULT_DEPTH + 1, 256):
        out = _roundtrip(nested(depth))
        assert out["status"] == "Failed" and out["result"] is None, depth
        assert out["error"].startswith("ResultTooDeep: the result is nested"), out["error"]
    # The same for values converted on the way (tuples, sets, enums inside).
    out = _roundtrip(nested(MAX_RESULT_DEPTH + 5, (Color.RED,)))
    assert out["status"] == "Failed" and "ResultTooDeep" in out["error"]


def test_size_limit_names_the_size() -> None:
    out = _roundtrip("x" * 5000, max_bytes=4096)
    assert out["status"] == "Failed" and "ResultTooLarge" in out["error"]
    assert "4096" in out["error"] and "50" in out["error"]
    raw = encode_outcome("Failed", None, "e" * 10_000_000, 1, max_bytes=LIMIT)
    assert len(raw) < LIMIT  # a huge error message is cut, not a reason to lose the outcome


def test_lone_surrogates_in_results_are_encodable() -> None:
    out = _roundtrip({"s": "a\ud800b"})
    assert out["status"] == "Success" and out["result"] == {"s": "a\ufffdb"}
    assert out["notes"] == ["unpaired surrogates in strings became U+FFFD"]
    out["result"]["s"].encode("utf-8")  # any reader can send it on


def test_decoding_garbage_gives_a_failed_outcome() -> None:
    for payload in (b"", b"\x80\x81", b"[]", b'{"status": "Maybe"}', b"{" * 100_000):
        out = decode_outcome(payload)
        assert out["status"] == "Failed" and "ResultUnreadable" in (out["error"] or "")


def test_failure_is_a_decodable_outcome() -> None:
    out = decode_outcome(failure("execution exceeded 3 s", 3000, "Timeout"))
    assert out == {"status": "Timeout", "result": None, "error": "execution exceeded 3 s",
                   "duration_ms": 3000, "notes": []}
    assert json.loads(failure("x", 1))["status"] == "Failed"


def test_a_duration_that_is_not_a_finite_non_negative_number_makes_the_outcome_failed() -> None:
    """An execution writes its own outcome: a duration no record can hold (1e400
    reads as infinity) fails it at once, instead of leaving it Running."""
    for duration in (b"1e400", b"-1e400", b"NaN", b"-1", b'"12"', b"true", b"[1]"):
        payload = b'{"status": "Success", "result": 1, "duration_ms": ' + duration + b"}"
        out = decode_outcome(payload)
        assert out["status"] == "Failed" and "ResultUnreadable" in (out["error"] or ""), duration
    kept = decode_outcome(b'{"status": "Success", "result": 1, "duration_ms": 0.2}')
    assert kept["status"] == "Success" and kept["duration_ms"] == 0.2

"""Reading a request body as JSON, strictly: what is accepted can be stored,
sent on to a worker and echoed in an answer without failing later.

`parse_json_body` accepts exactly the JSON that survives every later step:
UTF-8 text (RFC 8259), finite numbers (no `NaN`/`Infinity` tokens, no
`1e999`, which Python reads as infinity), integers Python can convert,
objects without repeated keys (two parsers could disagree on which one
wins), nesting no deeper than `MAX_DEPTH` (the execution stream's encoders
recurse), and strings that can be encoded as UTF-8 (a `\\ud800` escape
decodes to a lone surrogate, which no store, Redis client or response
encoder accepts). Anything else is an `InvalidJsonBody` whose message says
what is wrong and where.
"""

from __future__ import annotations

import codecs
import json
import math
from typing import Any

# Deep enough for any workflow's parameters (executions are tested with 500
# levels), and well below the interpreter's recursion limit (1000), which the
# JSON encoders and decoders of the execution stream, in the API and in the
# worker, recurse into.
MAX_DEPTH = 512
# Python's default limit for turning decimal digits into an int
# (`sys.get_int_max_str_digits()`): a longer integer could not be read back by
# a worker or any other Python process.
MAX_INTEGER_DIGITS = 4300
# How much of a key is quoted when an error names where it happened.
KEY_SHOWN_CHARS = 40


class InvalidJsonBody(ValueError):
    """A request body that is not acceptable JSON; the message is the reason."""


def parse_json_body(body: bytes) -> Any:
    """The JSON value of `body`, or InvalidJsonBody naming the problem."""
    # RFC 8259 lets a parser ignore a byte order mark; some editors write one.
    body = body.removeprefix(codecs.BOM_UTF8)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJsonBody(
            f"request body is not valid UTF-8 (byte {exc.start}: {exc.reason})"
        ) from None
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise InvalidJsonBody(
            f"request body is not valid JSON (JSON decode error: {exc.msg} "
            f"at line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InvalidJsonBody(_too_deep()) from None
    _check_values(value)
    return value


def _too_deep() -> str:
    return f"request body JSON is nested too deeply (more than {MAX_DEPTH} levels)"


def _refuse_constant(token: str) -> Any:
    raise InvalidJsonBody(
        f"request body JSON holds {token}, which is not a JSON number (numbers must be finite)"
    )


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        shown = literal if len(literal) <= KEY_SHOWN_CHARS else literal[:KEY_SHOWN_CHARS] + "..."
        raise InvalidJsonBody(
            f"request body JSON number {shown} is out of range (numbers must be finite, "
            f"at most about 1.8e308 in size)"
        )
    return number


def _bounded_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise InvalidJsonBody(
            f"request body JSON integer has {digits} digits (the limit is {MAX_INTEGER_DIGITS})"
        )
    return int(literal)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidJsonBody(
                f"request body JSON repeats the key {_quote(key)} in one object"
            )
        result[key] = value
    return result


def _quote(key: str) -> str:
    shown = key if len(key) <= KEY_SHOWN_CHARS else key[:KEY_SHOWN_CHARS] + "..."
    # ASCII escapes: a key may hold control characters or a lone surrogate.
    return json.dumps(shown)


def _label(path: tuple[str | int, ...]) -> str:
    if not path:
        return "request body"
    parts = []
    for step in path:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif step.isascii() and step.isidentifier():
            parts.append(f".{step}")
        else:
            parts.append(f"[{_quote(step)}]")
    return "request body field " + "".join(parts).lstrip(".")


def _check_string(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        before = text[: exc.start]
        line = before.count("\n") + 1
        column = exc.start - (before.rfind("\n") + 1) + 1
        raise InvalidJsonBody(
            f"{where}, line {line}: lone surrogate U+{ord(text[exc.start]):04X} at column "
            f"{column} (a string that cannot be encoded as UTF-8 cannot be stored or sent on)"
        ) from None


def _check_values(value: Any) -> None:
    """Depth and string checks, without recursion (the value may be deep)."""
    pending: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while pending:
        item, path = pending.pop()
        if isinstance(item, (dict, list)) and len(path) >= MAX_DEPTH:  # level len(path) + 1
            raise InvalidJsonBody(_too_deep())
        if isinstance(item, str):
            _check_string(item, _label(path))
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_string(key, f"a key in {_label(path)}")
                pending.append((child, (*path, key)))
        elif isinstance(item, list):
            pending.extend((child, (*path, index)) for index, child in enumerate(item))

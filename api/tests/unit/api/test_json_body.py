"""`parse_json_body`: the JSON a route may accept, and the reason for the rest."""

from __future__ import annotations

import pytest

from src.api.json_body import MAX_DEPTH, MAX_INTEGER_DIGITS, InvalidJsonBody, parse_json_body


def nested_lists(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"a": 1, "b": [1.5, -0.0, 1e308, null, true, "x"]}',
         {"a": 1, "b": [1.5, -0.0, 1e308, None, True, "x"]}),
        (b'"\\ud83d\\ude00 paired surrogates are one character"',
         "\U0001f600 paired surrogates are one character"),
        ("{\"caf\u00e9\": \"\u202e\"}".encode(), {"caf\u00e9": "\u202e"}),
        (b"\xef\xbb\xbf[]", []),  # a byte order mark is ignored (RFC 8259 section 8.1)
        (b"1e-999", 0.0),  # underflow is a number, just a small one
        (b"9" * MAX_INTEGER_DIGITS, int("9" * MAX_INTEGER_DIGITS)),
        (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, nested_lists(MAX_DEPTH)),
    ],
)
def test_acceptable_json(body: bytes, value: object) -> None:
    assert parse_json_body(body) == value


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": "\xff"}', "request body is not valid UTF-8 (byte 7: invalid start byte)"),
        (b'"\xed\xa0\x80"', "request body is not valid UTF-8 (byte 1: invalid continuation byte)"),
        (b'{"a": ', "request body is not valid JSON (JSON decode error: Expecting value "
                    "at line 1, column 7)"),
        (b"{} []", "JSON decode error: Extra data"),
        (b"NaN", "request body JSON holds NaN, which is not a JSON number"),
        (b"[-Infinity]", "holds -Infinity, which is not a JSON number"),
        (b"[1e999]", "request body JSON number 1e999 is out of range"),
        (b"-1E+400", "number -1E+400 is out of range"),
        (b"1" * (MAX_INTEGER_DIGITS + 1), f"integer has {MAX_INTEGER_DIGITS + 1} digits"),
        (b'{"a": 1, "a": 2}', 'repeats the key "a" in one object'),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested too deeply"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'"\\ud800"', "request body, line 1: lone surrogate U+D800 at column 1"),
        (b'{"content": "a\\nbc\\udfff"}',
         "request body field content, line 2: lone surrogate U+DFFF at column 3"),
        (b'{"p": {"x y": ["\\udbff"]}}', 'request body field p["x y"][0], line 1'),
        (b'{"p": {"\\ud800": 1}}', "a key in request body field p, line 1: lone surrogate"),
    ],
)
def test_refused_json_says_why(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidJsonBody) as refused:
        parse_json_body(body)
    assert reason in str(refused.value)


def test_a_surrogate_reason_says_why_it_matters() -> None:
    with pytest.raises(InvalidJsonBody, match="cannot be encoded as UTF-8 cannot be stored"):
        parse_json_body(b'["\\ud800"]')


def test_long_keys_and_numbers_are_shortened_in_reasons() -> None:
    with pytest.raises(InvalidJsonBody) as refused:
        parse_json_body(b'{"' + b"k" * 5000 + b'": 1, "' + b"k" * 5000 + b'": 2}')
    assert len(str(refused.value)) < 200
    with pytest.raises(InvalidJsonBody) as refused:
        parse_json_body(b"1" + b"0" * 400 + b".5")
    assert len(str(refused.value)) < 200

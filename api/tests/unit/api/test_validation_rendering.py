"""A 422 for a request that failed validation always renders.

FastAPI's own handler echoes each offending `input`; values that cannot be put
in a JSON answer turned the 422 into a 500. `validation_error_response` sends
the errors without their inputs then.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from src.api.errors import validation_error_response


def error(value: Any) -> dict[str, Any]:
    return {
        "type": "string_type",
        "loc": ("body", "module", 0),
        "msg": "Input should be a valid string",
        "input": value,
    }


def deeply_nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        b'{"module": "\xff"}',  # bytes that are not UTF-8
        "a\ud800",  # a lone surrogate
        float("nan"),
        float("inf"),
        deeply_nested(100_000),
    ],
    ids=["bytes not UTF-8", "lone surrogate", "NaN", "infinity", "too deep to encode"],
)
def test_unrenderable_inputs_are_left_out(value: Any) -> None:
    response = validation_error_response([error(value)])
    assert response.status_code == 422
    assert json.loads(bytes(response.body)) == {
        "detail": [
            {"type": "string_type", "loc": ["body", "module", "0"],
             "msg": "Input should be a valid string"}
        ]
    }


def test_renderable_inputs_are_echoed_as_fastapi_does() -> None:
    response = validation_error_response([error(5)])
    assert response.status_code == 422
    assert json.loads(bytes(response.body))["detail"][0]["input"] == 5


def test_a_message_that_cannot_be_encoded_still_answers_422() -> None:
    unencodable = {"type": "x", "loc": ["\udfff"], "msg": "m", "input": 1j}
    response = validation_error_response([unencodable])
    assert response.status_code == 422
    assert json.loads(bytes(response.body)) == {"detail": "request validation failed"}

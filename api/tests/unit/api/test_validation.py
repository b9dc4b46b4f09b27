"""422/413 answers and their shapes; all refused before any backend is touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(autouse=True)
def no_store_is_created(isolated_settings: Path) -> Any:
    yield
    # Every request here is refused before the store is opened.
    assert not (isolated_settings / "bifrost.db").exists()


def test_bad_requirement_lines_are_named_by_number(
    client: TestClient, auth: dict[str, str]
) -> None:
    content = "ok==1\n-e .\n# fine\nfoo @ https://example.com/foo.whl\nbar==\n"
    response = client.put("/api/requirements", json={"content": content}, headers=auth)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [e["line"] for e in detail["errors"]] == [2, 4, 5]
    assert [e["text"] for e in detail["errors"]] == [
        "-e .", "foo @ https://example.com/foo.whl", "bar==",
    ]
    assert all(e["reason"] for e in detail["errors"])
    for number in (2, 4, 5):
        assert f"line {number}:" in detail["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"content": 5},
        {"content": None},
        {"content": ["a"]},
        {"content": "a==1\n", "expected_hash": 7},
        {"content": "a==1\n", "other": 1},
        {},
        [],
        "a==1",
    ],
)
def test_requirements_body_of_the_wrong_shape_is_422(
    client: TestClient, auth: dict[str, str], body: Any
) -> None:
    response = client.put("/api/requirements", json=body, headers=auth)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


def test_invalid_json_is_422(client: TestClient, auth: dict[str, str]) -> None:
    response = client.put(
        "/api/requirements",
        content=b"{not json",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"package": "bad name"}, "whitespace"),
        ({"package": "-e"}, ""),
        ({"package": "https://example.com/x.whl"}, ""),
        ({"package": "requests>=2"}, "version separately"),
        ({"package": ""}, "empty"),
        ({"package": "requests", "version": "not a version"}, "invalid version"),
        ({"version": "1.0"}, "without a package"),
    ],
)
def test_install_with_a_bad_name_or_version_is_422(
    client: TestClient, auth: dict[str, str], body: dict[str, str], fragment: str
) -> None:
    response = client.post("/api/packages/install", json=body, headers=auth)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert fragment in detail["message"]
    assert len(detail["errors"]) == 1
    assert set(detail["errors"][0]) == {"line", "text", "reason"}


@pytest.mark.parametrize(
    "body",
    [{"package": 5}, {"package": "a", "version": 1.0}, {"package": "a", "extra": True}],
)
def test_install_body_of_the_wrong_types_is_422(
    client: TestClient, auth: dict[str, str], body: dict[str, Any]
) -> None:
    response = client.post("/api/packages/install", json=body, headers=auth)
    assert response.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"module": "workflows..hello", "function": "main"},
        {"module": "workflows/hello", "function": "main"},
        {"module": ".hello", "function": "main"},
        {"module": "1workflows", "function": "main"},
        {"module": "workflows.hello", "function": "main()"},
        {"module": "workflows.hello", "function": "main\n"},
        {"module": "workflows.hello", "function": ""},
        {"module": "", "function": "main"},
        {"module": "w" * 201, "function": "main"},
        {"module": "workflows.hello", "function": "f" * 101},
        {"module": "workflows.hello", "function": "main", "parameters": []},
        {"module": "workflows.hello", "function": "main", "parameters": "x"},
        {"module": "workflows.hello", "function": 1},
        {"module": "workflows.hello", "function": "main", "timeout": 0},
        {"module": "workflows.hello", "function": "main", "timeout": 10**9},
        {"module": "workflows.hello", "function": "main", "timeout": "5"},
        {"module": "workflows.hello"},
    ],
)
def test_bad_execution_requests_are_422(
    client: TestClient, auth: dict[str, str], body: dict[str, Any]
) -> None:
    response = client.post("/api/executions", json=body, headers=auth)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("workflows%2Fhello.py", "encoded"),
        ("%2E%2E/secret.py", "'..'"),
        ("workflows/%2E%2E/secret.py", "'..'"),
        ("hello%00.py", "NUL"),
        ("/etc/hello.py", "absolute"),
        ("workflows//hello.py", "'//'"),
        (".hidden.py", "may not start with '.'"),
        ("hello.exe", "file type"),
        ("requirements.txt", "/api/requirements"),
        ("", "empty"),
    ],
)
def test_bad_file_paths_are_422_naming_the_problem(
    client: TestClient, auth: dict[str, str], path: str, fragment: str
) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = client.request(method, f"/api/files/{path}", headers=auth, content=b"x = 1\n")
        assert response.status_code == 422, (method, path, response.text)
        detail = response.json()["detail"]
        assert detail.startswith("invalid path: ")
        assert fragment in detail


def test_file_body_that_is_not_utf8_is_422(client: TestClient, auth: dict[str, str]) -> None:
    response = client.put("/api/files/workflows/x.py", content=b"x = '\xff'\n", headers=auth)
    assert response.status_code == 422
    assert "UTF-8" in response.json()["detail"]


def test_body_over_the_cap_is_413(client: TestClient, auth: dict[str, str]) -> None:
    big = b"x" * (2 * 1024 * 1024 + 1)
    response = client.put("/api/files/workflows/x.py", content=big, headers=auth)
    assert response.status_code == 413

    def chunks() -> Any:
        # No Content-Length: the limit is counted while the body arrives.
        for _ in range(30):
            yield b"x" * (100 * 1024)

    response = client.put("/api/files/workflows/x.py", content=chunks(), headers=auth)
    assert response.status_code == 413
    response = client.put("/api/requirements", content=chunks(), headers=auth)
    assert response.status_code == 413

"""What every remote command gets: the API client and the global options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from src.cli.client import ApiClient
from src.cli.output import print_json


@dataclass(frozen=True)
class Context:
    client: ApiClient
    json_output: bool  # --json: print the API's JSON, not tables and messages
    no_wait: bool  # --no-wait: do not wait for the workers (or the execution)
    wait_timeout: float  # --timeout: seconds a wait may take

    def show(self, path: str, render: Callable[[Any], None]) -> int:
        """GET `path` and print it: the JSON as is with --json, else `render`ed."""
        answer = self.client.get(path)
        if self.json_output:
            print_json(answer)
        else:
            render(answer)
        return 0

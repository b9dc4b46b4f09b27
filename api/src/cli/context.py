"""What every remote command gets: the API client and the global options."""

from __future__ import annotations

from dataclasses import dataclass

from src.cli.client import ApiClient


@dataclass(frozen=True)
class Context:
    client: ApiClient
    json_output: bool  # --json: print the API's JSON, not tables and messages
    no_wait: bool  # --no-wait: do not wait for the workers (or the execution)
    wait_timeout: float  # --timeout: seconds a wait may take

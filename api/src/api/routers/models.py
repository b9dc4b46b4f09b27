"""Request and response bodies shared by the routers.

Requests are strict and closed (`extra="forbid"`): JSON of the wrong type or
with unknown fields is a 422, never silently coerced or ignored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RequirementsOut(BaseModel):
    content: str
    hash: str

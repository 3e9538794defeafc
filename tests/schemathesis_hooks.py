"""Schemathesis hooks for the daemon's document (loaded with SCHEMATHESIS_HOOKS=schemathesis_hooks).

NDJSON answers (the native streams) are read line by line, a line ending at each "\\n" (the
framing; other line breaks may sit inside a JSON string), so each line is checked against the
document's schema of a stream: an array of its lines (OpenAPI 3.2).
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx: Any, response: Any) -> list[Any]:
    return [json.loads(line) for line in response.content.decode("utf-8").split("\n") if line.strip()]

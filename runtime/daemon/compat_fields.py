"""Reading the fields of a compatibility request body (llama.cpp, OpenAI, Mistral) (torch-free).

Lenient the way the servers they imitate are: fields we have no use for are accepted and ignored,
but a field we do use must have the right type; a wrong one is a one-line ProtocolError.
"""

from __future__ import annotations

import math
from typing import Any

from diffgemma.runtime.api.checks import ProtocolError
from diffgemma.runtime.api.config import MAX_ALTERNATIVES, MAX_TIME_LIMIT_MS, MAX_TOKENS_LIMIT, SEED_MAX

# Far beyond any useful answer, but still a number: larger values are refused, smaller ones capped.
_MAX_TOKENS_ACCEPTED = 2**31 - 1


def check_type(body: dict[str, Any], key: str, kinds: tuple[type, ...], what: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError(f"{key} must be {what} (got boolean)")
    if not isinstance(value, kinds):
        raise ProtocolError(f"{key} must be {what}")
    return value


def as_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ProtocolError("request body must be a JSON object")
    return body


def read_stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    raise ProtocolError("stop must be a string or an array of strings")


def read_max_tokens(value: Any, key: str) -> int | None:
    # llama.cpp: n_predict -1 means "until done"; both treat a missing value as the server default.
    # A large value is capped (Continue sends 4096), the scheduler caps it again to the daemon's limit.
    if value is None or value == -1:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{key} must be an integer")
    if value < 0 or value > _MAX_TOKENS_ACCEPTED:
        raise ProtocolError(f"{key} must be between 0 and {_MAX_TOKENS_ACCEPTED} (got {value})")
    return min(value, MAX_TOKENS_LIMIT)


def read_seed(body: dict[str, Any]) -> int | None:
    seed = check_type(body, "seed", (int,), "an integer")
    if seed is None or seed < 0 or seed > SEED_MAX:  # llama.cpp: -1 is "random"
        return None
    return seed


def read_count(body: dict[str, Any], key: str) -> int:
    """OpenAI ``n`` / llama.cpp ``n_cmpl``: how many candidates, 1..MAX_ALTERNATIVES."""
    value = check_type(body, key, (int,), "an integer")
    if value is None:
        return 1
    if not 1 <= value <= MAX_ALTERNATIVES:
        # llama.vscode recognises llama.cpp's own wording for n_cmpl and adds its setting's name.
        raise ProtocolError(f"Field '{key}': Value must be between 1 <= value <= {MAX_ALTERNATIVES}, but got {value}")
    return value


def read_time_limit(body: dict[str, Any]) -> int | None:
    """llama.cpp's ``t_max_predict_ms`` (also read on the OpenAI endpoints); <= 0 means none."""
    value = check_type(body, "t_max_predict_ms", (int, float), "a number")
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return int(min(max(1.0, float(value)), MAX_TIME_LIMIT_MS))


def check_numbers(body: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        check_type(body, key, (int, float), "a number")


SAMPLER_NUMBERS = ("temperature", "top_k", "top_p", "min_p", "presence_penalty", "frequency_penalty",
                    "repeat_penalty", "n_indent", "t_max_prompt_ms", "typical_p", "mirostat")

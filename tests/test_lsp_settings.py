"""Settings parsing: every field checked on its own, bad values -> defaults + a message, never a raise."""

from __future__ import annotations

from typing import Any

import pytest

from diffgemma.lsp.settings import CompletionSettings, Settings, parse_settings, settings_to_json


def test_defaults_for_missing_payload() -> None:
    for raw in (None, {}, {"diffgemma": {}}):
        parsed = parse_settings(raw)
        assert parsed.settings == Settings()
        assert parsed.problems == ()


def test_flat_and_nested_payloads_agree() -> None:
    raw = {
        "model": "google/diffusiongemma-26B-A4B-it",
        "socket": "/tmp/x.sock",
        "autoStart": False,
        "maxTokens": 48,
        "steps": 12,
        "debounceMs": 0,
        "contextChars": 2000,
        "crossFile": False,
        "enable": {"python": True, "markdown": False, "*": False},
    }
    flat, nested = parse_settings(raw), parse_settings({"diffgemma": raw})
    assert flat == nested
    s = flat.settings
    assert flat.problems == ()
    assert (s.daemon.model, s.daemon.socket, s.daemon.auto_start) == (raw["model"], "/tmp/x.sock", False)
    assert (s.completion.max_tokens, s.completion.steps, s.completion.debounce_ms) == (48, 12, 0)
    assert s.completion.enabled_for("python") and not s.completion.enabled_for("markdown")
    assert not s.completion.enabled_for("rust")  # "*": False
    assert parse_settings(settings_to_json(s)).settings == s


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"maxTokens": "lots"}, "maxTokens"),
        ({"maxTokens": 0}, "maxTokens"),
        ({"maxTokens": True}, "maxTokens"),
        ({"steps": 5000}, "steps"),
        ({"debounceMs": -1}, "debounceMs"),
        ({"debounceMs": 2.5}, "debounceMs"),
        ({"contextChars": 3}, "contextChars"),
        ({"model": 7}, "model"),
        ({"autoStart": "yes"}, "autoStart"),
        ({"enable": "python"}, "enable"),
        ({"enable": {"python": "on"}}, "enable.python"),
        ({"maxTokenz": 5}, "maxTokenz"),
    ],
)
def test_bad_field_falls_back_with_one_line_problem(raw: dict[str, Any], field: str) -> None:
    parsed = parse_settings(raw)
    assert len(parsed.problems) == 1
    assert field in parsed.problems[0]
    assert "\n" not in parsed.problems[0]
    # the rest stays at its defaults
    assert parsed.settings.daemon == Settings().daemon
    assert parsed.settings.completion.debounce_ms == CompletionSettings().debounce_ms


def test_bad_fields_do_not_spoil_good_ones() -> None:
    parsed = parse_settings({"maxTokens": -3, "steps": 9, "enable": False})
    assert parsed.settings.completion.max_tokens is None
    assert parsed.settings.completion.steps == 9
    assert not parsed.settings.completion.enabled_for("python")
    assert len(parsed.problems) == 1


@pytest.mark.parametrize("raw", [[1, 2], "x", 3, {"diffgemma": 5}])
def test_non_object_payload(raw: Any) -> None:
    parsed = parse_settings(raw)
    assert parsed.settings == Settings()
    assert len(parsed.problems) == 1


def test_next_edit_settings() -> None:
    from diffgemma.lsp.settings import NextEditSettings

    assert Settings().next_edit == NextEditSettings(enable=True, debounce_ms=400, threshold=None)
    parsed = parse_settings({"nextEdit": {"enable": False, "debounceMs": 0, "threshold": 0.25}})
    assert parsed.problems == ()
    assert parsed.settings.next_edit == NextEditSettings(enable=False, debounce_ms=0, threshold=0.25)
    assert parse_settings(settings_to_json(parsed.settings)).settings == parsed.settings
    assert parse_settings({"nextEdit": False}).settings.next_edit.enable is False
    # VS Code sends the group with nulls for what the user left unset
    assert parse_settings({"nextEdit": {"enable": True, "threshold": None}}).settings.next_edit == NextEditSettings()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"nextEdit": "on"}, "nextEdit"),
        ({"nextEdit": {"enable": "yes"}}, "nextEdit.enable"),
        ({"nextEdit": {"threshold": 2}}, "nextEdit.threshold"),
        ({"nextEdit": {"threshold": True}}, "nextEdit.threshold"),
        ({"nextEdit": {"debounceMs": -5}}, "nextEdit.debounceMs"),
        ({"nextEdit": {"enabled": True}}, "nextEdit.enabled"),
    ],
)
def test_bad_next_edit_setting_falls_back(raw: dict[str, Any], field: str) -> None:
    parsed = parse_settings(raw)
    assert len(parsed.problems) == 1 and field in parsed.problems[0], parsed.problems
    assert parsed.settings.next_edit.enable is True

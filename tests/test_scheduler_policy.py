"""The model policy on its own: which models a request may name, and what it is told otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from scheduler_standins import checkpoint

from diffgemma.runtime.api.errors import ErrorCode, WireError
from diffgemma.runtime.daemon.jobs import Limits
from diffgemma.runtime.daemon.policy import MODEL_FIXED, MODEL_REFUSED, ModelPolicy
from diffgemma.runtime.engine.loading import ModelLoadError


def refusal(policy: ModelPolicy, name: str | None) -> WireError:
    with pytest.raises(WireError) as refused:
        policy.resolve(name)
    return refused.value


def test_the_refusal_texts_are_the_ones_clients_see() -> None:
    assert MODEL_REFUSED == ("model not available: this daemon serves its default model and those allowed "
                             "with --allow-model")
    assert MODEL_FIXED == "this daemon serves a fixed model (--fixed-model): requests cannot load or unload models"


def test_no_name_means_the_default_and_no_default_is_an_error() -> None:
    assert ModelPolicy("base", Limits()).resolve(None) == "base"
    error = refusal(ModelPolicy(None, Limits()), None)
    assert error.code == ErrorCode.NO_MODEL and "--model or DIFFGEMMA_MODEL" in error.message


def test_a_unix_socket_daemon_lets_its_owner_name_any_model() -> None:
    policy = ModelPolicy("base", Limits())
    assert policy.resolve("/anything/at/all") == "/anything/at/all"


def test_the_allow_list_refuses_every_other_name_with_one_text(tmp_path: Path) -> None:
    base, allowed = checkpoint(tmp_path / "base"), checkpoint(tmp_path / "allowed")
    policy = ModelPolicy(base, Limits(allowed_models=(allowed,), restrict_models=True))
    assert policy.resolve(allowed) == allowed
    assert policy.resolve(f"{tmp_path}/./allowed") == f"{tmp_path}/./allowed"  # another spelling of it
    assert policy.resolve(base) == base
    for name in ("/etc/passwd", str(tmp_path), "/nonexistent/ckpt", "google/some-model", "~", checkpoint(
            tmp_path / "other")):
        error = refusal(policy, name)
        assert (error.code, error.message) == (ErrorCode.MODEL_NOT_FOUND, MODEL_REFUSED), name


def test_a_fixed_model_refuses_others_and_takes_its_own_other_spelling(tmp_path: Path) -> None:
    base, other = checkpoint(tmp_path / "base"), checkpoint(tmp_path / "other")
    policy = ModelPolicy(base, Limits(fixed_model=True, allowed_models=(other,)))
    error = refusal(policy, other)  # the allow-list does not open a fixed daemon
    assert (error.code, error.message) == (ErrorCode.MODEL_LOCKED, MODEL_FIXED)
    assert policy.resolve(f"{tmp_path}/./base") == base  # the daemon's own spelling, one model loaded


def test_a_fixed_model_ignores_a_requests_keep_alive() -> None:
    assert ModelPolicy("base", Limits(fixed_model=True)).keep_alive(0.0) is None
    assert ModelPolicy("base", Limits()).keep_alive(0.0) == 0.0
    assert ModelPolicy("base", Limits()).keep_alive(None) is None


def test_listed_models_default_first_then_loaded_then_allowed() -> None:
    policy = ModelPolicy("base", Limits(allowed_models=("a", "base", "b")))
    assert policy.listed("loaded") == ["base", "loaded", "a", "b"]
    assert policy.listed("a") == ["base", "a", "b"]
    assert ModelPolicy(None, Limits()).listed(None) == []


def test_a_load_failure_says_why_unless_the_daemon_is_restricted() -> None:
    open_policy = ModelPolicy("base", Limits())
    missing = open_policy.load_failed("m", ModelLoadError("model directory m does not exist"))
    assert (missing.code, missing.message) == (ErrorCode.MODEL_NOT_FOUND,
                                               "could not load model m: model directory m does not exist")
    broken = open_policy.load_failed("m", RuntimeError("out of memory\nmore lines"))
    assert (broken.code, broken.message) == (ErrorCode.MODEL_LOAD_FAILED, "could not load model m: out of memory")
    hidden = ModelPolicy("base", Limits(restrict_models=True)).load_failed("m", ModelLoadError("/secret/path"))
    assert hidden.code == ErrorCode.MODEL_LOAD_FAILED and "/secret" not in hidden.message
    assert hidden.message == "the model could not be loaded; see the daemon's log"

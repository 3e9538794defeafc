"""A team server's pieces on their own: the tokens file (format, mode, reload), supersession scoped per
developer with the counters it feeds, and the client side's URL, token and certificate settings.

The same pieces run end to end, through real daemon processes, in tests/test_team_server.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from scheduler_standins import job

from diffgemma.cli.errors import UsageProblem
from diffgemma.cli.options import resolve
from diffgemma.runtime.api.errors import ErrorCode, InvalidValue
from diffgemma.runtime.api.remote import Remote, normalize_url, read_token_file, refuse_url_socket, resolve_token
from diffgemma.runtime.api.results import Result
from diffgemma.runtime.daemon.job_queue import JobQueue
from diffgemma.runtime.daemon.jobs import Outcome
from diffgemma.runtime.daemon.team import Caller, Team, TokensFile, TokensFileError, parse_tokens

ALICE, BOB, CAROL = "a" * 32, "b" * 32, "c" * 32


def tokens_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def rewrite(path: Path, text: str) -> None:
    """Change the file so that its stat differs even on a coarse clock (a new inode)."""
    fresh = path.with_name(path.name + ".new")
    tokens_file(fresh, text)
    fresh.replace(path)


# --- the tokens file -------------------------------------------------------------------------------


def test_the_file_names_developers_one_per_line() -> None:
    text = f"# the team\n\nalice {ALICE}\n  bob\t{BOB}  \n# carol {CAROL}\n"
    assert parse_tokens(text, "t") == {"alice": ALICE.encode(), "bob": BOB.encode()}
    assert parse_tokens("", "t") == {}


@pytest.mark.parametrize(("text", "problem"), [
    (f"alice {ALICE} extra\n", "t:1: expected `NAME TOKEN` (3 fields)"),
    (f"\nal/ice {ALICE}\n", "t:2: a name is"),
    ("alice short\n", "t:1: alice's token must be at least 16"),
    (f"alice {ALICE}\nalice {BOB}\n", "t:2: alice is named twice"),
    (f"alice {ALICE}\nbob {ALICE}\n", "t:2: bob has the same token as alice"),
    ("alice\n", "t:1: expected `NAME TOKEN` (1 fields)"),
])
def test_a_malformed_line_is_named_without_its_token(text: str, problem: str) -> None:
    with pytest.raises(TokensFileError) as info:
        parse_tokens(text, "t")
    assert str(info.value).startswith(problem)
    assert ALICE not in str(info.value) and BOB not in str(info.value)
    assert "\n" not in str(info.value)


def test_a_file_other_users_may_read_is_refused(tmp_path: Path) -> None:
    path = tokens_file(tmp_path / "tokens", f"alice {ALICE}\n", 0o644)
    with pytest.raises(TokensFileError, match=r"open to other users \(mode 0644\); run `chmod 600"):
        TokensFile(path)
    with pytest.raises(TokensFileError, match="cannot read tokens file"):
        TokensFile(tmp_path / "missing")
    os.chmod(path, 0o600)
    assert TokensFile(path).names == ["alice"]


def test_tokens_are_recognised_and_the_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tokens_file(tmp_path / "tokens", f"alice {ALICE}\nbob {BOB}\n")
    tokens = TokensFile(path)
    assert tokens.identify(ALICE.encode()) == "alice" and tokens.identify(BOB.encode()) == "bob"
    assert tokens.identify(CAROL.encode()) is None and tokens.identify(b"") is None
    assert tokens.identify(ALICE[:-1].encode()) is None and tokens.identify((ALICE + "a").encode()) is None
    rewrite(path, f"alice {ALICE}\ncarol {CAROL}\n")  # bob leaves, carol joins: no restart
    assert tokens.identify(CAROL.encode()) == "carol" and tokens.identify(BOB.encode()) is None
    # A broken edit keeps the names in force (the whole team is not locked out by a typo) ...
    rewrite(path, "carol oops\n")
    assert tokens.identify(CAROL.encode()) == "carol" and tokens.names == ["alice", "carol"]
    # ... and a file opened to others is refused the same way.
    rewrite(path, f"dave {'d' * 32}\n")
    os.chmod(path, 0o644)
    assert tokens.identify(b"d" * 32) is None
    os.chmod(path, 0o600)  # the mode changed, the stat did not: SIGHUP asks for a read
    tokens.request_reload()
    assert tokens.identify(b"d" * 32) == "dave" and tokens.identify(ALICE.encode()) is None


# --- supersession per developer, and the counters --------------------------------------------------


def test_one_developers_request_never_supersedes_anothers(tmp_path: Path) -> None:
    team = Team(TokensFile(tokens_file(tmp_path / "tokens", f"alice {ALICE}\nbob {BOB}\n")))
    queue = JobQueue(8)
    (alice_old, alice_old_answer), (bob_job, bob_answer) = job("m", "a", client="ed"), job("m", "b", client="ed")
    (alice_new, _), (owner_job, owner_answer) = job("m", "c", client="ed"), job("m", "d", client="ed")
    team.submitting(Caller("alice"), alice_old)
    queue.submit(alice_old)
    team.submitting(Caller("bob"), bob_job)
    queue.submit(bob_job)  # same client key, another developer: both wait
    queue.submit(owner_job)  # the daemon's owner (no tokens-file name): its own scope
    assert len(queue) == 3 and not alice_old_answer.done and queue.superseded == 0
    team.submitting(Caller("alice"), alice_new)
    queue.submit(alice_new)  # alice's newer request replaces alice's older one only
    assert alice_old_answer.finish_reason() == "cancelled" and alice_old.superseded
    assert not bob_answer.done and not owner_answer.done and queue.superseded == 1
    assert [queue.take(), queue.take(), queue.take()] == [bob_job, owner_job, alice_new]
    queue.done(bob_job, Outcome.failed(ErrorCode.INTERNAL, "broke"))
    queue.done(alice_new, Outcome(result=_result("done", generated=5)))
    report = team.report(None)
    assert report["developer"] is None and list(report["developers"]) == ["alice", "bob"]
    alice, bob = report["developers"]["alice"], report["developers"]["bob"]
    assert {k: alice[k] for k in ("requests", "completed", "superseded", "cancelled", "errors", "generated_tokens")} \
        == {"requests": 2, "completed": 1, "superseded": 1, "cancelled": 0, "errors": 0, "generated_tokens": 5}
    assert (bob["requests"], bob["errors"], bob["completed"]) == (1, 1, 0)
    # A developer sees their own counters only.
    assert list(team.report(Caller("bob"))["developers"]) == ["bob"]
    team.seen("bob")
    assert time.strftime("%Y-%m-%dT", time.gmtime()) in team.report(Caller("bob"))["developers"]["bob"]["last_seen"]


def _result(text: str, generated: int) -> Result:
    return Result(text=text, finish_reason="stop", timings={"generated_tokens": generated}, id="x", model="m")


# --- the client side: URL, token, certificate --------------------------------------------------------


@pytest.mark.parametrize(("given", "url"), [
    ("https://gpu-box:8443", "https://gpu-box:8443"),
    ("HTTP://127.0.0.1:8012/", "http://127.0.0.1:8012"),
    ("https://[::1]:8443", "https://[::1]:8443"),
    ("https://proxy.example.com/diffgemma/", "https://proxy.example.com/diffgemma"),
])
def test_urls_are_checked_and_normalised(given: str, url: str) -> None:
    assert normalize_url(given) == url


@pytest.mark.parametrize("given", ["gpu-box:8443", "ftp://h:1", "https://", "https://h:99999", "https://h:1/?q=1",
                                   "https://user:pw@h:1", "/run/user/1000/diffgemma/daemon.sock"])
def test_a_bad_url_is_one_line(given: str) -> None:
    with pytest.raises(InvalidValue, match=r"--url must look like https://HOST:PORT"):
        normalize_url(given)


def test_a_url_is_refused_where_a_socket_path_goes() -> None:
    for value in ("http://127.0.0.1:8012", "https://h:1", Path("http://h:1"), "tcp://h:1"):
        with pytest.raises(InvalidValue, match=r"takes a Unix socket path, not a URL .*use --url"):
            refuse_url_socket(value)
    for value in (None, "/tmp/d.sock", "d.sock", "./weird:name.sock"):
        refuse_url_socket(value)


def test_the_token_sent_is_the_first_one_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFGEMMA_STATE_DIR", str(tmp_path / "state"))
    for name in ("DIFFGEMMA_TOKEN", "DIFFGEMMA_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert resolve_token() is None
    (tmp_path / "state").mkdir(exist_ok=True)
    tokens_file(tmp_path / "state" / "token", "from-state-dir\n")
    assert resolve_token() == "from-state-dir"
    monkeypatch.setenv("DIFFGEMMA_TOKEN", "from-env")
    assert resolve_token() == "from-env"
    monkeypatch.setenv("DIFFGEMMA_TOKEN_FILE", str(tokens_file(tmp_path / "env-file", "from-env-file\n")))
    assert resolve_token() == "from-env-file"
    assert resolve_token(token_file=tokens_file(tmp_path / "flag-file", "from-flag-file\n")) == "from-flag-file"
    assert resolve_token(token=" from-flag ", token_file=tmp_path / "flag-file") == "from-flag"


def test_a_token_file_must_be_private_and_hold_a_token(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue, match=r"open to other users \(mode 0640\)"):
        read_token_file(tokens_file(tmp_path / "loose", "secret\n", 0o640))
    with pytest.raises(InvalidValue, match="is empty"):
        read_token_file(tokens_file(tmp_path / "empty", "\n"))
    with pytest.raises(InvalidValue, match="cannot read token file"):
        read_token_file(tmp_path / "missing")


def test_an_unreadable_ca_certificate_is_a_setting_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue, match="cannot use the CA certificate"):
        Remote.resolve("https://h:1", token="t" * 16, ca_cert=tmp_path / "missing.pem")
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    with pytest.raises(InvalidValue, match="cannot use the CA certificate"):
        Remote.resolve("https://h:1", token="t" * 16, ca_cert=tmp_path / "bad.pem")


def test_the_command_line_picks_the_url_or_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFGEMMA_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("DIFFGEMMA_STATE_DIR", str(tmp_path / "state"))
    for name in ("DIFFGEMMA_URL", "DIFFGEMMA_SOCKET", "DIFFGEMMA_TOKEN", "DIFFGEMMA_TOKEN_FILE", "DIFFGEMMA_CA_CERT"):
        monkeypatch.delenv(name, raising=False)
    settings = resolve(url="https://gpu-box:8443/", token="t" * 16)
    assert settings.remote == Remote(url="https://gpu-box:8443", token="t" * 16) and settings.socket is None
    assert resolve().remote is None
    with pytest.raises(UsageProblem, match="--socket takes a Unix socket path, not a URL"):
        resolve(socket="http://gpu-box:8443")
    with pytest.raises(UsageProblem, match="use either --url or --socket"):
        resolve(url="https://gpu-box:8443", socket="/tmp/d.sock")
    # config.toml names the team server; a --socket flag still reaches the local daemon, and the other way round.
    (tmp_path / "config.toml").write_text('url = "https://gpu-box:8443"\n')
    assert resolve(socket="/tmp/d.sock").remote is None
    (tmp_path / "config.toml").write_text('socket = "/tmp/d.sock"\n')
    assert resolve(url="http://h:1").remote == Remote(url="http://h:1", token=None)

"""Log digests: kept outside the database, they prove covered events are unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
import pytest

import ledger
from ledger.chain import recompute
from ledger.digest import Digest, check, take
from ledger.errors import InvalidEvent
from ledger.records import LogCursor
from tests.test_tamper import tamper_postgres, tamper_sqlite, verify_cli
from tests.writers import turn


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def tamper(url: str, sql: str, *params: object) -> None:
    if url.startswith("sqlite"):
        tamper_sqlite(url, sql.replace("%s", "?"), *params)
    else:
        tamper_postgres(url, sql, *params)


def some_runs(led: ledger.Ledger, n: int = 3) -> list[str]:
    runs = []
    for i in range(n):
        run = led.tenant(f"usr_{i}").start_run(session_id="s")
        turn(run, i)
        runs.append(run.run_id)
    return runs


def test_a_digest_round_trips_as_text(url: str) -> None:
    with ledger.connect(url) as led:
        some_runs(led)
        digest = take(led.store)
    assert digest.events == 18
    assert Digest.parse(str(digest)) == digest
    assert Digest.parse(f"  {digest}\n") == digest
    prefix, _, root = str(digest).rpartition(":")
    assert Digest.parse(f"{prefix}:{root.upper()}") == digest
    for bad in ["", "ledger-digest-v1:1:2:3:zz", str(digest)[:-1], "sha256:abc"]:
        with pytest.raises(InvalidEvent, match="not a ledger digest"):
            Digest.parse(bad)


def test_events_appended_after_a_digest_do_not_disturb_it(url: str) -> None:
    with ledger.connect(url) as led:
        some_runs(led)
        digest = take(led.store)
        some_runs(led, 2)
        assert check(led.store, digest)
        assert take(led.store).events == 30
    result = verify_cli(url, "--against", str(digest), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digest_matches"] is True


def test_a_tampered_covered_event_fails_the_digest(url: str) -> None:
    with ledger.connect(url) as led:
        runs = some_runs(led)
        digest = take(led.store)
    tamper(
        url,
        "UPDATE ledger_events SET type = 'run_failed' WHERE run_id = %s AND version = 2",
        runs[1],
    )
    result = verify_cli(url, "--against", str(digest), "--json")
    assert result.returncode == 1  # the chain check finds it, and names it
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [(p["run_id"], p["version"]) for p in report["problems"]] == [(runs[1], 2)]


def test_a_mismatch_names_the_covered_event_the_narrowed_check_cannot_see(url: str) -> None:
    """--user narrows the chain check to usr_0; the digest still names usr_1's event."""
    digest, runs = _covered_then_changed(url, "hash")
    result = verify_cli(url, "--user", "usr_0", "--against", str(digest))
    assert result.returncode == 1
    assert f"run {runs[1]} (user usr_1) at version 3" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_tampered_event_after_the_horizon_leaves_the_digest_proven(url: str) -> None:
    with ledger.connect(url) as led:
        some_runs(led)
        digest = take(led.store)
        later = some_runs(led, 1)[0]
    tamper(
        url,
        "UPDATE ledger_events SET hash = %s WHERE run_id = %s AND version = 2",
        bytes(32),
        later,
    )
    report = json.loads(verify_cli(url, "--against", str(digest), "--json").stdout)
    assert report["digest_matches"] is True
    assert [(p["run_id"], p["version"]) for p in report["problems"]] == [(later, 2)]


def test_a_digest_beyond_the_log_says_the_log_ends_before_it(url: str) -> None:
    """A digest of a longer log (another ledger's, or this one's before a deletion)."""
    with ledger.connect(url) as led:
        some_runs(led)
        taken = take(led.store)
    future = Digest(LogCursor(taken.horizon.tx_id + 100, 1), taken.events + 5, taken.root)
    result = verify_cli(url, "--against", str(future))
    assert result.returncode == 1
    assert "the log ends before the digest's horizon" in result.stderr
    assert f"it holds {taken.events} events, the digest covers {future.events}" in result.stderr


def test_a_consistently_rewritten_chain_passes_verify_but_not_the_digest(url: str) -> None:
    """An attacker who rewrites a whole run's chain fools the per-run check, not a digest."""
    with ledger.connect(url) as led:
        runs = some_runs(led)
        digest = take(led.store)
        victim = led.store.read_run(None, runs[0])
    forged = victim[1].payload[:-1] + b" }"  # still valid JSON (the content may be sealed)
    assert forged != victim[1].payload
    prev = victim[0].hash
    rewritten = []
    for record in victim[1:]:
        payload = forged if record.version == 2 else record.payload
        fixed = msgspec.structs.replace(record, payload=payload, prev_hash=prev)
        digest_of = recompute(fixed, prev)
        rewritten.append((payload, prev, digest_of, record.version))
        prev = digest_of
    for payload, prev_hash, new_hash, version in rewritten:
        tamper(
            url,
            "UPDATE ledger_events SET payload = %s, prev_hash = %s, hash = %s "
            "WHERE run_id = %s AND version = %s",
            payload,
            prev_hash,
            new_hash,
            runs[0],
            version,
        )
    assert verify_cli(url).returncode == 0  # the chain alone cannot tell
    result = verify_cli(url, "--against", str(digest))
    assert result.returncode == 1 and "DIGEST MISMATCH" in result.stderr


def test_a_runs_last_event_deleted_passes_verify_but_not_the_digest(url: str) -> None:
    """Truncating a run leaves a shorter chain that checks out: only the digest knows."""
    with ledger.connect(url) as led:
        runs = some_runs(led)
        digest = take(led.store)
    tamper(url, "DELETE FROM ledger_events WHERE run_id = %s AND version = 6", runs[2])
    assert verify_cli(url).returncode == 0  # the chain alone cannot tell
    result = verify_cli(url, "--against", str(digest))
    assert result.returncode == 1 and "DIGEST MISMATCH" in result.stderr


def test_a_malformed_digest_is_bad_input(url: str) -> None:
    result = verify_cli(url, "--against", "not-a-digest")
    assert result.returncode == 2
    assert "not a ledger digest" in result.stderr


def test_digest_is_printed_for_keeping(url: str) -> None:
    with ledger.connect(url) as led:
        some_runs(led, 1)
    result = verify_cli(url, "--digest")
    assert result.returncode == 0
    line = result.stdout.strip().splitlines()[-1]
    assert Digest.parse(line).events == 6


def _covered_then_changed(url: str, change: str) -> tuple[Digest, list[str]]:
    """Take a digest, then change usr_1's run at version 3 as a superuser: its payload
    under the stored hash ("payload"), its payload with the hash column recomputed to
    match ("payload+hash"), or the stored hash column alone ("hash")."""
    with ledger.connect(url) as led:
        runs = some_runs(led)
        digest = take(led.store)
        stored = led.store.read_run(None, runs[1])[2]
    payload = stored.payload[:-1] + b" }"  # still valid JSON
    new_hash = recompute(msgspec.structs.replace(stored, payload=payload), stored.prev_hash)
    sets = {
        "payload": ("payload = %s", payload),
        "payload+hash": ("payload = %s, hash = %s", payload, new_hash),
        "hash": ("hash = %s", bytes(reversed(stored.hash))),
    }
    assignment, *values = sets[change]
    tamper(
        url,
        f"UPDATE ledger_events SET {assignment} WHERE run_id = %s AND version = 3",
        *values,
        runs[1],
    )
    return digest, runs


@pytest.mark.parametrize("change", ["payload", "payload+hash", "hash"])
def test_against_recomputes_covered_hashes_from_the_stored_bytes(url: str, change: str) -> None:
    """--against proves the covered events by their bytes, whatever the hash columns say,
    also when the chain check is narrowed to another user and cannot see the change."""
    digest, _ = _covered_then_changed(url, change)
    with ledger.connect(url) as led:
        assert not check(led.store, digest)
    result = verify_cli(url, "--user", "usr_0", "--against", str(digest), "--json")
    assert result.returncode == 1, result.stdout
    report = json.loads(result.stdout)
    assert report["problems"] == [] and report["digest_matches"] is False
    readable = verify_cli(url, "--user", "usr_0", "--against", str(digest))
    assert readable.returncode == 1 and "DIGEST MISMATCH" in readable.stderr


INTERRUPTED_VERIFY = """
import os, signal, sys, time
from ledger import digest
from cli.app import main
signal.signal(signal.SIGINT, signal.default_int_handler)
def mismatch(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, while the digest is being checked
    time.sleep(60)
digest.mismatch = mismatch
sys.argv = ["ledger", "--url", sys.argv[1], "verify", "--against", sys.argv[2], "--json"]
main()
"""


def test_ctrl_c_during_verify_is_one_line_and_non_zero(sqlite_url: str) -> None:
    with ledger.connect(sqlite_url) as led:
        some_runs(led, 1)
        digest = take(led.store)
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_VERIFY, sqlite_url, str(digest)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 130 and result.stdout == ""
    assert result.stderr.startswith("error: interrupted (Ctrl-C)"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

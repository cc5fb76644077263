"""Invariant 5: a byte changed behind the database's back is found and located."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

import ledger
from tests.pg import raw_connection
from tests.writers import turn


def verify_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "--url", url, "verify", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def two_runs(url: str) -> tuple[str, str]:
    with ledger.connect(url) as led:
        runs = []
        for user in ("usr_a", "usr_b"):
            run = led.tenant(user).start_run(session_id="s")
            turn(run, 1)
            runs.append(run.run_id)
        return runs[0], runs[1]


def tamper_postgres(url: str, sql: str, *params: object) -> None:
    """As superuser, with triggers disabled for the session (session_replication_role)."""
    with raw_connection(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(sql, params)  # type: ignore[arg-type]


def tamper_sqlite(url: str, sql: str, *params: object) -> None:
    """With the append-only triggers dropped."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


CHANGE_A_PAYLOAD_BYTE = {
    "postgres": "UPDATE ledger_events SET payload = overlay(payload placing 'X'::bytea "
    "from 12 for 1) WHERE run_id = %s AND version = 3",
    "sqlite": "UPDATE ledger_events SET payload = CAST(substr(payload, 1, 11) || 'X' "
    "|| substr(payload, 13) AS BLOB) WHERE run_id = ? AND version = 3",
}
CHANGE_THE_ENVELOPE = {
    "postgres": "UPDATE ledger_events SET type = 'run_failed' WHERE run_id = %s AND version = 4",
    "sqlite": "UPDATE ledger_events SET type = 'run_failed' WHERE run_id = ? AND version = 4",
}
DELETE_AN_EVENT = {
    "postgres": "DELETE FROM ledger_events WHERE run_id = %s AND version = 2",
    "sqlite": "DELETE FROM ledger_events WHERE run_id = ? AND version = 2",
}
DELETE_A_WHOLE_RUN = {  # every event; the run's registration stays
    "postgres": "DELETE FROM ledger_events WHERE run_id = %s",
    "sqlite": "DELETE FROM ledger_events WHERE run_id = ?",
}
_COLUMNS = "user_id, run_id, session_id, type, schema, occurred_at, recorded_at, payload, key_id"
INSERT_AN_EVENT = {  # a forged event after the head (version 7), chained to it, bad hash
    "postgres": f"INSERT INTO ledger_events ({_COLUMNS}, version, tx_id, prev_hash, hash)"
    f" SELECT {_COLUMNS}, 7, tx_id, hash, sha256(hash) FROM ledger_events"
    " WHERE run_id = %s AND version = 6",
    "sqlite": f"INSERT INTO ledger_events ({_COLUMNS}, version, position, tx_id, prev_hash, hash)"
    f" SELECT {_COLUMNS}, 7, position + 10000, tx_id, hash, randomblob(32) FROM ledger_events"
    " WHERE run_id = ? AND version = 6",
}
SWAP_TWO_EVENTS = {  # versions 2 and 3 trade places (contents and types)
    "postgres": "UPDATE ledger_events e SET type = o.type, payload = o.payload"
    " FROM ledger_events o WHERE e.run_id = %s AND o.run_id = e.run_id"
    " AND e.version IN (2, 3) AND o.version = 5 - e.version",
    "sqlite": "UPDATE ledger_events AS e SET type = o.type, payload = o.payload"
    " FROM ledger_events AS o WHERE e.run_id = ?1 AND o.run_id = ?1"
    " AND e.version IN (2, 3) AND o.version = 5 - e.version",
}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    ("statements", "version", "reason"),
    [
        (CHANGE_A_PAYLOAD_BYTE, 3, "altered"),
        (CHANGE_THE_ENVELOPE, 4, "altered"),
        (DELETE_AN_EVENT, 3, "version gap"),
        (INSERT_AN_EVENT, 7, "altered"),
        (SWAP_TWO_EVENTS, 2, "altered"),
        (DELETE_A_WHOLE_RUN, 1, "holds no events (all were deleted)"),
    ],
    ids=["payload-byte", "envelope", "deleted", "inserted", "swapped", "run-emptied"],
)
def test_tampering_is_detected_and_located(
    request: pytest.FixtureRequest,
    backend: str,
    statements: dict[str, str],
    version: int,
    reason: str,
) -> None:
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    bad_run, good_run = two_runs(url)
    assert verify_cli(url).returncode == 0
    (tamper_sqlite if backend == "sqlite" else tamper_postgres)(url, statements[backend], bad_run)

    result = verify_cli(url, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [(p["run_id"], p["version"]) for p in report["problems"]] == [(bad_run, version)]
    assert reason in report["problems"][0]["reason"]

    readable = verify_cli(url)
    assert readable.returncode == 1
    assert f"run {bad_run}" in readable.stderr and f"at version {version}" in readable.stderr
    assert verify_cli(url, "--run", good_run).returncode == 0
    with ledger.connect(url) as led:
        assert not led.auditor().verify(run_id=bad_run).ok
        # CONTRACT.md: IntegrityError, "verify failed; names the run and version".
        with pytest.raises(ledger.IntegrityError, match=f"at version {version}") as failed:
            led.auditor().verify().raise_for_problems()
        assert (failed.value.run_id, failed.value.version) == (bad_run, version)
        assert led.auditor().verify(run_id=good_run).raise_for_problems().ok


def test_a_row_whose_payload_type_was_changed_is_reported_not_crashed_on(sqlite_url: str) -> None:
    bad_run, _ = two_runs(sqlite_url)
    tamper_sqlite(
        sqlite_url,
        "UPDATE ledger_events SET payload = CAST(payload AS TEXT) WHERE run_id = ? AND version = 2",
        bad_run,
    )
    result = verify_cli(sqlite_url)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"run {bad_run}" in result.stderr and "at version 2" in result.stderr


# -- the stored rows against the runs registry ---------------------------------------

UNREGISTER_A_RUN = {  # the registry forgets the run; its events stay
    "postgres": "DELETE FROM ledger_runs WHERE run_id = %s",
    "sqlite": "DELETE FROM ledger_runs WHERE run_id = ?",
}
_ORPHAN_COLUMNS = "session_id, version, type, schema, occurred_at, recorded_at, payload, key_id"
INSERT_AN_UNREGISTERED_RUN = {  # a copy of the run's events under a run_id nobody registered
    "postgres": f"INSERT INTO ledger_events (user_id, run_id, {_ORPHAN_COLUMNS}, tx_id, prev_hash,"
    f" hash) SELECT user_id, run_id || '_forged', {_ORPHAN_COLUMNS}, tx_id, prev_hash, hash"
    " FROM ledger_events WHERE run_id = %s",
    "sqlite": f"INSERT INTO ledger_events (user_id, run_id, {_ORPHAN_COLUMNS}, position, tx_id,"
    f" prev_hash, hash) SELECT user_id, run_id || '_forged', {_ORPHAN_COLUMNS}, position + 10000,"
    " tx_id, prev_hash, hash FROM ledger_events WHERE run_id = ?",
}
INSERT_UNDER_ANOTHER_USER = {  # the registered run_id, but rows of a user it is not registered to
    "postgres": f"INSERT INTO ledger_events (user_id, run_id, {_ORPHAN_COLUMNS}, tx_id, prev_hash,"
    f" hash) SELECT 'usr_forger', run_id, {_ORPHAN_COLUMNS}, tx_id, prev_hash, hash"
    " FROM ledger_events WHERE run_id = %s",
    "sqlite": f"INSERT INTO ledger_events (user_id, run_id, {_ORPHAN_COLUMNS}, position, tx_id,"
    f" prev_hash, hash) SELECT 'usr_forger', run_id, {_ORPHAN_COLUMNS}, position + 10000,"
    " tx_id, prev_hash, hash FROM ledger_events WHERE run_id = ?",
}
MOVE_A_RUN_TO_ANOTHER_SESSION = {  # in the registry only
    "postgres": "UPDATE ledger_runs SET session_id = 'sess_elsewhere' WHERE run_id = %s",
    "sqlite": "UPDATE ledger_runs SET session_id = 'sess_elsewhere' WHERE run_id = ?",
}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    ("statements", "suffix", "user", "reason"),
    [
        (UNREGISTER_A_RUN, "", "usr_a", "not in the runs registry"),
        (INSERT_AN_UNREGISTERED_RUN, "_forged", "usr_a", "not in the runs registry"),
        (INSERT_UNDER_ANOTHER_USER, "", "usr_forger", "registered to another user"),
        (MOVE_A_RUN_TO_ANOTHER_SESSION, "", "usr_a", "registry says session"),
    ],
    ids=["unregistered", "forged-run", "other-user", "other-session"],
)
def test_rows_that_disagree_with_the_runs_registry_are_reported(
    request: pytest.FixtureRequest,
    backend: str,
    statements: dict[str, str],
    suffix: str,
    user: str,
    reason: str,
) -> None:
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    bad_run, good_run = two_runs(url)
    (tamper_sqlite if backend == "sqlite" else tamper_postgres)(url, statements[backend], bad_run)

    result = verify_cli(url, "--json")
    assert result.returncode == 1, result.stdout
    report = json.loads(result.stdout)
    assert [(p["run_id"], p["user_id"], p["version"]) for p in report["problems"]] == [
        (bad_run + suffix, user, 1)
    ]
    assert reason in report["problems"][0]["reason"]
    scoped = verify_cli(url, "--user", user)
    assert scoped.returncode == 1 and f"run {bad_run + suffix}" in scoped.stderr
    assert "Traceback" not in scoped.stderr
    assert verify_cli(url, "--run", good_run).returncode == 0
    with ledger.connect(url) as led:
        by_run = led.auditor().verify(run_id=bad_run + suffix)
    # A run alone is read as its registered owner's (a primary key range): rows another
    # user holds under its id are found by verify of every user or of that user (above).
    assert by_run.ok is (user == "usr_forger")

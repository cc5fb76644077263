"""Error strings and run metadata values are personal content (DESIGN.md invariant 7).

They echo what they were about ("no account for alice@example.com"), so they are
sealed with the user's key like message content: read back opened before ``forget``,
as ``[erased]`` after, never in a raw table. What is counted on them -- errors per tool
and per turn, a run's status, its cost -- survives the erasure, and events stored
before they were sealed (plain) still read as written.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

import ledger
from ledger import personal
from ledger.events import CATALOG, RunStarted
from ledger.personal import ERASED
from ledger.storable import MARKER
from projections.catalog import default_projectors
from projections.runner import ProjectorRunner
from tests.test_cli import ledger_cli
from tests.test_erasure import _tables_holding

SECRET = "alice@example.com"  # what an error string or a metadata value echoes
METADATA = {"customer": f"{SECRET} (acct 4417)", "tier": "pro", "note": None}
ERRORS = {
    "tool_returned": f"no account for {SECRET}",
    "retry_attempted": f"429 while looking up {SECRET}",
    "run_failed": f"gave up on {SECRET}",
}
#: What ``_read_back`` finds of ``_record_failures``: as written, and once erased.
WRITTEN = {
    "metadata": METADATA,
    "audited metadata": METADATA,
    **ERRORS,
    "conversation": ERRORS["tool_returned"],
    "replay": ERRORS["tool_returned"],
    "run metadata": ERRORS["run_failed"],
}
_ERASED_METADATA = {"customer": ERASED, "tier": ERASED, "note": None}  # keys stay
ERASED_NOW = dict.fromkeys(WRITTEN, ERASED) | {
    "metadata": _ERASED_METADATA,
    "audited metadata": _ERASED_METADATA,
}


def _record_failures(led: ledger.Ledger, user: str, session: str = "sess_1") -> str:
    """A run with metadata that retries, whose tool fails, and that fails; its id."""
    run = led.tenant(user).start_run(session_id=session, model="gpt-4o", metadata=METADATA)
    with run.turn():
        run.message_received(content="find my account")
        run.model_responded(
            model="gpt-4o",
            tool_calls=[{"id": "c1", "name": "crm", "arguments": {"q": "me"}}],
            usage={"input_tokens": 900, "output_tokens": 30},
        )
        run.retry_attempted(what="tool", attempt=2, error=ERRORS["retry_attempted"], delay_ms=50)
        run.tool_called(call_id="c1", name="crm", input={"q": "me"})
        run.tool_returned(call_id="c1", name="crm", error=ERRORS["tool_returned"], duration_ms=30)
    run.fail(error=ERRORS["run_failed"])
    return run.run_id


def _read_back(led: ledger.Ledger, user: str, run_id: str) -> dict[str, Any]:
    """Every error text and the metadata, as each reader returns them."""
    t = led.tenant(user)
    events = t.events(run_id)
    by_type = {e.type: e.data for e in events}
    audited = {e.type: e.data for e in led.auditor().events(run_id)}
    session = t.conversation(events[0].session_id)
    (entry,) = [m for m in session.messages if m.get("role") == "tool"]
    (replayed,) = [m for m in t.replay(run_id).messages if m.get("role") == "tool"]
    return {
        "metadata": by_type["run_started"]["metadata"],
        "audited metadata": audited["run_started"]["metadata"],
        **{type_: by_type[type_]["error"] for type_ in ERRORS},
        "conversation": entry["error"],
        "replay": replayed["error"],
        "run metadata": t.run_metadata(run_id).error,
    }


def _accounting(led: ledger.Ledger, user: str, run_id: str) -> dict[str, Any]:
    """The run's metadata but its error text: counts, cost, status, per turn."""
    t = led.tenant(user)
    run = t.run_metadata(run_id)
    return {
        "run": run.model_dump(mode="json", exclude={"error"}),
        "status": t.replay(run_id).status,
        "session": t.conversation(run.session_id).run_metadata,
    }


@pytest.fixture
def led(store_url: str) -> Any:
    with ledger.connect(store_url, encrypt=True) as opened:
        yield opened


def test_errors_and_metadata_read_back_and_are_erased_with_the_key(led: ledger.Ledger) -> None:
    run_id = _record_failures(led, "usr_a")
    other = _record_failures(led, "usr_b")
    assert _read_back(led, "usr_a", run_id) == WRITTEN
    accounting = _accounting(led, "usr_a", run_id)
    assert accounting["status"] == "failed"
    assert (
        accounting["run"]["tool_errors"] == 1 and accounting["run"]["tools"]["crm"]["errors"] == 1
    )
    assert [turn["errors"] for turn in accounting["run"]["turns"]] == [2]  # the tool, the run

    led.forget("usr_a")

    assert _read_back(led, "usr_a", run_id) == ERASED_NOW
    assert _accounting(led, "usr_a", run_id) == accounting  # accounting survives
    assert led.auditor().verify().problems == []
    assert _read_back(led, "usr_b", other) == WRITTEN


def test_stored_errors_and_metadata_values_are_tokens_that_decode_as_their_struct(
    led: ledger.Ledger,
) -> None:
    run_id = _record_failures(led, "usr_a")
    stored = {r.type: r for r in led.store.read_run("usr_a", run_id)}
    started = stored["run_started"]
    payload = CATALOG.decode("run_started", started.schema, started.payload)
    assert isinstance(payload, RunStarted) and payload.metadata is not None
    metadata = payload.metadata
    assert list(metadata) == list(METADATA) and metadata["note"] is None  # keys stay
    tokens = [metadata["customer"], metadata["tier"]]
    for type_ in ERRORS:  # each still decodes as its catalog Struct
        record = stored[type_]
        tokens.append(
            msgspec.structs.asdict(CATALOG.decode(type_, record.schema, record.payload))["error"]
        )
        assert record.key_id == started.key_id is not None
    assert all(token.startswith(MARKER) for token in tokens)


def test_a_metadata_value_or_error_that_starts_like_a_token_is_refused(led: ledger.Ledger) -> None:
    forged = MARKER + "v2/k_x/AAAA"
    t = led.tenant("usr_a")
    with pytest.raises(ledger.InvalidEvent, match=r"run_started\.metadata.*seal marker"):
        t.start_run(session_id="sess_1", metadata={"k": forged})
    run = t.start_run(session_id="sess_1")
    with pytest.raises(ledger.InvalidEvent, match=r"run_failed\.error.*seal marker"):
        run.fail(error=forged)
    assert run.version == 1


# -- raw tables: the plaintext is never there --------------------------------------------


def _sqlite_tables_holding(path: Path, needle: str) -> list[str]:
    """Columns of any table of the SQLite file holding ``needle`` (as text or bytes)."""
    found = []
    with sqlite3.connect(path) as conn:
        tables = [
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            for column in [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]:
                probe = (
                    f'SELECT count(*) FROM "{table}" WHERE instr(CAST("{column}" AS BLOB), ?) > 0'
                )
                if conn.execute(probe, (needle.encode(),)).fetchone()[0]:
                    found.append(f"{table}.{column}")
    return found


def _caught_up(led: ledger.Ledger) -> None:
    ProjectorRunner(led, default_projectors()).catch_up()


def test_no_postgres_table_holds_an_error_or_metadata_value(pg_url: str) -> None:
    with ledger.connect(pg_url) as led:
        run_id = _record_failures(led, "usr_a")
        _caught_up(led)  # the read models hold the errors too
        assert "ledger_read_models.user_id" in _tables_holding(pg_url, "usr_a")  # the probe works
        assert _tables_holding(pg_url, SECRET) == []
        accounting = _accounting(led, "usr_a", run_id)
        led.forget("usr_a")
        _caught_up(led)
        assert _tables_holding(pg_url, SECRET) == []
        assert _accounting(led, "usr_a", run_id) == accounting


def test_no_sqlite_table_holds_an_error_or_metadata_value(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with ledger.connect(f"sqlite:///{path}", encrypt=True) as led:
        run_id = _record_failures(led, "usr_a")
        _caught_up(led)
        assert "ledger_events.user_id" in _sqlite_tables_holding(path, "usr_a")
        assert _sqlite_tables_holding(path, SECRET) == []
        assert _read_back(led, "usr_a", run_id)["conversation"] == ERRORS["tool_returned"]


def test_errors_and_metadata_stored_before_they_were_sealed_read_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store with events sealed the way they were before errors and metadata were
    (content sealed, those plain) and events sealed today: the plain ones read as they
    are, the sealed ones open, and the erasure shreds only what was sealed."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with ledger.connect(url, encrypt=True) as led:
        sealed_before = {
            type_: kept
            for type_, paths in personal._PATHS.items()
            if (kept := tuple(p for p in paths if p.path not in ("error", "metadata{}")))
        }
        with monkeypatch.context() as before:
            before.setattr(personal, "_PATHS", sealed_before)
            old = _record_failures(led, "usr_a", "sess_old")
        new = _record_failures(led, "usr_a", "sess_new")
        stored = {(r.run_id, r.type): r for r in led.store.read_run("usr_a", old)}
        assert stored[old, "run_failed"].key_id is None  # plain, as before
        assert stored[old, "message_received"].key_id is not None  # content was sealed
        assert [_read_back(led, "usr_a", r) for r in (old, new)] == [WRITTEN, WRITTEN]
        before_forget = [_accounting(led, "usr_a", r)["run"] for r in (old, new)]

        led.forget("usr_a")

        assert [_read_back(led, "usr_a", r) for r in (old, new)] == [WRITTEN, ERASED_NOW]
        assert led.tenant("usr_a").events(old)[1].data["content"] == ERASED
        assert [_accounting(led, "usr_a", r)["run"] for r in (old, new)] == before_forget


def test_jsonl_appends_seal_errors_and_metadata(pg_url: str) -> None:
    def line(type_: str, data: dict[str, Any]) -> str:
        return json.dumps(
            {
                "user_id": "usr_a",
                "session_id": "sess_1",
                "run_id": "run_jsonl",
                "type": type_,
                "occurred_at": "2025-03-15T10:22:31Z",
                "data": data,
            }
        )

    lines = [
        line("run_started", {"metadata": METADATA}),
        line("tool_returned", {"call_id": "c1", "name": "crm", "error": ERRORS["tool_returned"]}),
        line("run_failed", {"error": ERRORS["run_failed"]}),
    ]
    done = ledger_cli(pg_url, "append", "-", stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    assert _tables_holding(pg_url, SECRET) == []
    with ledger.connect(pg_url) as led:
        events = led.tenant("usr_a").events("run_jsonl")
        assert [e.data.get("metadata") or e.data.get("error") for e in events] == [
            METADATA,
            ERRORS["tool_returned"],
            ERRORS["run_failed"],
        ]
        assert led.tenant("usr_a").run_metadata("run_jsonl").tool_errors == 1

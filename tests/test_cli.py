"""The ``ledger`` command as users run it: real subprocesses on real stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ledger


def ledger_cli(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("LEDGER_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "cli", "--url", url, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def event_line(run_id: str, content: str = "hi", user: str = "usr_a") -> str:
    return json.dumps(
        {
            "user_id": user,
            "session_id": "sess_1",
            "run_id": run_id,
            "type": "message_received",
            "occurred_at": "2025-03-15T10:22:31Z",
            "data": {"role": "user", "content": content},
        }
    )


def test_init_prepares_the_read_models_owned_by_ledger_owner(pg_url: str) -> None:
    """An admin's ``ledger init`` leaves nothing for runner logins to create or own."""
    from tests.pg import raw_connection

    assert ledger_cli(pg_url, "init").returncode == 0
    with raw_connection(pg_url, autocommit=True) as conn:
        owners = conn.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
            " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
            " AND c.relname LIKE 'ledger%' ORDER BY 1"
        ).fetchall()
    assert ("ledger_read_models", "ledger_owner") in owners
    assert {owner for _, owner in owners} == {"ledger_owner"}


def test_init_demo_and_read_back(url: str) -> None:
    assert ledger_cli(url, "init").returncode == 0
    assert ledger_cli(url, "init").returncode == 0  # idempotent
    demo = ledger_cli(url, "demo")
    assert demo.returncode == 0, demo.stderr
    assert "tool_returned" in demo.stdout
    runs = json.loads(ledger_cli(url, "runs", "--json").stdout)
    assert [r["user_id"] for r in runs] == ["usr_demo"]
    events = json.loads(ledger_cli(url, "events", runs[0]["run_id"], "--json").stdout)
    assert events[0]["type"] == "run_started"
    assert events[0]["occurred_at"].endswith("Z")
    assert ledger_cli(url, "verify").returncode == 0


def test_append_from_a_file_and_from_stdin(url: str, tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(event_line("run_1") + "\n" + event_line("run_1", "again") + "\n")
    done = ledger_cli(url, "append", str(source), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"events": 2, "runs": {"run_1": 2}}
    piped = ledger_cli(url, "append", "-", stdin=event_line("run_2"))
    assert piped.returncode == 0 and "appended 1 events to 1 runs" in piped.stdout
    listed = ledger_cli(url, "runs", "--user", "usr_a", "--session", "sess_1")
    assert "run_1" in listed.stdout and "run_2" in listed.stdout


def test_a_bad_line_exits_2_with_one_clear_line_and_writes_nothing(url: str) -> None:
    body = "\n".join([event_line("run_1"), event_line("run_1"), "{not json"])
    result = ledger_cli(url, "append", "-", stdin=body)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: line 3: malformed JSON")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert json.loads(ledger_cli(url, "runs", "--json").stdout) == []


def test_appending_to_a_run_that_ended_exits_2_and_writes_nothing(url: str) -> None:
    ended = json.loads(event_line("run_1"))
    ended.update(type="run_completed", data={"output": "done"})
    assert (
        ledger_cli(
            url, "append", "-", stdin=f"{event_line('run_1')}\n{json.dumps(ended)}"
        ).returncode
        == 0
    )
    result = ledger_cli(url, "append", "-", stdin=event_line("run_1", "one more thing"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: line 1: run 'run_1' has ended (run_completed at version 2); a run records "
        "nothing after it ends, so give these events a new run_id"
    )
    events = json.loads(ledger_cli(url, "events", "run_1", "--user", "usr_a", "--json").stdout)
    assert [e["type"] for e in events] == ["message_received", "run_completed"]


def test_append_reads_jsonl_as_utf_8_bytes_split_at_newlines_only(url: str, tmp_path: Path) -> None:
    """What JSON producers write: a byte order mark, CRLF line ends, and U+2028, U+2029
    and U+0085 raw inside strings (JavaScript's JSON.stringify leaves them unescaped),
    which are not line breaks in JSONL."""
    content = "one\u2028two\u2029three\x85four"
    body = json.dumps(json.loads(event_line("run_1", content)), ensure_ascii=False)
    assert "\u2028" in body  # raw in the file, not escaped
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + (body + "\r\n").encode() * 2)
    done = ledger_cli(url, "append", str(source))
    assert done.returncode == 0, done.stderr
    events = json.loads(ledger_cli(url, "events", "run_1", "--json").stdout)
    assert [e["data"]["content"] for e in events] == [content, content]


def test_bytes_that_are_not_utf_8_are_named_and_nothing_is_written(
    url: str, tmp_path: Path
) -> None:
    source = tmp_path / "events.jsonl"
    latin_1 = json.dumps(json.loads(event_line("run_2", "caf\xe9")), ensure_ascii=False)
    source.write_bytes(event_line("run_1").encode() + b"\n" + latin_1.encode("latin-1"))
    result = ledger_cli(url, "append", str(source))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: line 2: not valid UTF-8 (byte 0xe9 at")
    assert "Traceback" not in result.stderr
    assert json.loads(ledger_cli(url, "runs", "--json").stdout) == []


def test_unknown_run_exits_1_and_hides_other_tenants(url: str) -> None:
    ledger_cli(url, "append", "-", stdin=event_line("run_a", user="usr_a"))
    missing = ledger_cli(url, "events", "run_nope")
    assert missing.returncode == 1 and "not found" in missing.stderr
    hidden = ledger_cli(url, "events", "run_a", "--user", "usr_b")
    assert hidden.returncode == 1 and "not found" in hidden.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("events", "run_a", "--user", ""),
        ("runs", "--user", ""),
        ("runs", "--session", " "),
        ("verify", "--user", ""),
        ("verify", "--run", ""),
        ("replay", "run_a", "--user", ""),
        ("audit", "export", "--user", "", "--out", "unused"),
    ],
)
def test_an_empty_id_option_is_refused_never_read_as_every_tenant(
    sqlite_url: str, args: tuple[str, ...]
) -> None:
    """``--user "$USER_ID"`` with the variable unset must not list every tenant's data."""
    ledger_cli(sqlite_url, "append", "-", stdin=event_line("run_a", user="usr_a"))
    result = ledger_cli(sqlite_url, *args)
    option = args[args.index("") - 1] if "" in args else "--session"
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip() == f"error: {option} must not be empty"


def test_a_bad_setting_in_the_environment_exits_2_with_one_line(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_MAX_EVENT_BYTES", "8MB")
    result = ledger_cli(url, "runs")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: $LEDGER_MAX_EVENT_BYTES must be a whole number, got '8MB'"
    )


@pytest.mark.parametrize(
    ("bad_url", "message"),
    [
        ("mysql://db/ledger", "unsupported ledger URL 'mysql://db/ledger'"),
        ("sqlite:///", "bad SQLite ledger URL 'sqlite:///'"),
        ("sqlite:///x.db?timeout=soon", "bad timeout 'soon'"),
        ("postgresql://127.0.0.1/postgres?schema=my-ledger", "invalid schema name 'my-ledger'"),
        ("postgresql://127.0.0.1/postgres?pool_timeout=-1", "bad pool_timeout '-1'"),
        ("postgresql://root@[bad/postgres", "malformed Postgres URL"),
        ("postgresql://root@127.0.0.1:notaport/postgres", "malformed Postgres URL"),
    ],
)
def test_a_malformed_url_is_bad_usage(bad_url: str, message: str, tmp_path: Path) -> None:
    """Exit 2 and one line, as for any bad usage (not 1, as for a server that is down),
    before any connection is tried."""
    env = {**os.environ, "LEDGER_URL": bad_url}
    for args in (["--url", bad_url, "runs"], ["runs"]):  # the option, and $LEDGER_URL
        result = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.startswith(f"error: {message}")
        assert len(result.stderr.strip().splitlines()) == 1


def test_an_empty_url_is_bad_usage_not_the_default_file(tmp_path: Path) -> None:
    """``--url "$UNSET"`` must not quietly write to ./ledger.db instead of the store
    meant (an empty $LEDGER_URL is unset, as for any variable: the default applies)."""
    result = subprocess.run(
        [sys.executable, "-m", "cli", "--url", "", "init"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: the ledger URL is empty")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ledger.InvalidSetting, match="URL is empty"):
        ledger.connect("  ")


#: Bad input to every command (``{run}``: usr_a's run, ``{file}``: a regular file,
#: ``{new}``: a path nothing is at): (arguments, the exit code).
BAD_INPUT = {
    "events of no run": (["events", "run_nope"], 1),
    "events of another tenant's run": (["events", "{run}", "--user", "usr_b"], 1),
    "replay of no run": (["replay", "run_nope"], 1),
    "replay of another tenant's run": (["replay", "{run}", "--user", "usr_b"], 1),
    "replay at no time": (["replay", "{run}", "--at-time", "yesterday"], 2),
    "replay at a time past the end of time": (
        ["replay", "{run}", "--at-time", "0001-01-01T00:00:00+14:00"],
        2,
    ),
    "fork of another tenant's run": (["fork", "{run}", "--at", "1", "--user", "usr_b"], 1),
    "fork past the run": (["fork", "{run}", "--at", "99", "--user", "usr_a"], 2),
    "verify of no run": (["verify", "--run", "run_nope"], 1),
    "verify of a file as an export": (["verify", "--export", "{file}"], 2),
    "verify of no export": (["verify", "--export", "{new}"], 2),
    "state of no session": (["state", "sess_nope", "--user", "usr_a"], 1),
    "memory of a blank user": (["memory", "--user", " "], 2),
    "export of nobody": (["audit", "export", "--user", "usr_nobody", "--out", "{new}"], 1),
    "export into a file": (["audit", "export", "--user", "usr_a", "--out", "{file}"], 2),
    "forget nobody": (["forget", "--user", "usr_nobody"], 1),
    "rebuild of no read model": (["projections", "rebuild", "nope"], 2),
    "append of another tenant's run": (["append", "{file}"], 2),
    "a directory that is not there": (["--url", "sqlite:///{new}/ledger.db", "runs"], 1),
    "a malformed Postgres URL": (["--url", "postgresql://x@[::1/db", "init"], 2),
    # Bad usage the parser finds is one line too (CONTRACT.md), not a usage box.
    "state without --user": (["state", "sess_1"], 2),
    "memory without --user": (["memory"], 2),
    "an unknown option": (["runs", "--no-such-option"], 2),
    "a version that is not a number": (["replay", "{run}", "--at", "x"], 2),
    "a negative --last": (["state", "sess_1", "--user", "usr_a", "--last", "-1"], 2),
    "no such command": (["no-such-command"], 2),
    "export without --out": (["audit", "export", "--user", "usr_a"], 2),
}


@pytest.mark.parametrize(("args", "code"), BAD_INPUT.values(), ids=list(BAD_INPUT))
def test_bad_input_is_one_line_and_a_non_zero_exit(
    args: list[str], code: int, sqlite_url: str, tmp_path: Path
) -> None:
    with ledger.connect(sqlite_url) as led:
        run = led.tenant("usr_a").start_run(session_id="sess_1").run_id
    file = tmp_path / "input.jsonl"
    file.write_text(event_line(run, user="usr_b") + "\n")
    values = {"run": run, "file": str(file), "new": str(tmp_path / "new")}
    result = ledger_cli(sqlite_url, *(a.format(**values) for a in args))
    assert "Traceback" not in result.stderr
    assert (result.returncode, result.stdout) == (code, ""), result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert not (tmp_path / "new").exists()


def test_a_file_system_error_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """What the disk refuses (full, read-only, gone) mid-command: the one line of any
    error, exit 1. (Simulated in the command's own process: as root, nothing refuses.)"""
    script = (
        "import sys, ledger\n"
        "from cli.app import main\n"
        "def refused(*args, **kwargs):\n"
        "    raise OSError(28, 'No space left on device')\n"
        "ledger.connect = refused\n"
        "sys.argv = ['ledger', 'runs']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: [Errno 28] No space left on device\n"


def test_a_login_that_may_create_nothing_is_told_so_at_init(pg_url: str) -> None:
    """A role without CREATE (on the database, or the schema): one line, exit 1."""
    from tests.pg import login_role

    with login_role(pg_url, None) as login:
        for command in ("init", "runs"):
            result = ledger_cli(login, command)
            assert result.returncode == 1 and "Traceback" not in result.stderr
            [line] = result.stderr.strip().splitlines()
            assert line.startswith("error: the ledger schema ") and "has no ledger yet" in line
            assert (
                "(permission denied for " in line and "run `ledger init` once as an admin" in line
            )


def test_a_missing_file_and_bad_usage_exit_2(url: str) -> None:
    assert ledger_cli(url, "append", "/no/such/file.jsonl").returncode == 2
    assert ledger_cli(url, "no-such-command").returncode == 2


def test_debug_shows_the_traceback(url: str) -> None:
    result = ledger_cli(url, "--debug", "events", "run_nope")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_what_agents_stored_is_printed_as_text_never_as_markup(sqlite_url: str) -> None:
    """Brackets are common in model output ("[/INST]", "[docs](url)"); the readable
    output shows them as stored (rich markup swallowed them, or crashed on "[/bold]")."""
    with ledger.connect(sqlite_url) as led:
        t = led.tenant("usr_[b]")
        run = t.start_run(session_id="sess_[/x]", run_id="run_[red]x", model="[bold]m")
        with run.turn():
            run.message_received(content="see [docs](url) [/INST]")
            run.model_responded(content="[/red] answer", tool_calls=[{"id": "c", "name": "[i]t"}])
            run.tool_called(call_id="c", name="[i]t", input={"q": "[/]"})
        run.memory_written(namespace="[ns]", key="[/k]", value="v")
        run.fail(error="[/bold] boom")
    shown = {
        "events": ledger_cli(sqlite_url, "events", "run_[red]x"),
        "runs": ledger_cli(sqlite_url, "runs"),
        "state": ledger_cli(sqlite_url, "state", "sess_[/x]", "--user", "usr_[b]"),
        "memory": ledger_cli(sqlite_url, "memory", "--user", "usr_[b]"),
        "replay": ledger_cli(sqlite_url, "replay", "run_[red]x"),
        "diff": ledger_cli(sqlite_url, "replay", "run_[red]x", "--from", "1", "--to", "3"),
    }
    for command, result in shown.items():
        assert result.returncode == 0 and result.stderr == "", (command, result.stderr)
    assert "see [docs](url) [/INST]" in shown["events"].stdout
    assert "[/bold] boom" in shown["events"].stdout
    assert "run_[red]x" in shown["runs"].stdout and "usr_[b]" in shown["runs"].stdout
    assert "assistant [/red] answer → [i]t" in shown["state"].stdout
    assert "[ns]" in shown["memory"].stdout and "[/k]" in shown["memory"].stdout
    assert "[i]t" in shown["replay"].stdout and "[/INST]" in shown["diff"].stdout
    assert shown["diff"].stdout.startswith("run_[red]x: version 1 → 3")


def test_tables_are_never_cut_to_the_terminal_or_a_pipe(sqlite_url: str) -> None:
    """A run id is copied from ``ledger runs`` into the next command: a pipe (80 columns
    to rich) or a narrow terminal must get it whole, not "run_01a2…"."""
    with ledger.connect(sqlite_url) as led:
        run = led.tenant("usr_with_a_rather_long_id").start_run(session_id="sess_long_one")
        run.memory_written(namespace="preferences", key="tone_of_voice", value="brief")
        run.complete()
    env = {**os.environ, "COLUMNS": "40"}
    listing = subprocess.run(
        [sys.executable, "-m", "cli", "--url", sqlite_url, "runs"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert listing.returncode == 0 and "…" not in listing.stdout
    row = listing.stdout.splitlines()[1].split()
    assert row[:3] == [run.run_id, "usr_with_a_rather_long_id", "sess_long_one"]
    narrowed = ledger_cli(sqlite_url, "runs", "--user", "usr_with_a_rather_long_id")
    assert narrowed.stdout.split()[:2] == ["run_id", "session_id"]  # no column of one value


def test_line_output_is_not_wrapped_when_piped(sqlite_url: str) -> None:
    """Lines scripts read (``grep``, ``cut``) stay whole past 80 columns."""
    with ledger.connect(sqlite_url) as led:
        run = led.tenant("usr_with_a_rather_long_id").start_run(session_id="sess_long_one")
        run.message_received(content="a message long enough to go past eighty columns " * 2)
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    fork = ["fork", run.run_id, "--at", "2", "--user", "usr_with_a_rather_long_id"]
    forked = subprocess.run(
        [sys.executable, "-m", "cli", "--url", sqlite_url, *fork],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert forked.returncode == 0, forked.stderr
    assert len(forked.stdout.strip().splitlines()) == 1
    assert forked.stdout.startswith(f"forked {run.run_id} at version 2 into run_")


def test_psycopg_warning_after_an_aborted_pipeline_is_not_a_second_error_line() -> None:
    """psycopg warns when it cannot close a pipeline an error aborted (seen once after
    a refused SET ROLE, timing-dependent): the CLI's one error line already says it all."""
    import logging

    from cli.app import _quiet_pipeline_aftermath

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("psycopg", logging.WARNING, __file__, 1, msg, None, None)

    assert not _quiet_pipeline_aftermath(record("error ignored terminating %r: %s"))
    assert _quiet_pipeline_aftermath(record("error connecting in %r: %s"))

"""``ledger audit export`` and ``ledger verify --export``: an export proves itself offline.

Real subprocesses of the CLI on real stores, then edits to the exported files of the
kinds a careless or dishonest hand makes: each must be found, and located.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

import ledger
import ledger.export as export_module
from ledger.chain import recompute
from ledger.export import (
    EVENTS_FILE,
    MANIFEST_FILE,
    ExportedEvent,
    ExportTargetError,
    export_user,
    verify_export,
)
from tests.test_cli import ledger_cli
from tests.writers import turn


def offline_verify(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ledger verify --export`` with a --url no database answers on: it must not need one."""
    return ledger_cli(
        "postgresql://nobody@127.0.0.1:1/none", "verify", "--export", str(directory), *args
    )


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def record_runs(url: str, user: str, runs: int = 2, turns: int = 2) -> list[str]:
    """``runs`` runs of ``user``, each run_started + ``turns`` turns (11 events for 2)."""
    with ledger.connect(url) as led:
        made = []
        for i in range(runs):
            run = led.tenant(user).start_run(session_id=f"sess_{user}_{i}")
            for n in range(turns):
                turn(run, n)
            made.append(run.run_id)
        return made


def export(url: str, user: str, out: Path) -> subprocess.CompletedProcess[str]:
    result = ledger_cli(url, "audit", "export", "--user", user, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return result


def lines(directory: Path) -> list[dict[str, Any]]:
    text = (directory / EVENTS_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def write_lines(directory: Path, rows: list[dict[str, Any]]) -> None:
    body = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows)
    (directory / EVENTS_FILE).write_text(body, encoding="utf-8")


def problems(result: subprocess.CompletedProcess[str]) -> list[tuple[str, int]]:
    return [(p["run_id"], p["version"]) for p in json.loads(result.stdout)["problems"]]


def test_an_export_verifies_offline(url: str, tmp_path: Path) -> None:
    runs = record_runs(url, "usr_a")
    record_runs(url, "usr_b", runs=1)
    out = tmp_path / "export"
    done = export(url, "usr_a", out)
    assert "exported 22 events of 2 runs of user usr_a" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == [EVENTS_FILE, MANIFEST_FILE]

    rows = lines(out)
    assert [(r["run_id"], r["version"]) for r in rows] == [
        (run, v) for run in runs for v in range(1, 12)
    ]
    first = rows[1]
    assert first["type"] == "message_received"
    assert first["data"]["role"] == "user" and isinstance(first["data"]["content"], str)
    assert "content" in json.loads(base64.b64decode(first["payload"]))  # the stored bytes
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["user_id"] == "usr_a"
    assert manifest["counts"] == {"runs": 2, "events": 22}
    assert [(r["run_id"], r["events"], r["head_version"]) for r in manifest["runs"]] == [
        (run, 11, 11) for run in runs
    ]
    assert manifest["runs"][-1]["head_hash"] == rows[-1]["hash"]

    checked = offline_verify(out)
    assert checked.returncode == 0, checked.stderr
    assert "2 runs, 22 events, offline: ok" in checked.stdout
    report = json.loads(offline_verify(out, "--json").stdout)
    assert (
        report["ok"] is True and report["events"] == 22 and report["digest"] == manifest["digest"]
    )
    kept = offline_verify(out, "--against", manifest["digest"])
    assert kept.returncode == 0 and "digest matches" in kept.stdout


def test_a_changed_payload_byte_is_found_and_located(url: str, tmp_path: Path) -> None:
    runs = record_runs(url, "usr_a")
    out = tmp_path / "export"
    export(url, "usr_a", out)
    rows = lines(out)
    target = next(r for r in rows if r["run_id"] == runs[1] and r["version"] == 4)
    payload = bytearray(base64.b64decode(target["payload"]))
    payload[20] ^= 0x01
    target["payload"] = base64.b64encode(bytes(payload)).decode()
    write_lines(out, rows)

    result = offline_verify(out, "--json")
    assert result.returncode == 1
    assert problems(result) == [(runs[1], 4)]
    assert "altered" in json.loads(result.stdout)["problems"][0]["reason"]
    readable = offline_verify(out)
    assert readable.returncode == 1
    assert f"run {runs[1]}" in readable.stderr and "at version 4" in readable.stderr


def drop_a_middle_line(out: Path, runs: list[str]) -> list[tuple[str, int]]:
    rows = lines(out)
    write_lines(out, [r for r in rows if not (r["run_id"] == runs[0] and r["version"] == 5)])
    return [(runs[0], 6)]


def drop_the_last_line(out: Path, runs: list[str]) -> list[tuple[str, int]]:
    write_lines(out, lines(out)[:-1])
    return [(runs[1], 11)]


def swap_two_lines_of_a_run(out: Path, runs: list[str]) -> list[tuple[str, int]]:
    rows = lines(out)
    rows[2], rows[3] = rows[3], rows[2]  # versions 3 and 4 of the first run
    write_lines(out, rows)
    return [(runs[0], 4)]


def swap_lines_of_two_runs(out: Path, runs: list[str]) -> list[tuple[str, int]]:
    rows = lines(out)
    rows[4], rows[15] = rows[15], rows[4]  # version 5 of each run
    write_lines(out, rows)
    # In file order: the first run jumps from 4 to 6, the second starts at 5.
    return [(runs[0], 6), (runs[1], 5)]


def add_a_foreign_line(out: Path, runs: list[str]) -> list[tuple[str, int]]:
    rows = lines(out)
    rows.insert(3, {**rows[3], "version": 99})
    write_lines(out, rows)
    return [(runs[0], 99)]


@pytest.mark.parametrize(
    "edit",
    [
        drop_a_middle_line,
        drop_the_last_line,
        swap_two_lines_of_a_run,
        swap_lines_of_two_runs,
        add_a_foreign_line,
    ],
)
def test_removed_reordered_and_added_lines_are_found(edit: Any, url: str, tmp_path: Path) -> None:
    runs = record_runs(url, "usr_a")
    out = tmp_path / "export"
    export(url, "usr_a", out)
    expected = edit(out, runs)
    result = offline_verify(out, "--json")
    assert result.returncode == 1, result.stdout
    assert problems(result) == expected
    assert any("sha256" in issue for issue in json.loads(result.stdout)["issues"])


def test_swapped_lines_are_named_by_their_line_numbers(sqlite_url: str, tmp_path: Path) -> None:
    runs = record_runs(sqlite_url, "usr_a")
    out = tmp_path / "export"
    export(sqlite_url, "usr_a", out)
    swap_two_lines_of_a_run(out, runs)  # lines 3 and 4: versions 3 and 4 of the first run
    result = offline_verify(out)
    assert result.returncode == 1
    broken = [line for line in result.stderr.splitlines() if runs[0] in line]
    assert len(broken) == 1 and "line 3: " in broken[0] and "on line 4" in broken[0], broken
    [problem] = verify_export(out).problems
    assert problem.reason.startswith("line 3: version gap: expected version 3, found 4")
    assert problem.reason.endswith("version 3 is on line 4 (the lines are out of order)")


def manifest_edits() -> dict[str, Any]:
    def events(m: dict[str, Any]) -> None:
        m["counts"]["events"] -= 1

    def runs(m: dict[str, Any]) -> None:
        m["runs"].pop()
        m["counts"]["runs"] -= 1

    def head(m: dict[str, Any]) -> None:
        m["runs"][0]["head_hash"] = "00" * 32

    def head_version(m: dict[str, Any]) -> None:
        m["runs"][0]["head_version"] += 1
        m["runs"][0]["events"] += 1

    def sha(m: dict[str, Any]) -> None:
        m["events_sha256"] = "ab" * 32

    def digest(m: dict[str, Any]) -> None:
        m["digest"] = m["digest"][:-1] + ("0" if m["digest"][-1] != "0" else "1")

    def user(m: dict[str, Any]) -> None:
        m["user_id"] = "usr_b"

    return {f.__name__: f for f in (events, runs, head, head_version, sha, digest, user)}


@pytest.mark.parametrize("edit", manifest_edits().values(), ids=list(manifest_edits()))
def test_an_edited_manifest_is_found(edit: Any, sqlite_url: str, tmp_path: Path) -> None:
    record_runs(sqlite_url, "usr_a")
    out = tmp_path / "export"
    export(sqlite_url, "usr_a", out)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    edit(manifest)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    result = offline_verify(out, "--json")
    assert result.returncode == 1, result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is False and (report["problems"] or report["issues"])


def test_a_consistent_rewrite_passes_alone_but_not_against_the_kept_digest(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A forger who rewrites a run's chain and the manifest fools the file; not a digest
    kept elsewhere."""
    record_runs(sqlite_url, "usr_a", runs=1)
    out = tmp_path / "export"
    export(sqlite_url, "usr_a", out)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    kept = manifest["digest"]

    decoder = msgspec.json.Decoder(ExportedEvent)
    rows = lines(out)
    prev = bytes(32)
    for row in rows:
        record = decoder.decode(json.dumps(row)).record()
        payload = record.payload + b" " if record.version == 2 else record.payload
        forged = msgspec.structs.replace(record, payload=payload, prev_hash=prev)
        prev = recompute(forged, prev)
        row.update(
            payload=base64.b64encode(payload).decode(),
            prev_hash=forged.prev_hash.hex(),
            hash=prev.hex(),
        )
    write_lines(out, rows)
    report = verify_export(out)  # what the manifest would need to say now
    manifest["runs"][0]["head_hash"] = prev.hex()
    manifest["events_sha256"] = hashlib.sha256((out / EVENTS_FILE).read_bytes()).hexdigest()
    manifest["digest"] = report.digest
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))

    assert offline_verify(out).returncode == 0  # the files alone cannot tell
    caught = offline_verify(out, "--against", kept)
    assert caught.returncode == 1
    assert "digest you kept" in caught.stderr
    assert verify_export(out, against=kept).issues[-1].startswith("the digest of the exported")
    with pytest.raises(ledger.IntegrityError, match="the digest of the exported"):
        verify_export(out, against=kept).raise_for_problems()


def test_a_non_empty_directory_is_refused_and_nothing_is_written(url: str, tmp_path: Path) -> None:
    record_runs(url, "usr_a", runs=1)
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = ledger_cli(url, "audit", "export", "--user", "usr_a", "--out", str(out))
    assert result.returncode == 2
    assert "not empty" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


KILLED_MID_EXPORT = """
import os, signal, sys
import ledger
from ledger.auditor import Auditor
from ledger.export import export_user
real = Auditor.records
def records(self, run_id, **kwargs):
    if getattr(self, "read_one", False):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9, with the first run written
    self.read_one = True
    return real(self, run_id, **kwargs)
Auditor.records = records
with ledger.connect(sys.argv[1]) as led:
    export_user(led, "usr_a", sys.argv[2])
"""


def test_an_export_killed_mid_way_is_refused_and_named_as_such(url: str, tmp_path: Path) -> None:
    """kill -9 leaves a hidden partial file, which ``ls`` does not show: verify refuses the
    directory, and the next export into it says what is there and why."""
    record_runs(url, "usr_a", runs=2)
    out = tmp_path / "export"
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_EXPORT, url, str(out)], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in out.iterdir()] == [".events.jsonl.partial"]
    checked = offline_verify(out)
    assert checked.returncode == 2 and "manifest.json is missing" in checked.stderr
    again = ledger_cli(url, "audit", "export", "--user", "usr_a", "--out", str(out))
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "'.events.jsonl.partial'" in again.stderr and "interrupted" in again.stderr


def _a_file(out: Path) -> Path:
    out.write_text("mine")
    return out


def _under_a_file(out: Path) -> Path:
    _a_file(out)
    return out / "export"


def _a_dangling_link(out: Path) -> Path:
    out.symlink_to(out.parent / "gone")
    return out


def _a_previous_export(out: Path) -> Path:
    out.mkdir()
    (out / MANIFEST_FILE).write_text("{}")
    (out / EVENTS_FILE).write_text("")
    return out


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_a_file, "is a file, not a directory"),
        (_under_a_file, "cannot create it there: .* is a file"),
        (_a_previous_export, "already holds an export"),
        (_a_dangling_link, "is a symbolic link to .*gone, which does not exist"),
    ],
)
def test_a_bad_out_path_is_one_line_naming_it_and_nothing_is_written(
    make: Any, says: str, sqlite_url: str, tmp_path: Path
) -> None:
    record_runs(sqlite_url, "usr_a", runs=1)
    area = tmp_path / "area"
    area.mkdir()
    out = make(area / "out")
    before = sorted(str(p) for p in area.rglob("*"))
    result = ledger_cli(sqlite_url, "audit", "export", "--user", "usr_a", "--out", str(out))
    assert result.returncode == 2, result.stderr
    [message] = result.stderr.strip().splitlines()
    assert str(out) in message and re.search(says, message)
    assert "nothing was written" in message
    assert sorted(str(p) for p in area.rglob("*")) == before


def one_line(text: str) -> str:
    """The one line ``text`` must be: no other line, no terminal escape code."""
    [line] = text.splitlines()
    assert "\x1b" not in line and "\x07" not in line, line
    return line


@pytest.mark.parametrize(
    "name", ["a\nb", "c\x1b]0;done\x07\x1b[2Jd", "e\rf\u2028g"], ids=["newline", "escape", "cr"]
)
def test_an_out_path_with_control_characters_is_shown_escaped_on_one_line(
    name: str, sqlite_url: str, tmp_path: Path
) -> None:
    """--out with a newline, a carriage return or a terminal escape in it: every message
    naming it is still one line, with the path escaped as Python writes it."""
    record_runs(sqlite_url, "usr_a", runs=1, turns=1)
    out = tmp_path / name
    escaped = repr(str(out))

    done = ledger_cli(sqlite_url, "audit", "export", "--user", "usr_a", "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary, *_ = done.stdout.splitlines(keepends=True)
    assert one_line(summary).endswith(f" to {escaped}"), summary
    assert len(done.stdout.splitlines()) == 3 and not done.stderr  # and the digest lines
    assert exported_by(out) == "usr_a"  # written where asked, under the real name

    again = ledger_cli(sqlite_url, "audit", "export", "--user", "usr_a", "--out", str(out))
    assert again.returncode == 2 and not again.stdout
    assert one_line(again.stderr).startswith(f"error: {escaped} already holds an export")

    checked = offline_verify(out)
    assert checked.returncode == 0 and not checked.stderr
    assert one_line(checked.stdout).startswith(f"verified export {escaped} of user usr_a")

    (out / MANIFEST_FILE).unlink()
    missing = offline_verify(out)
    assert missing.returncode == 2 and not missing.stdout
    manifest_path = repr(str(out / MANIFEST_FILE))
    assert one_line(missing.stderr) == f"error: {manifest_path} is missing: not a ledger " + (
        "export, or an export that never completed"
    )


def test_a_directory_that_cannot_be_written_is_named(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Permissions cannot be tested as root, which the suite may run as: the refusal
    of the file system is simulated.)"""
    record_runs(sqlite_url, "usr_a", runs=1)
    out = tmp_path / "export"

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with ledger.connect(sqlite_url) as led, pytest.raises(ExportTargetError) as refused:
        export_user(led, "usr_a", out)
    assert str(refused.value) == (
        f"cannot write an export to {out}: Permission denied; give a directory you can "
        "write to; nothing was written"
    )
    assert not out.exists()


def test_an_empty_directory_is_used(sqlite_url: str, tmp_path: Path) -> None:
    record_runs(sqlite_url, "usr_a", runs=1)
    out = tmp_path / "export"
    out.mkdir()
    export(sqlite_url, "usr_a", out)
    assert offline_verify(out).returncode == 0


def test_an_unknown_user_is_not_found_and_nothing_is_created(url: str, tmp_path: Path) -> None:
    record_runs(url, "usr_a", runs=1)
    out = tmp_path / "export"
    result = ledger_cli(url, "audit", "export", "--user", "usr_nobody", "--out", str(out))
    assert result.returncode == 1 and "not found" in result.stderr
    assert not out.exists()


def test_another_users_export_holds_none_of_the_first_users_events(
    url: str, tmp_path: Path
) -> None:
    a_runs = record_runs(url, "usr_a")
    b_runs = record_runs(url, "usr_b", runs=1)
    export(url, "usr_b", tmp_path / "b")
    rows = lines(tmp_path / "b")
    assert {r["user_id"] for r in rows} == {"usr_b"}
    assert {r["run_id"] for r in rows} == set(b_runs)
    assert not {r["run_id"] for r in rows} & set(a_runs)
    text = (tmp_path / "b" / EVENTS_FILE).read_text() + (tmp_path / "b" / MANIFEST_FILE).read_text()
    assert "usr_a" not in text
    assert offline_verify(tmp_path / "b").returncode == 0


def test_an_unreadable_export_exits_2_with_one_line(sqlite_url: str, tmp_path: Path) -> None:
    record_runs(sqlite_url, "usr_a", runs=1)
    out = tmp_path / "export"
    export(sqlite_url, "usr_a", out)
    (out / EVENTS_FILE).write_text((out / EVENTS_FILE).read_text() + "{not json\n")
    garbled = offline_verify(out)
    assert garbled.returncode == 2 and "line 12" in garbled.stderr
    assert len(garbled.stderr.strip().splitlines()) == 1 and "Traceback" not in garbled.stderr
    (out / MANIFEST_FILE).unlink()
    missing = offline_verify(out)
    assert missing.returncode == 2 and "manifest.json is missing" in missing.stderr
    nowhere = offline_verify(tmp_path / "no-such-dir")
    assert nowhere.returncode == 2 and "Traceback" not in nowhere.stderr
    mixed = ledger_cli(sqlite_url, "verify", "--export", str(out), "--user", "usr_a")
    assert mixed.returncode == 2


def test_the_library_exports_and_verifies_on_every_store(store_url: str, tmp_path: Path) -> None:
    with ledger.connect(store_url) as led:
        run = led.tenant("usr_a").start_run(session_id="s")
        turn(run, 1)
        seen: list[tuple[int, int]] = []
        manifest = export_user(
            led, "usr_a", tmp_path / "x", progress=lambda d, t: seen.append((d, t))
        )
        assert manifest.counts.events == 6 and seen[-1] == (6, 6)
        again = export_user(led.auditor(), "usr_a", tmp_path / "y")
        with pytest.raises(ExportTargetError):
            export_user(led, "usr_a", tmp_path / "x")
    assert again.digest == manifest.digest
    report = verify_export(tmp_path / "x", against=manifest.digest)
    assert report.ok and report.events == 6 and report.runs == 1


def test_a_failed_export_leaves_no_half_export(sqlite_url: str, tmp_path: Path) -> None:
    record_runs(sqlite_url, "usr_a", runs=3, turns=1)
    out = tmp_path / "export"
    with ledger.connect(sqlite_url) as led:
        auditor = led.auditor()
        reads = 0
        real = auditor.records

        def failing(run_id: str, **kwargs: Any) -> Any:
            nonlocal reads
            reads += 1
            if reads == 3:
                raise OSError("disk full")
            return real(run_id, **kwargs)

        auditor.records = failing  # type: ignore[method-assign]
        with pytest.raises(OSError, match="disk full"):
            export_user(auditor, "usr_a", out)
    assert not out.exists()


def exported_by(out: Path) -> str:
    """Whose export ``out`` holds, once its events and manifest are checked to belong
    together (the manifest's hashes are those of the events file next to it)."""
    report = verify_export(out)
    assert report.ok, (report.problems, report.issues)
    assert sorted(p.name for p in out.iterdir()) == [EVENTS_FILE, MANIFEST_FILE]
    return report.user_id


def test_an_export_that_checked_first_never_overwrites_one_that_finished_first(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B checks DIR is empty, then A runs to the end, then B writes: B must fail, and
    leave A's export whole (it used to rename its files over A's, silently)."""
    record_runs(url, "usr_a", runs=1, turns=1)
    record_runs(url, "usr_b", runs=1, turns=1)
    out = tmp_path / "export"
    real_check = export_module._check_target

    def then_a_runs(target: Path) -> None:
        real_check(target)
        monkeypatch.setattr(export_module, "_check_target", real_check)
        export_user(led, "usr_a", out)

    with ledger.connect(url) as led:
        monkeypatch.setattr(export_module, "_check_target", then_a_runs)
        with pytest.raises(ExportTargetError) as lost:
            export_user(led, "usr_b", out)
    assert str(lost.value).startswith(f"another export wrote to {out} first")
    assert exported_by(out) == "usr_a"


def test_an_export_that_checked_first_never_takes_over_one_being_written(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B checked DIR before A created its temporary file; B runs while A writes it: B
    fails without touching A's file, and A finishes."""
    record_runs(sqlite_url, "usr_a", runs=2, turns=1)
    record_runs(sqlite_url, "usr_b", runs=1, turns=1)
    out = tmp_path / "export"
    refusals: list[str] = []

    def b_runs(done: int, total: int) -> None:
        if refusals:
            return
        with monkeypatch.context() as checked_before:
            checked_before.setattr(export_module, "_check_target", lambda target: None)
            with pytest.raises(ExportTargetError) as lost:
                export_user(led, "usr_b", out)
        refusals.append(str(lost.value))

    with ledger.connect(sqlite_url) as led:
        export_user(led, "usr_a", out, progress=b_runs)
    assert refusals and refusals[0].startswith(f"another export wrote to {out} first")
    assert exported_by(out) == "usr_a"


def stderr_on_a_terminal(url: str, *args: str) -> tuple[int, str, bytes]:
    """Run the CLI with stderr on a pseudo-terminal (where a person would watch)."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    env.pop("LEDGER_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "--url", url, *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the other end closed
            break
        if not data:
            break
        chunks.append(data)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.wait(timeout=120)
    proc.stdout.close()
    os.close(master)
    return proc.returncode, out, b"".join(chunks)


def test_verify_shows_a_progress_bar_on_a_terminal_but_never_with_json(sqlite_url: str) -> None:
    record_runs(sqlite_url, "usr_a", runs=2, turns=1)
    code, out, err = stderr_on_a_terminal(sqlite_url, "verify")
    assert code == 0 and "verified 2 runs" in out
    assert b"verifying" in err
    code, out, err = stderr_on_a_terminal(sqlite_url, "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    assert err == b""
    piped = ledger_cli(sqlite_url, "verify")  # stderr not a terminal: no bar either
    assert piped.returncode == 0 and piped.stderr == ""

"""Exporting one person's events for an auditor, and checking such an export offline.

An export is a directory holding two files:

* ``events.jsonl``: one line per stored event of the user, all runs, run then version
  order. Each line is the stored envelope as it is, the payload as base64 of the exact
  stored bytes and the chain links in hex (an ``ExportedEvent``), which is everything
  needed to recompute every run's hash chain with ``ledger.chain`` and no database;
  plus ``data``, the payload made readable (held to ``payload`` by the check wherever
  the payload is plain; sealed personal content in it no offline check can open).
* ``manifest.json``: what the export claims (a ``Manifest``): whose events, when, how
  many runs and events, each run's head (version and hash), the sha256 of
  events.jsonl and a digest of the exported events, in ``ledger.digest``'s form.

``verify_export`` checks every chain, every line's form and ``data``, and every claim of
the manifest against the file. It reads only regular files of the directory (never a
link, a pipe or a device). What no offline check can see is a forger who rewrites the
file and the manifest consistently (the chain has no secret; the manifest's digest is
only self-consistent). Keep the digest that ``export_user`` returns somewhere else and
pass it back as ``against``: rewriting any event changes it.

Files are written under temporary names and linked into place, the manifest last, so a
crash never leaves a directory that looks like a complete export; a name that is taken
is never replaced, so an export never overwrites another one written into the same
directory at the same time (the later one fails, leaving nothing of its own).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from bisect import bisect_right
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, NamedTuple, cast

import msgspec

from ledger import digest as log_digest
from ledger.auditor import Auditor
from ledger.errors import IntegrityError, InvalidEvent, LedgerError, NotFound, shown
from ledger.ids import check_id
from ledger.integrity import ChainCheck, Problem, VerifyReport
from ledger.records import GENESIS, LogCursor, Record
from ledger.storable import MARKER
from ledger.tenant import to_event

if TYPE_CHECKING:
    from ledger.connection import Ledger
    from ledger.store.base import EventStore

__all__ = [
    "EVENTS_FILE",
    "FORMAT",
    "MANIFEST_FILE",
    "Counts",
    "ExportReport",
    "ExportTargetError",
    "ExportUnreadable",
    "ExportedEvent",
    "Manifest",
    "RunEntry",
    "export_user",
    "read_manifest",
    "verify_export",
]

#: The format of an export; a reader refuses any other.
FORMAT = "ledger-export-v1"
EVENTS_FILE = "events.jsonl"
MANIFEST_FILE = "manifest.json"

#: ``progress(done, total)``: how far a long export or check has got.
Progress = Callable[[int, int], None]

Hex32 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
Count = Annotated[int, msgspec.Meta(ge=0)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


class ExportTargetError(InvalidEvent):
    """The directory given for an export cannot take one (it is not empty, or a file)."""


class ExportUnreadable(InvalidEvent):
    """A directory is not a readable export: a file is missing, or is not what it must be."""


class ExportedEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of events.jsonl: a stored event exactly as stored, plus readable ``data``.

    ``payload`` is base64 in JSON (the exact stored bytes: ciphertext where the payload
    is encrypted); hashes are hex. ``data`` is None where the payload could not be made
    readable (a tampered row, say); the chain check says what is wrong with it.
    """

    user_id: str
    session_id: str
    run_id: str
    version: int
    position: int
    tx_id: int
    type: str
    schema: int
    occurred_at: AwareTime
    recorded_at: AwareTime
    key_id: str | None
    payload: bytes
    prev_hash: Hex32
    hash: Hex32
    data: dict[str, Any] | None = None

    @classmethod
    def of(cls, record: Record, data: dict[str, Any] | None) -> ExportedEvent:
        """The export line of a stored record."""
        return cls(
            user_id=record.user_id,
            session_id=record.session_id,
            run_id=record.run_id,
            version=record.version,
            position=record.position,
            tx_id=record.tx_id,
            type=record.type,
            schema=record.schema,
            occurred_at=record.occurred_at,
            recorded_at=record.recorded_at,
            key_id=record.key_id,
            payload=record.payload,
            prev_hash=record.prev_hash.hex(),
            hash=record.hash.hex(),
            data=data,
        )

    def record(self) -> Record:
        """The stored record this line describes (what the chain check needs)."""
        return Record(
            user_id=self.user_id,
            session_id=self.session_id,
            run_id=self.run_id,
            version=self.version,
            position=self.position,
            tx_id=self.tx_id,
            type=self.type,
            schema=self.schema,
            occurred_at=self.occurred_at,
            recorded_at=self.recorded_at,
            payload=self.payload,
            prev_hash=bytes.fromhex(self.prev_hash),
            hash=bytes.fromhex(self.hash),
            key_id=self.key_id,
        )


class RunEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One exported run as the manifest states it: how many events, and its head."""

    run_id: str
    session_id: str
    events: Count
    head_version: Count
    head_hash: Hex32


class Counts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How many runs and events an export holds."""

    runs: Count
    events: Count


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What an export claims; ``verify_export`` holds events.jsonl to every field of it."""

    format: str
    user_id: str
    exported_at: AwareTime
    counts: Counts
    runs: list[RunEntry]
    events_sha256: Hex32
    #: A ``ledger.digest.Digest`` (text form) of the exported events, in log order.
    digest: str


class ExportReport(VerifyReport):
    """A verification of an export: the chains' problems (one per run, naming its first
    bad event) and ``issues`` with the export as a whole (file hash, counts, digest)."""

    user_id: str = ""
    digest: str | None = None
    issues: list[str] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every chain and every claim of the manifest checked out."""
        return not self.problems and not self.issues

    def raise_for_problems(self) -> ExportReport:
        """``VerifyReport.raise_for_problems``, and ``IntegrityError`` naming the first
        issue with the export as a whole when every chain checked out."""
        super().raise_for_problems()
        if self.issues:
            raise IntegrityError(
                f"export of user {self.user_id!r} does not verify: {self.issues[0]}"
            )
        return self


class _Link(NamedTuple):
    """What ``ledger.digest`` reads of an event: its place in the log and its hash."""

    cursor: LogCursor
    hash: bytes


class _ExportedLog:
    """The exported events as a read-only log, so ``ledger.digest`` can chain them as it
    chains a store's (it only calls ``settle`` and ``read_log``)."""

    def __init__(self, links: list[_Link]) -> None:
        self._links = sorted(links)

    def settle(self, timeout: float = 5.0) -> bool:
        """A file holds no transactions in flight: everything is readable."""
        return True

    def read_log(self, after: LogCursor, limit: int = 1000) -> list[_Link]:
        start = bisect_right(self._links, after, key=attrgetter("cursor"))
        return self._links[start : start + limit]


class _Gap(NamedTuple):
    """Where a run's chain broke on a version gap, in an export being verified."""

    problem: Problem  # as noted, naming the line of the gap
    version: int  # the version expected there
    line: int | None = None  # the line that holds that version, once read


def _digest_of(links: list[_Link]) -> log_digest.Digest:
    return log_digest.take(cast("EventStore", _ExportedLog(links)))


def _readable(auditor: Auditor, record: Record) -> dict[str, Any] | None:
    """``data`` for an export line, or None if the stored payload cannot be read."""
    try:
        return auditor.data(record)
    except (LedgerError, msgspec.MsgspecError, ValueError, TypeError):
        return None


def _check_target(target: Path) -> None:
    """ExportTargetError, naming ``target`` and what to do instead, unless an export can
    go there: a new directory under one that can be written, or an empty one."""
    done = "nothing was written"
    named = shown(target)
    if target.is_dir():
        if (target / MANIFEST_FILE).exists():
            raise ExportTargetError(
                f"{named} already holds an export, which is never overwritten: give a "
                f"new or empty directory, or remove the old export first; {done}"
            )
        held = sorted(entry.name for entry in target.iterdir())
        if held:
            raise ExportTargetError(
                f"{named} is not empty ({_holding(held)}): an export goes into a new or "
                f"empty directory; {done}"
            )
    elif target.exists():
        raise ExportTargetError(
            f"{named} is a file, not a directory: give a new or empty directory; {done}"
        )
    elif target.is_symlink():
        raise ExportTargetError(
            f"{named} is a symbolic link to {shown(os.readlink(target))}, which does not exist: "
            f"give a new or empty directory, or create the one it names; {done}"
        )
    else:
        nearest = next(p for p in target.absolute().parents if p.exists())
        if not nearest.is_dir():
            raise ExportTargetError(
                f"{named}: cannot create it there: {shown(nearest)} is a file, not a directory; "
                f"give a path under a directory; {done}"
            )
        if not os.access(nearest, os.W_OK | os.X_OK):
            raise _unwritable(target, f"permission denied to create it in {shown(nearest)}")
        return
    if not os.access(target, os.W_OK | os.X_OK):
        raise _unwritable(target, "permission denied")


#: What ``export_user`` writes before linking into place: left only by an export that
#: was killed (or that is still running).
_PARTIALS = (f".{EVENTS_FILE}.partial", f".{MANIFEST_FILE}.partial")


def _holding(names: list[str]) -> str:
    """What a directory holds, for an error: its first names (hidden ones too, which
    ``ls`` does not show), and what a leftover of an interrupted export is."""
    first = ", ".join(repr(name) for name in names[:3]) + (", ..." if len(names) > 3 else "")
    if any(name in _PARTIALS for name in names):
        return (
            f"it holds {first}: the remains of an export that was interrupted, or that is "
            "still running; remove them once none runs"
        )
    return f"it holds {first}"


def _unwritable(target: Path, why: str) -> ExportTargetError:
    return ExportTargetError(
        f"cannot write an export to {shown(target)}: {why}; give a directory you can write to; "
        "nothing was written"
    )


def _overtaken(target: Path) -> ExportTargetError:
    """The error of an export that lost a race: another export into ``target`` got there
    between this one's check of the directory and its writing into it."""
    return ExportTargetError(
        f"another export wrote to {shown(target)} first (after this one checked it was empty): an "
        "export never overwrites another; nothing of this export was left there; give a "
        "new or empty directory"
    )


def _create(temporary: Path, target: Path) -> BinaryIO:
    """``temporary`` created for writing; ``_overtaken`` if it exists already (another
    export into ``target`` is writing it: the check of the directory came before)."""
    try:
        return open(temporary, "xb")
    except FileExistsError:
        raise _overtaken(target) from None


def _place(temporary: Path, final: Path) -> None:
    """``temporary`` linked to its final name, never replacing a file there.

    A hard link is created only if the name is free (``os.replace`` would silently put
    this export's file over another's). The events go first and the manifest last, so a
    manifest appears only next to the events it describes; ``_overtaken`` if another
    export placed its files first."""
    try:
        os.link(temporary, final)
    except FileExistsError:
        raise _overtaken(final.parent) from None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible everywhere (Windows); the links are still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export_user(
    source: Auditor | Ledger,
    user_id: str,
    out_dir: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> Manifest:
    """Write every stored event of ``user_id`` and a manifest into ``out_dir``.

    ``out_dir`` must be missing or empty (``ExportTargetError`` otherwise, before
    anything is read or written); a user with no runs is ``NotFound``. Each run is
    exported up to the head it had when the runs were listed, so the manifest describes
    one consistent cut even while agents keep appending.
    """
    auditor = source if isinstance(source, Auditor) else source.auditor()
    user_id = check_id("user_id", user_id)
    target = Path(out_dir)
    _check_target(target)
    runs = auditor.runs(user_id)
    if not runs:
        raise NotFound(f"user {user_id!r} not found")
    try:
        target.mkdir(parents=True)
        created = True
    except FileExistsError:  # checked empty, or made by another export since: not ours
        created = False
    except OSError as exc:
        raise _unwritable(target, exc.strerror or str(exc)) from None
    events_tmp, manifest_tmp = (target / name for name in _PARTIALS)
    written: list[Path] = []  # only what this call created is removed on failure
    try:
        total = sum(run.version for run in runs)
        encoder = msgspec.json.Encoder()
        sha = hashlib.sha256()
        links: list[_Link] = []
        entries: list[RunEntry] = []
        with _create(events_tmp, target) as out:
            written.append(events_tmp)
            for run in runs:
                records = auditor.records(run.run_id, upto_version=run.version)
                chunk = encoder.encode_lines(
                    [ExportedEvent.of(r, _readable(auditor, r)) for r in records]
                )
                out.write(chunk)
                sha.update(chunk)
                links.extend(_Link(r.cursor, r.hash) for r in records)
                last = records[-1] if records else None
                entries.append(
                    RunEntry(
                        run_id=run.run_id,
                        session_id=run.session_id,
                        events=len(records),
                        head_version=last.version if last else 0,
                        head_hash=(last.hash if last else GENESIS).hex(),
                    )
                )
                if progress is not None:
                    progress(len(links), total)
            out.flush()
            os.fsync(out.fileno())
        manifest = Manifest(
            format=FORMAT,
            user_id=user_id,
            exported_at=datetime.now(UTC),
            counts=Counts(runs=len(entries), events=len(links)),
            runs=entries,
            events_sha256=sha.hexdigest(),
            digest=str(_digest_of(links)),
        )
        with _create(manifest_tmp, target) as out:
            written.append(manifest_tmp)
            out.write(msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        for temporary, final in ((events_tmp, EVENTS_FILE), (manifest_tmp, MANIFEST_FILE)):
            _place(temporary, target / final)
            written.append(target / final)
            temporary.unlink()
            written.remove(temporary)
        _fsync_dir(target)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):  # someone else put files in it meanwhile
                target.rmdir()
        raise
    return manifest


def _open_export_file(path: Path) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file of the export itself.

    A symbolic link (which could name any file of the auditor's machine, or a device
    that never ends such as /dev/zero) or anything else that is not a regular file (a
    named pipe would block the check forever) is ``ExportUnreadable``, as is a missing
    or unreadable file; the check never follows a link out of the directory."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    what = "an export holds only regular files, never links or devices"
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if path.is_symlink():
            raise ExportUnreadable(
                f"{shown(path)} is a symbolic link (to a missing file); {what}"
            ) from None
        raise ExportUnreadable(
            f"{shown(path)} is missing: not a ledger export, or an export that never completed"
        ) from None
    except OSError as exc:
        if path.is_symlink():
            raise ExportUnreadable(f"{shown(path)} is a symbolic link; {what}") from None
        raise ExportUnreadable(f"cannot read {shown(path)}: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ExportUnreadable(f"{shown(path)} is {kind}; {what}")
    return os.fdopen(fd, "rb")


def _checked_id(where: str, field: str, value: str) -> None:
    """``ExportUnreadable`` at ``where`` unless ``value`` is an id the ledger could have
    stored (ids reach the auditor's terminal: no control characters, no escapes)."""
    try:
        check_id(field, value)
    except InvalidEvent as exc:
        raise ExportUnreadable(f"{where}: {exc}; the ledger never stores such an id") from None


def read_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """The manifest of an export; ``ExportUnreadable`` saying why if there is none."""
    path = Path(directory) / MANIFEST_FILE
    if not Path(directory).is_dir():
        raise ExportUnreadable(f"{shown(directory)} is not a directory (expected a ledger export)")
    with _open_export_file(path) as f:
        try:
            raw = f.read()
        except OSError as exc:
            raise ExportUnreadable(f"cannot read {shown(path)}: {exc.strerror or exc}") from None
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.MsgspecError as exc:
        raise ExportUnreadable(
            f"{shown(path)} is not a ledger export manifest: {shown(str(exc))}"
        ) from None
    if manifest.format != FORMAT:
        raise ExportUnreadable(f"{shown(path)}: unsupported export format {manifest.format!r}")
    _checked_id(shown(path), "user_id", manifest.user_id)
    for number, entry in enumerate(manifest.runs):
        _checked_id(f"{shown(path)} runs[{number}]", "run_id", entry.run_id)
        _checked_id(f"{shown(path)} runs[{number}]", "session_id", entry.session_id)
    return manifest


class _Line(NamedTuple):
    """One line of events.jsonl: its number, its record, its ``data``, and whether it is
    written exactly as ``export_user`` writes it (one key once, no added spaces or CRLF)."""

    number: int
    record: Record
    data: dict[str, Any] | None
    canonical: bool


def _lines(path: Path, sha: Any) -> Iterator[_Line]:
    """The records of events.jsonl with their line numbers, hashing every byte read."""
    decoder = msgspec.json.Decoder(ExportedEvent)
    encoder = msgspec.json.Encoder()
    with _open_export_file(path) as f:
        try:
            for number, line in enumerate(f, 1):
                sha.update(line)
                if not line.strip():
                    continue  # a stray blank line: only the file hash can mind it
                try:
                    event = decoder.decode(line)
                    record = event.record()
                except (msgspec.MsgspecError, ValueError) as exc:
                    raise ExportUnreadable(
                        f"{shown(path)} line {number}: {shown(str(exc))}"
                    ) from None
                where = f"{shown(path)} line {number}"
                for field in ("user_id", "session_id", "run_id"):
                    _checked_id(where, field, getattr(event, field))
                yield _Line(number, record, event.data, encoder.encode(event) + b"\n" == line)
        except OSError as exc:
            raise ExportUnreadable(f"cannot read {shown(path)}: {exc.strerror or exc}") from None


def verify_export(
    directory: str | os.PathLike[str],
    *,
    against: str | log_digest.Digest | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Check an export with no database: every run's chain, the file's hash, the
    manifest's counts and heads, and the digest (also against a kept one, if given).

    Reads events.jsonl once, line by line, holding one chain check per run and the
    hash of each event (for the digest). ``ExportUnreadable`` if the directory is not
    an export at all; everything else found is in the report.
    """
    root = Path(directory)
    kept = log_digest.Digest.parse(against) if isinstance(against, str) else against
    manifest = read_manifest(root)
    report = ExportReport(user_id=manifest.user_id)
    found: dict[str, Problem] = {}

    def note(problem: Problem) -> None:
        found.setdefault(problem.run_id, problem)

    sha = hashlib.sha256()
    links: list[_Link] = []
    checks: dict[str, ChainCheck] = {}
    gaps: dict[str, _Gap] = {}  # runs whose chain broke on a version gap
    current: str | None = None
    check = ChainCheck()
    for line in _lines(root / EVENTS_FILE, sha):
        number, record = line.number, line.record
        links.append(_Link(record.cursor, record.hash))
        if progress is not None and len(links) % 1000 == 0:
            progress(len(links), manifest.counts.events)
        if record.run_id != current:
            moved = record.run_id in checks
            check = checks.setdefault(record.run_id, ChainCheck())
            current = record.run_id
        else:
            moved = False
        first = check.problem is None
        expected = check.head_version + 1
        problem = check.add(record)
        if problem is not None and first:
            problem = msgspec.structs.replace(problem, reason=f"line {number}: {problem.reason}")
            note(problem)
            if record.version != expected:
                gaps[record.run_id] = _Gap(problem, expected)
        elif problem is not None:
            gap = gaps.get(record.run_id)
            if gap is not None and gap.line is None and record.version == gap.version:
                gaps[record.run_id] = gap._replace(line=number)
        elif moved:
            note(_problem(record, f"line {number}: the run's events are not together (moved)"))
        flaw = _flaw(line, manifest.user_id)
        if flaw is not None:
            note(_problem(record, f"line {number}: {flaw}"))
    for run_id, gap in gaps.items():
        if gap.line is not None and found[run_id] is gap.problem:
            found[run_id] = msgspec.structs.replace(
                gap.problem,
                reason=f"{gap.problem.reason}; version {gap.version} is on line {gap.line} "
                "(the lines are out of order)",
            )
    report.events = len(links)
    if progress is not None:
        progress(report.events, manifest.counts.events)
    listed: dict[str, RunEntry] = {}
    for entry in manifest.runs:
        if listed.setdefault(entry.run_id, entry) is not entry:
            report.issues.append(f"the manifest lists run {entry.run_id} twice")
        _compare_head(manifest.user_id, entry, checks.get(entry.run_id), note)
    for run_id, check in checks.items():
        if run_id not in listed:
            note(
                Problem(
                    manifest.user_id,
                    run_id,
                    1,
                    f"the file holds {check.events} events of this run; the manifest lists "
                    "no such run (it was added)",
                )
            )
    report.runs = len(listed.keys() | checks.keys())
    order = [*listed, *(r for r in checks if r not in listed)]
    report.problems = [found[r] for r in order if r in found]
    _check_claims(manifest, report, sha.hexdigest())
    recomputed = _digest_of(links)
    report.digest = str(recomputed)
    if report.digest != manifest.digest:
        report.issues.append(
            "the digest of the exported events does not match the manifest's "
            "(events were changed, added, removed or reordered)"
        )
    if kept is not None and recomputed != kept:
        report.issues.append(
            "the digest of the exported events does not match the digest you kept: "
            "this is not the export that digest was taken of, or it was rewritten"
        )
    return report


def _flaw(line: _Line, user_id: str) -> str | None:
    """What is wrong with one line of an export of ``user_id`` besides its chain: how
    it is written, its readable ``data``, or whose event it is."""
    if not line.canonical:
        return (
            "not written as 'ledger audit export' writes it (a key given twice, keys "
            "reordered, or spaces or line endings added): the line was edited"
        )
    if not _shows_payload(line.record, line.data):
        return "data is not what the stored payload reads as (the readable copy was edited)"
    if line.record.user_id != user_id:
        return f"an event of user {line.record.user_id!r} in an export of {user_id!r}"
    return None


def _shows_payload(record: Record, data: dict[str, Any] | None) -> bool:
    """Whether a line's ``data`` is what its stored payload reads as: equal wherever the
    payload is plain; anything where it holds a sealed token (personal content that only
    the user's key opens, which no offline check has); None where it cannot be read."""
    try:
        stored = msgspec.json.decode(msgspec.json.encode(to_event(record).data))
    except (LedgerError, msgspec.MsgspecError, ValueError, TypeError):
        return data is None
    return data is not None and _same(stored, data, sealed=record.key_id is not None)


def _same(stored: Any, shown: Any, *, sealed: bool) -> bool:
    """``_shows_payload`` for one value of the payload (JSON-shaped) and its readable copy."""
    if sealed and isinstance(stored, str) and stored.startswith(MARKER):
        return True
    if isinstance(stored, dict):
        return (
            isinstance(shown, dict)
            and list(stored) == list(shown)
            and all(_same(value, shown[key], sealed=sealed) for key, value in stored.items())
        )
    if isinstance(stored, list):
        return (
            isinstance(shown, list)
            and len(stored) == len(shown)
            and all(_same(a, b, sealed=sealed) for a, b in zip(stored, shown, strict=True))
        )
    return type(stored) is type(shown) and stored == shown


def _problem(record: Record, reason: str) -> Problem:
    return Problem(record.user_id, record.run_id, record.version, reason)


def _compare_head(
    user_id: str, entry: RunEntry, check: ChainCheck | None, note: Callable[[Problem], None]
) -> None:
    """A problem for ``entry``'s run if the file's events of it are not what the
    manifest says (the chain itself is fine, but events are missing or added at its end)."""
    events = 0 if check is None else check.events
    if check is not None and check.problem is not None:
        return  # its first bad event is already named
    head_version = 0 if check is None else check.head_version
    head_hash = GENESIS.hex() if check is None else check.head_hash.hex()
    if events != entry.events or head_version != entry.head_version:
        first_off = min(head_version, entry.head_version) + 1
        note(
            Problem(
                user_id,
                entry.run_id,
                first_off,
                f"the manifest lists {entry.events} events up to version "
                f"{entry.head_version}; the file holds {events} up to version {head_version} "
                "(events at the end of the run were removed or added)",
            )
        )
    elif head_hash != entry.head_hash:
        note(
            Problem(
                user_id,
                entry.run_id,
                entry.head_version,
                "the head hash does not match the manifest's (the run was rewritten, or "
                "the manifest was edited)",
            )
        )


def _check_claims(manifest: Manifest, report: ExportReport, sha256: str) -> None:
    """Issues where the manifest's totals and file hash disagree with what was read."""
    if sha256 != manifest.events_sha256:
        report.issues.append(
            f"{EVENTS_FILE} does not match the sha256 in the manifest (the file was changed)"
        )
    listed_events = sum(entry.events for entry in manifest.runs)
    if manifest.counts.events != report.events or listed_events != report.events:
        report.issues.append(
            f"the manifest counts {manifest.counts.events} events ({listed_events} over its "
            f"runs); the file holds {report.events}"
        )
    if manifest.counts.runs != len(manifest.runs):
        report.issues.append(
            f"the manifest counts {manifest.counts.runs} runs but lists {len(manifest.runs)}"
        )

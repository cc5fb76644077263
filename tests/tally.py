"""A deliberately simple reducer (events and tokens per session) for runner tests.

Lives in its own module so that spawned runner processes can import it.
"""

from __future__ import annotations

import msgspec

from ledger.events import Event
from projections.projector import Projector
from projections.runner import ProjectorRunner


class Tally(msgspec.Struct):
    events: int = 0
    tokens: int = 0
    versions: dict[str, list[int]] = {}


class TallyReducer:
    def key(self, event: Event) -> str | None:
        return event.session_id

    def initial(self, event: Event) -> Tally:
        return Tally(versions={})

    def apply(self, state: Tally, event: Event) -> Tally:
        usage = event.data.get("usage") or {} if event.type == "model_responded" else {}
        versions = {k: list(v) for k, v in state.versions.items()}
        versions.setdefault(event.run_id, []).append(event.version)
        return Tally(state.events + 1, state.tokens + usage.get("input_tokens", 0), versions)

    def encode(self, state: Tally) -> bytes:
        return msgspec.json.encode(state)

    def decode(self, data: bytes) -> Tally:
        return msgspec.json.decode(data, type=Tally)


TALLY = Projector("tally", 1, TallyReducer())


def tally(runner: ProjectorRunner, user: str, session: str) -> Tally | None:
    """The stored tally of one session, if the runner has made one."""
    data = runner.storage.get("tally", user, session)
    return None if data is None else TALLY.load(data).state

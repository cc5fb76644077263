"""A deliberately simple reducer (events and tokens per session) for runner tests.

Lives in its own module so that spawned runner processes can import it.
"""

from __future__ import annotations

import msgspec

from ledger.events import Event
from projections.projector import Projector
from projections.reducers import Reducer
from projections.runner import ProjectorRunner


class Tally(msgspec.Struct):
    events: int = 0
    tokens: int = 0
    versions: dict[str, list[int]] = {}


class TallyReducer(Reducer[Tally]):
    state_type = Tally

    def key(self, event: Event) -> str | None:
        return event.session_id

    def initial(self, event: Event) -> Tally:
        return Tally(versions={})

    def step(self, state: Tally, event: Event) -> None:
        usage = event.data.get("usage") or {} if event.type == "model_responded" else {}
        state.events += 1
        state.tokens += usage.get("input_tokens", 0)
        state.versions.setdefault(event.run_id, []).append(event.version)


TALLY = Projector("tally", 1, TallyReducer())


def tally(runner: ProjectorRunner, user: str, session: str) -> Tally | None:
    """The stored tally of one session, if the runner has made one."""
    data = runner.storage.get("tally", user, session)
    return None if data is None else TALLY.load(*data).state


class TallyV2Reducer(TallyReducer):
    """The next release's tally: it also counts the tokens of the model's answers, so
    its documents differ from version 1's for the same events."""

    def step(self, state: Tally, event: Event) -> None:
        super().step(state, event)
        usage = event.data.get("usage") or {} if event.type == "model_responded" else {}
        state.tokens += usage.get("output_tokens", 0)


TALLY_V2 = Projector("tally", 2, TallyV2Reducer())

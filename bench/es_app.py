"""The eventsourcing baseline: the library's default Postgres recorder via an Application.

``AgentRun`` has one event method per turn-event type, carrying the same fields (so the
same payload sizes) as ``bench.workload``; a turn is five method calls and one
``app.save(aggregate)``. Configuration is the library's defaults plus where to connect
and a pool of one connection (each writer process is single-threaded, like ours).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.pgserver import params
from bench.workload import turn_events


class AgentRun(Aggregate):
    @event("Started")
    def __init__(self, session_id: str, model: str) -> None:
        self.session_id = session_id
        self.model = model
        self.events = 0

    @event("MessageReceived")
    def message_received(self, content: str, role: str = "user") -> None:
        self.events += 1

    @event("ModelResponded")
    def model_responded(
        self,
        model: str | None = None,
        content: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        usage: dict[str, Any] | None = None,
        latency_ms: float | None = None,
    ) -> None:
        self.events += 1

    @event("ToolCalled")
    def tool_called(self, call_id: str, name: str, input: Any = None) -> None:
        self.events += 1

    @event("ToolReturned")
    def tool_returned(
        self, call_id: str, name: str, output: Any = None, duration_ms: float | None = None
    ) -> None:
        self.events += 1


class AgentRuns(Application[UUID]):
    pass


def es_env(url: str, schema: str, create_table: bool) -> dict[str, str]:
    p = params(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(p["dbname"]),
        "POSTGRES_HOST": str(p.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(p.get("port", "5432")),
        "POSTGRES_USER": str(p.get("user", "")),
        "POSTGRES_PASSWORD": str(p.get("password", "")),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": "1",
        "CREATE_TABLE": "y" if create_table else "n",
    }


def create_es_tables(url: str, schema: str) -> None:
    """CREATE_TABLE=y once, in the parent (concurrent creation races on the function)."""
    app = AgentRuns(env=es_env(url, schema, create_table=True))
    app.close()


class EsWriter:
    def __init__(self, index: int, url: str, schema: str, runs: int = 4, **_: Any) -> None:
        self.app = AgentRuns(env=es_env(url, schema, create_table=False))
        self.runs = [AgentRun(session_id=f"sess_{index}", model="gpt-4o") for _ in range(runs)]
        for agg in self.runs:
            self.app.save(agg)

    def turn(self, n: int) -> None:
        agg = self.runs[n % len(self.runs)]
        for type_, fields in turn_events(n):
            getattr(agg, type_)(**fields)
        self.app.save(agg)

    def close(self) -> None:
        self.app.close()

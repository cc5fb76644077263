"""A TCP proxy in front of Postgres that can lose one append on the way: the request
(the server never sees it) or the reply (the server stored it, the client never
hears). What a network fault or a server crash does to a client, on demand."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

#: Bytes every request of the API's append carries (its prepared statement's name).
APPEND_MARK = b"ledger_append"


class _Link:
    """One client connection and its upstream one."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.drop_reply = False

    def cut(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class FaultyProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream``; ``lose("request")`` or
    ``lose("reply")`` makes the next append request lose that, and cuts its connection
    (and, with ``then_refuse``, takes no new connections: the server is gone)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._fault: str | None = None
        self._refuse_after = False
        self._mark = APPEND_MARK
        self._gone = False  # the server is gone: every connection, old or new, is cut
        self._down_until = 0.0  # time.monotonic() until which new connections are cut
        self.fired: list[str] = []  # the faults that struck, in order
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def lose(self, what: str, *, then_refuse: bool = False, mark: bytes = APPEND_MARK) -> None:
        """Lose ``what`` of the next request that carries ``mark``."""
        assert what in ("request", "reply")
        self._fault, self._refuse_after, self._mark = what, then_refuse, mark

    def down(self, seconds: float) -> None:
        """A server restart that takes ``seconds``: every connection is cut now, and
        every new one at once, until then."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            links = list(self._links)
        for link in links:
            link.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if time.monotonic() < self._down_until:
                client.close()
                continue
            link = _Link(client, socket.create_connection(self.upstream))
            with self._lock:
                self._links.append(link)
                gone = self._gone
            if gone:  # accepted just before the listener closed
                link.cut()
                continue
            threading.Thread(target=self._from_client, args=(link,), daemon=True).start()
            threading.Thread(target=self._from_server, args=(link,), daemon=True).start()

    def _from_client(self, link: _Link) -> None:
        try:
            while data := link.client.recv(65536):
                if self._fault is not None and self._mark in data:
                    with self._lock:
                        fault, self._fault = self._fault, None
                        if fault is not None and self._refuse_after:
                            self._gone = True
                            others = [other for other in self._links if other is not link]
                    if fault is not None:
                        self.fired.append(fault)
                        if self._refuse_after:  # the server is gone: all of it
                            self._listener.close()
                            for other in others:
                                other.cut()
                    if fault == "request":
                        link.cut()
                        return
                    link.drop_reply = fault == "reply"
                link.server.sendall(data)
        except OSError:
            pass
        link.cut()

    def _from_server(self, link: _Link) -> None:
        try:
            while data := link.server.recv(65536):
                if link.drop_reply:
                    link.cut()  # the server has answered (so committed): the client never hears
                    return
                link.client.sendall(data)
        except OSError:
            pass
        link.cut()

    def close(self) -> None:
        self._listener.close()
        for link in self._links:
            link.cut()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

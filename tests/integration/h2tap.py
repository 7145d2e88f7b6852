"""A TCP proxy that watches the gRPC connections it carries, plaintext or TLS.

It forwards bytes unchanged between a client and `upstream()` and records, per direction,
every read (its time and size) and which side closed each connection, when. While a long
unary call waits for its answer the only traffic is keepalive PINGs and their acks, small
records in both directions (an HTTP/2 PING frame is 17 bytes, under 64 bytes once in a TLS
record); a server that refuses a client's pings answers GOAWAY `too_many_pings` and closes
the connection, which shows as the upstream side closing during the call.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SMALL = 64  # bytes: a PING (or its ack) in one read, with or without TLS


@dataclass
class Traffic:
    reads: list[tuple[float, int]] = field(default_factory=list)  # (epoch seconds, bytes)
    closed: list[float] = field(default_factory=list)  # epoch seconds this side closed a connection

    def small_reads(self, start: float, end: float) -> int:
        return sum(1 for t, n in self.reads if start <= t <= end and n <= SMALL)

    def closed_between(self, start: float, end: float) -> list[float]:
        return [t for t in self.closed if start <= t <= end]


class H2Tap:
    """Listens on 127.0.0.1:`port`; every accepted connection is piped to `upstream()`."""

    def __init__(self, upstream: Callable[[], tuple[str, int]]) -> None:
        self.upstream = upstream
        self.client = Traffic()  # what the client sent, and when it closed
        self.server = Traffic()  # what the server sent, and when it closed
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream(), timeout=10)
                up.settimeout(None)
            except OSError:
                conn.close()
                continue
            threading.Thread(target=self._pipe, args=(conn, up, self.client), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, conn, self.server), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, traffic: Traffic) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    traffic.closed.append(time.time())
                    break
                traffic.reads.append((time.time(), len(data)))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._sock.close()

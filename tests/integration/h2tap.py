"""A TCP proxy that reads the HTTP/2 frames of the gRPC connections it carries.

It forwards bytes unchanged between a client and `upstream()`, and records, per direction,
the PING frames (not the acknowledgements) and the GOAWAY frames with their debug text
(`too_many_pings` when a server refuses a client's keepalive). It is how a test sees whether
keepalive pings are sent during a long call and whether the server tolerates them.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PING, GOAWAY = 0x6, 0x7


@dataclass
class FrameLog:
    pings: list[float] = field(default_factory=list)  # epoch seconds of PING frames (not acks)
    goaways: list[str] = field(default_factory=list)  # "error code: debug text @ epoch seconds"


class _Parser:
    def __init__(self, log: FrameLog, *, preface: bool) -> None:
        self.log = log
        self.buf = b""
        self.skip = len(PREFACE) if preface else 0

    def feed(self, data: bytes) -> None:
        self.buf += data
        if self.skip:
            n = min(self.skip, len(self.buf))
            self.buf, self.skip = self.buf[n:], self.skip - n
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            ftype, flags, payload = self.buf[3], self.buf[4], self.buf[9 : 9 + length]
            if ftype == PING and not flags & 0x1:
                self.log.pings.append(time.time())
            elif ftype == GOAWAY and length >= 8:
                code = int.from_bytes(payload[4:8], "big")
                text = payload[8:].decode(errors="replace")
                self.log.goaways.append(f"{code}: {text} @ {time.time():.1f}")
            self.buf = self.buf[9 + length :]


class H2Tap:
    """Listens on 127.0.0.1:`port`; every accepted connection is piped to `upstream()`."""

    def __init__(self, upstream: Callable[[], tuple[str, int]]) -> None:
        self.upstream = upstream
        self.client = FrameLog()  # frames the client sent
        self.server = FrameLog()  # frames the server sent
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
            threading.Thread(
                target=self._pipe, args=(conn, up, _Parser(self.client, preface=True)), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(up, conn, _Parser(self.server, preface=False)), daemon=True
            ).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, parser: _Parser) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                parser.feed(data)
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

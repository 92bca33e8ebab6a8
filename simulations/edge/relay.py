"""A loopback TCP relay that counts the bytes crossing it in each direction.

Placed between SuperNodes and the SuperLink's Fleet API, it sees exactly what a network link
would carry: gRPC over HTTP/2, TLS records when TLS is on, connection setup, heartbeats and
polling included. It forwards bytes unchanged (TLS stays end to end), so comparing its counts
with the ledger's ``message_bytes`` shows what framing and protocol add on the wire.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class ByteRelay:
    """Listen on 127.0.0.1:``port`` (a free port by default), forward each connection to
    ``target``; ``up`` counts client-to-server bytes, ``down`` server-to-client."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.up = 0
        self.down = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", port))
        self.port = self._server.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ByteRelay:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            for src, dst, direction in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pipe, args=(src, dst, direction), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:  # counted before forwarding: a reader never sees data uncounted
                    if direction == "up":
                        self.up += len(data)
                    else:
                        self.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> ByteRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

"""`ired_dcd.client.Client` against a server that drops connections without answering (a kept-alive
connection closed by the server as the request leaves, or a restart): reads are sent once more, writes
never are. The peer is a real TCP server on a free port that drops the first connections it is told to."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from ired_dcd.client import Client, ClientError

ANSWER = json.dumps({"id": 1, "state": "running"}).encode()


class DroppingServer:
    """Answers every request with ANSWER, except that it closes the first `drops` connections unanswered."""

    def __init__(self, drops: int) -> None:
        self.drops = drops
        self.requests: list[str] = []
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:  # closed: the test is over
                return
            with connection:
                request = connection.recv(65536).decode(errors="replace")
                self.requests.append(request.split("\r\n", 1)[0])
                if len(self.requests) <= self.drops:
                    continue  # closed without a response
                head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(ANSWER)}\r\n"
                connection.sendall(head.encode() + b"connection: close\r\n\r\n" + ANSWER)

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def dropping() -> Iterator[type[DroppingServer]]:
    servers: list[DroppingServer] = []

    def make(drops: int) -> DroppingServer:
        servers.append(DroppingServer(drops))
        return servers[-1]

    yield make  # type: ignore[misc]
    for server in servers:
        server.close()


def test_a_read_is_sent_again_once_when_the_server_dropped_the_connection(dropping) -> None:
    server = dropping(drops=1)
    assert Client(server.url).job(1) == {"id": 1, "state": "running"}
    assert server.requests == ["GET /jobs/1 HTTP/1.1"] * 2


def test_a_read_dropped_twice_is_a_clear_error(dropping) -> None:
    server = dropping(drops=2)
    with pytest.raises(ClientError, match=f"^cannot reach {server.url}: "):
        Client(server.url).job(1)
    assert len(server.requests) == 2


def test_a_write_is_never_sent_twice(dropping) -> None:
    server = dropping(drops=1)
    with pytest.raises(ClientError, match=f"^cannot reach {server.url}: "):
        Client(server.url).cancel(1)
    assert server.requests == ["POST /jobs/1/cancel HTTP/1.1"]

"""Raw HTTP requests whose connection a test drops when it likes, and waiting for what the server does then."""

from __future__ import annotations

import socket
import time

import orjson


def send(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.encode() + body)
    return sock


def post(port: int, path: str, body: dict) -> socket.socket:
    payload = orjson.dumps(body)
    return send(port, f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                      f"content-length: {len(payload)}\r\n\r\n", payload)


def get(port: int, path: str) -> socket.socket:
    return send(port, f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False

"""Request limits of the HTTP bridge that act before FastAPI reads a body."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send


class AnswerOversizedBodies:
    """ASGI middleware answering 413 to a body whose Content-Length is over ``max_bytes``,
    after reading and dropping it (up to ``drain_bytes``). Refusing mid-upload leaves
    unread bytes on the socket, and closing it then resets the connection: the client
    would see a broken connection instead of the 413."""

    def __init__(self, app: ASGIApp, max_bytes: int, drain_bytes: int = 4 * 2**20) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = _content_length(scope) if scope["type"] == "http" else None
        if length is None or length <= self.max_bytes:
            return await self.app(scope, receive, send)
        drained = 0
        while drained <= self.drain_bytes:
            message = await receive()
            drained += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = json.dumps(
            {"detail": f"body of {length:,} bytes is over the limit of {self.max_bytes:,} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

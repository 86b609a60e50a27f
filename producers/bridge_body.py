"""How the bridge reads a ``/predict`` body: JSON as RFC 8259 defines it, and nothing else.

Python's own parser, which FastAPI uses, also takes ``NaN``, ``Infinity``, numbers past a
double's range (as infinity), lone surrogates (``"\\ud800"``) and a name repeated in one
object (the last one wins). Each got a 500: the 422 that should have named the bad
value could not itself be written as JSON, or the text could not be encoded. Here the
body is parsed by pydantic-core's strict parser (no NaN or Infinity, valid UTF-8, no lone
surrogates, at most 200 levels of nesting), then once more by Python's for what that one
lets through (numbers past a double, repeated names). Either refusal is FastAPI's usual
422 ``json_invalid``, with the reason. A body that is not declared JSON gets 415.
"""

from __future__ import annotations

import email.message
import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute


class NotJson(json.JSONDecodeError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, "", 0)


def strict_json(body: bytes) -> Any:
    """The value of ``body``, or :class:`NotJson` with the reason it is not JSON."""
    try:
        value = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as error:
        raise NotJson(f"not JSON: {error}") from None
    try:
        json.loads(body, object_pairs_hook=_unique_names, parse_float=_finite_number)
    except ValueError as error:
        raise NotJson(str(error)) from None
    return value


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"an object names {', '.join(map(repr, repeated))} more than once")
    return dict(pairs)


def _finite_number(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is beyond a double's range")
    return number


def declares_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, as FastAPI reads them."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose body, when it has one, is declared JSON (else 415) and is strict JSON
    (else 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def read_strict_json(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if has_body(request) and not declares_json(content_type):
                return JSONResponse(
                    {
                        "detail": f"the body must be JSON, sent with Content-Type: application/json, not {content_type!r}"
                    },
                    status_code=415,
                )
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return read_strict_json


def has_body(request: Request) -> bool:
    """Whether the request says it carries a body (read from the headers: FastAPI reads
    the body itself, against its size limit)."""
    return request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers

"""What the HTTP endpoints share: JSON errors, JSON bodies, the client's address, and the admin key with its
throttle of wrong guesses."""

from __future__ import annotations

import math
import time

from aiohttp import web

from realtime.core.access import bearer, client_address, is_loopback, proxied
from realtime.core.protocol import BAD_KEY, BAD_MESSAGE, KEY_REQUIRED, RATE_LIMITED, encodable
from realtime.server.appkeys import GATE, LIMITS, ORIGINS


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"type": "error", "code": code, "message": message}, status=status, headers=headers)


class BadBody(Exception):
    """A request body that is not the JSON object an endpoint reads; carries the answer to send."""

    def __init__(self, response: web.Response):
        self.response = response


async def read_json(request: web.Request) -> dict:
    """The request's JSON object. Anything but `Content-Type: application/json` is refused with 415 (a cross-site
    form or `text/plain` POST, which browsers send without asking CORS first, cannot reach an endpoint); bad JSON, an
    unknown charset, lone surrogates, a body that is not an object: 400."""
    if request.content_type != "application/json":
        raise BadBody(error(415, BAD_MESSAGE, "send the body as JSON with Content-Type: application/json"))
    try:
        body = await request.json()
    except (ValueError, LookupError, UnicodeError, RecursionError):
        body = None
    if not isinstance(body, dict) or not encodable(body):
        raise BadBody(error(400, BAD_MESSAGE, "the body must be a JSON object"))
    return body


def client_of(request: web.Request) -> str:
    return client_address(request.remote, request.headers)


def retry_after(status: int, code: str, message: str, wait_s: float) -> web.Response:
    return error(status, code, message, {"Retry-After": str(max(1, math.ceil(wait_s)))})


WRONG_KEYS = "too many wrong keys from your address; wait"


def key_blocked(request: web.Request) -> web.Response | None:
    """429 for a request that presents a key while its client is throttled for wrong ones — the right key as well
    as a wrong one, so a guesser cannot tell which guess was right without waiting."""
    if bearer(request.headers.get("Authorization")) is None:
        return None
    blocked = request.app[LIMITS].keys.blocked(client_of(request), time.monotonic())
    return retry_after(429, RATE_LIMITED, WRONG_KEYS, blocked) if blocked > 0 else None


def wrong_key(request: web.Request) -> web.Response | None:
    """Count a presented key that opened nothing against its client (10, then one per 6 s: a chosen admin key, which
    also opens every private room, cannot be guessed at network speed); 429 once that is used up."""
    wait = request.app[LIMITS].keys.take(client_of(request), time.monotonic())
    return retry_after(429, RATE_LIMITED, WRONG_KEYS, wait) if wait > 0 else None


def admin_refusal(request: web.Request) -> web.Response | None:
    """None when the request carries the admin key; else the answer (401, 403, or 429 for a client that keeps
    trying wrong keys). A request without a key is not a wrong guess."""
    gate = request.app[GATE]
    if not gate.has_admin:
        return error(403, KEY_REQUIRED, "this server has no admin key (it runs as a loopback quick start): make "
                                        "rooms with `realtime room create`, or set REALTIME_ADMIN_KEY")
    key = bearer(request.headers.get("Authorization"))
    if key is None:
        return error(401, KEY_REQUIRED, "send the admin key as Authorization: Bearer <key>")
    if gate.is_admin(key):
        return None
    return wrong_key(request) or error(401, BAD_KEY, "that is not the admin key")


def is_local(request: web.Request) -> bool:
    """A request from this machine that no proxy relayed."""
    return bool(request.remote) and is_loopback(request.remote or "") and not proxied(request.headers)


def allow_origin(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Let a page of an allowed other origin read `response` (a widget must see its 429 and Retry-After too)."""
    origin = request.headers.get("Origin")
    if request.app[ORIGINS].cross_origin(origin, request.host) and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    return response

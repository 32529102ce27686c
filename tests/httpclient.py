"""A plain HTTP client for the tests (urllib): any method, JSON or raw bodies, keys in the Authorization header, and
the status, headers and text of every answer, errors included."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from realtime.client import auth_headers


def http(srv, method: str, path: str, body: bytes | dict | None = None, key: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    hdrs = {"content-type": "application/json"} if isinstance(body, dict) else {}
    req = urllib.request.Request(srv.http + path, data=data, method=method,
                                 headers={**hdrs, **auth_headers(key), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def code_of(body: str) -> str | None:
    try:
        return json.loads(body).get("code")
    except (ValueError, AttributeError):
        return None


def new_room(srv, name: str, admin_key: str) -> str:
    """Make room `name` through the admin API; its speaker key."""
    status, _, body = http(srv, "POST", "/v1/rooms", {"title": name, "room": name}, key=admin_key)
    assert status == 201, body
    return json.loads(body)["speaker_key"]

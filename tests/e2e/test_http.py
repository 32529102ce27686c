"""The HTTP surface of a real server: viewer page, health, rooms, no path traversal."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_viewer_page_is_served(server):
    status, body = get(server.http + "/")
    assert status == 200 and b"<realtime-captions" in body and b"/static/widget.js" in body
    status, body = get(server.http + "/static/widget.js")
    assert status == 200 and b"/ws/listen/" in body
    status, body = get(server.http + "/speak")
    assert status == 200 and b"/static/speak.js" in body


async def test_foreign_origins_are_refused_with_4403(server):
    import websockets

    async with websockets.connect(server.url + "/ws/listen/o1", origin="https://evil.example") as ws:
        error = json.loads(await ws.recv())
        assert error["code"] == "origin_not_allowed" and error["seq"] == 0
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 4403
    own = server.http  # a page the server served itself is allowed
    async with websockets.connect(server.url + "/ws/listen/o1", origin=own) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
    request = urllib.request.Request(server.http + "/v1/rooms", headers={"Origin": "https://evil.example"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert "Access-Control-Allow-Origin" not in r.headers  # the browser withholds the answer


def test_health_reports_the_model_and_load(server):
    status, body = get(server.http + "/healthz")
    health = json.loads(body)
    assert status == 200 and health["ready"] is True
    assert health["model"]["name"] == "base" and health["model"]["device"] == "cpu"
    for key in ("speakers", "max_speakers", "listeners", "queue", "lag_s", "decodes", "decode_errors"):
        assert key in health


@pytest.mark.parametrize("path", ["/static/../pyproject.toml", "/static/%2e%2e/pyproject.toml",
                                  "/static/..%2fpyproject.toml", "/static/../../etc/passwd"])
def test_no_path_traversal(server, path):
    status, body = get(server.http + path)
    assert status in (403, 404) and b"[project]" not in body and b"root:" not in body


def test_unknown_room_transcript_is_404_json(server):
    status, body = get(server.http + "/v1/rooms/never-used/transcript")
    assert status == 404 and json.loads(body)["code"] == "no_such_room"

"""Hypothesis strategies for the recorded-lecture section of tests/e2e/test_fuzz.py (`POST /v1/rooms/{room}/upload`):
the room in the path, the key, the Content-Type, `Expect: 100-continue`, the Origin, the query string and the body,
each request labelled with the answer docs/protocol.md ("Recorded lectures") prescribes for what can be judged
before the body is read. What the body itself gets (200 with an NDJSON stream, or 400 `corrupt`, 413, 415
`not_audio`) is the decoder's to say and is checked as one of those.

The server judges a request in this order (realtime/server/upload.py): Host and Origin (the guard middleware),
the room name (400 `bad_room`), the room (404 `no_such_room`), the key (401), a running lecture or upload (409),
the Content-Type (415) and Content-Length (413), the query (400 `bad_message`), then the body."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.e2e.fuzzing.strategies import weighted

# Content types and whether they are refused (415 not_audio: forms and text, which a cross-site page may send
# without a CORS preflight, and JSON); the server compares them lower-cased.
CONTENT_TYPES: dict[str | None, bool] = {
    "audio/wav": False, "audio/x-wav": False, "application/octet-stream": False, "video/mp4": False,
    "AUDIO/WAV": False, "audio/wav; charset=binary": False, None: False, "": False, "image/png": False,
    "text/plain": True, "Text/Plain; charset=utf-8": True, "text/html": True, "multipart/form-data; boundary=x": True,
    "multipart/form-data": True, "application/json": True, "Application/JSON": True,
    "application/x-www-form-urlencoded": True,
}
BAD_ROOMS = ["-lead", "a b", "x" * 65, "ünï", ".dot", "a;b", "a\u00a0b", "~tilde"]
# Query parameters: (key, value, whether it makes the request a 400). `language` is compared as given (no
# lower-casing, unlike a start message); `task` and `language` left empty take their defaults.
QUERY = [
    ("language", "en", False), ("language", "de", False), ("language", "", False), ("language", "EN", True),
    ("language", "xx", True), ("language", "en-US", True), ("language", "auto", True),
    ("task", "transcribe", False), ("task", "translate", False), ("task", "", False), ("task", "summarize", True),
    ("task", "Translate", True),
    ("prompt", "physics", False), ("prompt", "x" * 2000, False), ("prompt", "x" * 2001, True),
    ("prompt", "", False), ("prompt", "é" * 600, False), ("prompt", "\u0000nul", False),
    ("x", "1", False), ("lang", "xx", False), ("language[]", "xx", False), ("Language", "xx", False),
    ("", "", False), ("tasks", "nope", False),
]
# U1, found by this section and fixed: a prompt of at most 2000 characters whose URL-encoded request line passed
# aiohttp's default 8190 bytes (1350 non-ASCII characters will) was a plain-text 400 that never reached the endpoint.
REQUEST_LINE = 32768  # aiohttp's max_line_size on this server (docs/protocol.md, HTTP endpoints): beyond it a
PLAIN = "plain-text 400"  # plain-text 400 from the HTTP layer, before any endpoint (two long prompts at once)
QUERY += [("prompt", "é" * 2000, False), ("prompt", "\u4e2d" * 1500, False), ("prompt", "\U0001f600" * 2000, False)]
# Raw query fragments whose decoding is the server framework's (invalid UTF-8, a lone surrogate spelled in
# UTF-8, a bare key): none of them names a known parameter with a bad value.
RAW_QUERY = ["prompt=%FF%FE", "prompt=%ED%A0%80", "prompt=%E2%80%A8", "language", "&&", "=", "prompt=a%20b%2Bc",
             "x=%ZZ", "prompt=%00"]


@dataclass(frozen=True)
class Upload:
    room: str  # "own", "missing", or "bad:<name>"
    key: str  # "own", "admin", "wrong", "other-room", "none", "basic", "empty"
    content_type: str | None
    expect: bool  # send `Expect: 100-continue`
    origin: str | None  # None, "allowed", "evil"
    query: tuple[tuple[str, str, bool], ...]
    raw_query: tuple[str, ...]
    body: bytes

    def query_string(self) -> str:
        parts = [urllib.parse.urlencode({k: v}, quote_via=urllib.parse.quote) for k, v, _ in self.query]
        return "&".join(parts + list(self.raw_query))

    def first_values(self) -> dict[str, tuple[str, bool]]:
        """What the server reads of each parameter: the first value given."""
        seen: dict[str, tuple[str, bool]] = {}
        for k, v, bad in self.query:
            seen.setdefault(k, (v, bad))
        return seen

    def refusal(self) -> tuple[int, str] | None:
        """The answer the documentation prescribes before the body is read, or None: the body decides."""
        if len(self.query_string()) > REQUEST_LINE - 200:  # the drawn queries are far from the edge either way
            return 400, PLAIN
        if self.origin == "evil":
            return 403, "origin_not_allowed"
        if self.room.startswith("bad:"):
            return 400, "bad_room"
        if self.room == "missing":
            return 404, "no_such_room"
        if self.key in ("none", "basic", "empty"):
            return 401, "key_required"
        if self.key in ("wrong", "other-room"):
            return 401, "bad_key"
        if CONTENT_TYPES[self.content_type]:
            return 415, "not_audio"
        if any(bad for _, bad in self.first_values().values()):
            return 400, "bad_message"
        if not self.body:
            return 400, "corrupt"
        return None


def uploads(files: st.SearchStrategy[bytes], good: st.SearchStrategy[bytes]) -> st.SearchStrategy[Upload]:
    """Requests with bodies from `files` (anything: random bytes, broken WAVs, magic prefixes) and
    from `good` (short valid recordings), twice as often, so that many requests reach the decoder."""
    return st.builds(
        Upload,
        room=weighted((10, st.just("own")), (1, st.just("missing")),
                      (1, st.sampled_from([f"bad:{r}" for r in BAD_ROOMS]))),
        key=weighted((8, st.just("own")), (2, st.just("admin")),
                     (2, st.sampled_from(["wrong", "other-room", "none", "basic", "empty"]))),
        content_type=weighted((4, st.sampled_from(["audio/wav", "application/octet-stream", None])),
                              (1, st.sampled_from(list(CONTENT_TYPES)))),
        expect=st.booleans(),
        origin=weighted((10, st.none()), (1, st.just("allowed")), (1, st.just("evil"))),
        query=st.lists(weighted((1, st.sampled_from([q for q in QUERY if not q[2]])),
                                (1, st.sampled_from(QUERY))), max_size=3).map(tuple),
        raw_query=st.lists(st.sampled_from(RAW_QUERY), max_size=1).map(tuple),
        body=weighted((1, files), (2, good)),
    )

"""A scripted stand-in for an OpenAI-compatible chat-completions endpoint, over real HTTP.

The only test double in the suite, because no real LLM is reachable here. Tests push behaviours (`ok`, `429`,
`500`, `400`, `401`, `malformed`, `stall`, `prose`, `length`: cut off at max_tokens, `fenced`: the ops in a code
fence with text after, `strings`: added bullets as plain strings, `unknown_id`: an update of a bullet the same answer
removed, `answer`: the given `content`) that answer the next requests in order; with no script, it answers valid
notes edits: an added bullet per new transcript segment it was sent (the oldest removed beyond 40), so updates
arrive as real diffs, and caption translations as "[German] " followed by the line.
`refuse` holds the response_format types the endpoint refuses with `refuse_status` (400, as DeepSeek refuses
json_schema; 422 as some older servers do). Every request body is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web


class FakeOpenAI:
    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.inflight = 0  # requests being answered now, and the most at once (the server's concurrency limit)
        self.max_inflight = 0
        self.delay_s = 0.0  # every answer waits this long first (a slow model: lets requests pile up)
        self.refuse: set[str] = set()  # response_format types refused, e.g. {"json_schema"} (DeepSeek)
        self.refuse_status = 400

    def push(self, *behaviours: dict[str, Any] | str) -> None:
        self.script.extend({"kind": b} if isinstance(b, str) else b for b in behaviours)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self.url

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    async def completions(self, request: web.Request) -> web.StreamResponse:
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._answer(request)
        finally:
            self.inflight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"t": time.monotonic(), "body": body})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        wanted = (body.get("response_format") or {}).get("type")
        if wanted in self.refuse:  # DeepSeek's answer to json_schema; the script is not consumed
            return web.json_response({"error": {"message": "This response_format type is unavailable now",
                                                "type": "invalid_request_error", "param": None,
                                                "code": "invalid_request_error"}}, status=self.refuse_status)
        system = body["messages"][0]["content"]
        study = system.startswith("You help students with the study panels")
        if study != bool(self.script and self.script[0]["kind"] == "study"):
            step = {"kind": "ok"}  # the script's next step is for the other kind of request
        else:
            step = self.script.pop(0) if self.script else {"kind": "ok"}
        if study and step["kind"] == "ok":
            # The panels' wording rides along with notes updates: it takes no step of a script written for the
            # notes (a "study" step scripts it), and words every item "[worded] <its sentence>".
            todo = json.loads(body["messages"][-1]["content"])
            return completion(body, json.dumps({
                "terms": [{"id": t["id"], "explanation": f"[worded] {t['sentence'][:100]}"} for t in todo["terms"]],
                "tasks": [{"id": t["id"], "text": f"[worded] {t['sentence'][:100]}", "kind": "reading", "due": "soon"}
                          for t in todo["tasks"]]}))
        kind = step["kind"]
        if kind == "429":
            return web.json_response({"error": {"message": "slow down", "type": "rate_limit"}}, status=429,
                                     headers={"retry-after": str(step.get("retry_after", 1))})
        if kind == "500":
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        if kind == "400":  # a refusal that is not about the response format
            return web.json_response({"error": {"message": "maximum context length exceeded",
                                                "type": "invalid_request_error"}}, status=400)
        if kind == "401":
            return web.json_response({"error": {"message": "bad key", "type": "auth"}}, status=401)
        if kind == "stall":
            await asyncio.sleep(step.get("seconds", 60))
        if kind == "malformed":
            return completion(body, '{"bullets": [{"id": "b1", "text": "unterminated')
        if kind == "prose":
            return completion(body, "Sure! Here are the notes: the lecture is about things.")
        if kind in ("answer", "study"):
            return completion(body, step["content"], step.get("finish_reason", "stop"))
        if kind == "length":
            ops = json.dumps({"ops": ops_for(body)})
            return completion(body, ops[:max(1, len(ops) // 2)], "length")
        if kind == "fenced":
            return completion(body, f"```json\n{json.dumps({'ops': ops_for(body)})}\n```\nThese are the edits.")
        if kind == "strings":
            return completion(body, json.dumps({"ops": [op["text"] for op in ops_for(body) if op["op"] == "add"]}))
        if kind == "unknown_id":
            ops = [{"op": "add", "id": "n1", "text": "x", "refs": [], "parent": None}, {"op": "remove", "id": "n1"},
                   {"op": "update", "id": "n1", "text": "y", "refs": []}]
            return completion(body, json.dumps({"ops": ops}))
        if system.startswith("You write the end-of-lecture summary"):
            return completion(body, SUMMARY)
        if system.startswith("You translate the Markdown summary"):  # the summary, its lines marked
            language = system.split(" into ", 1)[1].split(".", 1)[0]
            marked = [f"{line} [{language}]" if line.strip() else line
                      for line in body["messages"][-1]["content"].splitlines()]
            return completion(body, "\n".join(marked))
        if system.startswith("You translate the live captions"):  # "[German] " + the line, as a marker
            data = json.loads(body["messages"][-1]["content"])
            language, line = data["into"], data["text"]
            return completion(body, json.dumps({"translation": f"[{language}] {line}"}, ensure_ascii=False))
        if system.startswith("You answer a student's question"):
            excerpts = json.loads(body["messages"][-1]["content"])["excerpts"]
            cite = f"[{excerpts[0]['time']}]" if excerpts else ""
            answer = f"The lecture answers this {cite}."
            if body.get("stream"):
                return await stream_completion(request, body, answer)
            return completion(body, answer)
        return completion(body, json.dumps({"ops": ops_for(body)}))


SUMMARY = """# A lecture
**Core topic:** test
## Main points
1. **term**: explanation
## Important details
- none
## Further reading
- None mentioned.
## Conclusion
Done."""


def ops_for(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Edits of the notes a request carries: a bullet added per new segment, the oldest removed beyond 40."""
    data = json.loads(body["messages"][-1]["content"])
    ops: list[dict[str, Any]] = [{"op": "add", "text": f"**Point** {seg['id']}: {seg['text'][:80]}",
                                  "refs": [seg["id"]], "parent": None} for seg in data["transcript"][-40:]]
    over = len(data["bullets"]) + len(ops) - 40
    ops += [{"op": "remove", "id": b["id"]} for b in data["bullets"][:max(0, over)]]
    return ops


async def stream_completion(request: web.Request, body: dict[str, Any], content: str) -> web.StreamResponse:
    """The answer as server-sent events, a few words per chunk, usage in the last chunk."""
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body["model"]}
    words = content.split(" ")
    for i in range(0, len(words), 3):
        piece = " ".join(words[i:i + 3]) + (" " if i + 3 < len(words) else "")
        chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await asyncio.sleep(0.01)
    usage = {"prompt_tokens": 50, "completion_tokens": len(words), "total_tokens": 50 + len(words)}
    await response.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    return response


def completion(body: dict[str, Any], content: str, finish_reason: str = "stop") -> web.Response:
    prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4
    return web.json_response({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content) // 4,
                  "total_tokens": prompt_tokens + len(content) // 4},
    })

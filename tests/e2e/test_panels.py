"""The study panels on speech through the real server, offline: a short lecture that defines a term and gives an
assignment out loud (spoken with espeak-ng, recognised by the real model) fills the glossary, the tasks and the
outline; a late joiner gets every panel; the exports carry them; catch me up answers as JSON and as a stream."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from realtime.client import listen, stream_audio
from testbed.speech import make_lecture, speak

pytestmark = pytest.mark.slow

SENTENCES = {
    "p1": "Today we talk about entropy and the second law of thermodynamics.",
    "p2": "Entropy is a measure of how many arrangements a system can have.",
    "p3": "The entropy of an isolated system never decreases.",
    "p4": "For Thursday, please read chapter four of the textbook.",
    "p5": "A heat engine turns some of the heat into work.",
}


def post(server, path: str, accept: str = "application/json") -> tuple[int, str, str]:
    req = urllib.request.Request(server.http + path, data=b"", method="POST", headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def latest_panels(events: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for e in events:
        if e["type"] == "panel":
            out[e["panel"]] = e
    return out


async def test_panels_fill_reach_late_joiners_and_are_exported(server, tmp_path):
    clips = speak(SENTENCES, tmp_path / "speech")
    lecture = make_lecture(clips, lead_s=0.5)
    result = await stream_audio(server.url, "panels-1", lecture.audio, speed=0, language="en")
    panels = latest_panels(result.events)
    assert set(panels) == {"terms", "tasks", "outline"}, [e["type"] for e in result.events]
    final_ids = {f["id"] for f in result.finals}
    for event in panels.values():
        assert event["source"] == "extractive" and event["items"]
        assert all(item["refs"] and set(item["refs"]) <= final_ids for item in event["items"])
    tasks = panels["tasks"]["items"]
    assert len(tasks) == 1 and tasks[0]["kind"] == "reading" and "thursday" in tasks[0]["due"].lower(), tasks
    said = next(f for f in result.finals if "chapter" in f["text"].lower())
    assert tasks[0]["refs"] == [said["id"]] and tasks[0]["start"] == said["start"]
    terms = {t["term"].lower(): t for t in panels["terms"]["items"]}
    assert "entropy" in terms and terms["entropy"]["text"].lower().startswith("entropy is a measure"), terms
    assert [s["start"] for s in panels["outline"]["items"]] == [result.finals[0]["start"]]

    late = await listen(server.url, "panels-1", idle=2)
    assert {k: v["items"] for k, v in latest_panels(late.events).items()} == {
        k: v["items"] for k, v in panels.items()}

    summary = next(e for e in result.events if e["type"] == "summary")["markdown"]
    assert "## Key terms" in summary and "## Assignments and deadlines" in summary and "## Outline" in summary
    with urllib.request.urlopen(server.http + "/v1/rooms/panels-1/export?format=json", timeout=30) as r:
        doc = json.loads(r.read())
    assert doc["panels"]["tasks"] == tasks

    status, media, body = post(server, "/v1/rooms/panels-1/catchup")
    recap = json.loads(body)
    assert status == 200 and media.startswith("application/json")
    assert recap["source"] == "extractive" and recap["finals"] == len(result.finals)
    assert recap["covered"] == {"from": result.finals[0]["start"], "to": result.finals[-1]["end"]}
    assert "**Right now:**" in recap["markdown"] and "**Tasks given:**" in recap["markdown"]
    assert isinstance(recap["started_at"], float)

    status, media, body = post(server, "/v1/rooms/panels-1/catchup", accept="text/event-stream")
    assert status == 200 and media.startswith("text/event-stream")
    events = [(block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1].removeprefix("data: ")))
              for block in body.strip().split("\n\n")]
    assert events[0][0] == "meta" and events[0][1]["cached"] is True  # the same recap: no second one made
    assert events[-1] == ("done", {"source": "extractive", "markdown": recap["markdown"]})


async def test_catch_up_in_a_missing_room(server):
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as err:
        post(server, "/v1/rooms/no-such-room/catchup")
    assert err.value.code == 404 and json.loads(err.value.read())["code"] == "no_such_room"


async def test_the_viewer_shows_the_panels_catches_up_and_links_to_the_captions(server, tmp_path):
    from testbed.server import ARTIFACTS
    from tests.e2e.browser import ConsoleErrors, chromium, wait_js

    clips = speak(SENTENCES, tmp_path / "speech")
    lecture = make_lecture(clips, lead_s=0.5)
    errors = ConsoleErrors()
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1300, "height": 800})
        errors.watch(page, "viewer")
        await page.goto(f"{server.http}/?room=panels-ui")
        await page.locator("realtime-captions >> text=connected").wait_for()
        await stream_audio(server.url, "panels-ui", lecture.audio, speed=0, language="en")
        for section in ("outline", "terms", "tasks"):  # filled live, during the lecture
            await page.locator(f"realtime-captions .sec.{section} li").first.wait_for()
        task = await page.locator("realtime-captions .sec.tasks li").first.inner_text()
        assert task.startswith("0:") and "reading" in task.lower() and "thursday" in task.lower(), task
        assert re.search(r"chapter (4|four)", task.lower()), task
        terms = await page.locator("realtime-captions .sec.terms li").all_inner_texts()
        assert any(re.match(r"\d+:\d\d\s*entropy — entropy is a measure", t.lower()) for t in terms), terms

        await page.click("realtime-captions .catchup .ask")  # streamed into the page
        await wait_js(page, "document.querySelector('realtime-captions').shadowRoot"
                            ".querySelector('.recap').dataset.source === 'extractive'")
        recap = await page.locator("realtime-captions .recap").inner_text()
        assert recap.startswith("covering 0:") and "Right now:" in recap and "Tasks given:" in recap, recap

        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "viewer-panels.png"))  # docs/viewer.png comes from here
        await page.locator("realtime-captions .sec.tasks .t").first.click()  # its time link: the caption it came from
        flashed = page.locator("realtime-captions .final.flash")
        await flashed.wait_for()
        assert "chapter" in (await flashed.inner_text()).lower()

        await page.reload()  # a late joiner sees every panel
        for section in ("outline", "terms", "tasks"):
            await page.locator(f"realtime-captions .sec.{section} li").first.wait_for()
        assert await page.locator("realtime-captions .sec.terms li").all_inner_texts() == terms

        await page.set_viewport_size({"width": 390, "height": 844})  # a phone: the study column under the captions
        await page.screenshot(path=str(ARTIFACTS / "viewer-panels-phone.png"))

        # The widget's modes: a panel alone, or captions and one panel.
        widget = page.locator("realtime-captions")
        await widget.evaluate("(e) => e.setAttribute('mode', 'tasks')")
        assert await page.locator("realtime-captions .captions").is_hidden()
        assert await page.locator("realtime-captions .sec.tasks").is_visible()
        for hidden in ("terms", "outline", "bullets-sec", "catchup"):
            assert await page.locator(f"realtime-captions .sec.{hidden}").is_hidden(), hidden
        await widget.evaluate("(e) => e.setAttribute('mode', 'captions terms')")
        assert await page.locator("realtime-captions .captions").is_visible()
        assert await page.locator("realtime-captions .sec.terms").is_visible()
        assert await page.locator("realtime-captions .sec.tasks").is_hidden()
    assert errors == []

"""LLM notes as edits: the ops an answer may hold (near-misses forgiven, wrong structure rejected with a reason), how
they apply to the current bullets, what an answer may cost (max_tokens from the notes and the new text), and the
notes service counting every rejection by reason, against the scripted endpoint."""

from __future__ import annotations

import json

import pytest

from realtime.core.protocol import UNNUMBERED, Final
from realtime.core.records import RoomRecord
from realtime.notes.llm import LLMClient, LLMConfig
from realtime.notes.prompt import SYSTEM_PROMPT, answer_tokens, build_request, estimate_tokens, parse_ops
from realtime.notes.service import NotesService
from realtime.notes.state import MAX_BULLETS, MAX_OPS, MAX_TEXT, REJECTIONS, Bullet, InvalidNotes, NotesState, Op
from realtime.server.rooms import Rooms
from realtime.storage.sqlite import SQLiteStore
from tests.fake_openai import FakeOpenAI


def reason_of(fn, *args, **kw) -> str:
    with pytest.raises(InvalidNotes) as caught:
        fn(*args, **kw)
    assert caught.value.reason in REJECTIONS
    return caught.value.reason


def state_with(*bullets: Bullet, source: str = "llm") -> NotesState:
    state = NotesState()
    state.apply(list(bullets), source, known_segments=100)
    return state


# ---------------------------------------------------------------- parsing

def test_ops_parse_to_their_kinds() -> None:
    ops = parse_ops(json.dumps({"ops": [
        {"op": "add", "text": " **ATP** is made ", "refs": [3, 4], "parent": "b2"},
        {"op": "update", "id": "b1", "text": "corrected", "refs": []},
        {"op": "remove", "id": "b7"},
    ]}), known_segments=5)
    assert ops == [Op("add", None, "**ATP** is made", (3, 4), "b2"), Op("update", "b1", "corrected"),
                   Op("remove", "b7")]
    assert parse_ops('{"ops": []}', 0) == []


@pytest.mark.parametrize("answer", [
    '```json\n{"ops": [{"op": "add", "text": "x", "refs": [0], "parent": null}]}\n```',  # a fence
    'Here are the edits:\n{"ops": [{"op": "add", "text": "x", "refs": [0], "parent": null}]}',  # a preface
    '{"ops": [{"op": "add", "text": "x", "refs": [0], "parent": null}]}\nI added one bullet. {"note": 1}',  # text after
    '{"ops": [{"op": "add", "text": "x", "refs": [0]}]}',  # an add without its parent
])
def test_harmless_near_misses_are_accepted(answer: str) -> None:
    assert [(op.kind, op.text) for op in parse_ops(answer, known_segments=1)] == [("add", "x")]


def test_a_bullet_given_as_a_plain_string_is_an_addition() -> None:
    ops = parse_ops('{"ops": ["**Entropy** grows", {"op": "remove", "id": "b1"}]}', known_segments=1)
    assert ops == [Op("add", None, "**Entropy** grows"), Op("remove", "b1")]


@pytest.mark.parametrize(("answer", "reason"), [
    ("", "not_json"),
    ("I cannot help with that.", "not_json"),
    ('{"ops": [{"op": "add", "text": "cut off', "not_json"),
    ('[{"op": "add", "text": "x", "refs": [0], "parent": null}]', "bad_structure"),  # no {"ops": ...}
    ('{"ops": {"op": "add"}}', "bad_structure"),
    ('{"ops": [], "bullets": []}', "bad_structure"),
    ('{"ops": [{"op": "rewrite", "id": "b1", "text": "x"}]}', "bad_structure"),
    ('{"ops": [{"text": "x", "refs": [0]}]}', "bad_structure"),  # no op
    ('{"ops": [{"op": "add", "text": "x", "refs": [0], "parent": null, "why": "leak"}]}', "bad_structure"),
    ('{"ops": [{"op": "add", "text": 7, "refs": [0], "parent": null}]}', "bad_structure"),
    ('{"ops": [{"op": "add", "text": "x", "refs": [true], "parent": null}]}', "bad_structure"),
    ('{"ops": [{"op": "add", "text": "x", "refs": 0, "parent": null}]}', "bad_structure"),
    ('{"ops": [{"op": "add", "text": "x", "refs": [0], "parent": 3}]}', "bad_structure"),
    ('{"ops": [{"op": "update", "text": "x", "refs": [0]}]}', "bad_structure"),  # no id
    ('{"ops": [{"op": "update", "id": "b1", "refs": [0]}]}', "bad_structure"),  # no text
    ('{"ops": [{"op": "remove", "id": 1}]}', "bad_structure"),
    ('{"ops": [{"op": "add", "text": "x", "refs": [5], "parent": null}]}', "bad_refs"),
    ('{"ops": [{"op": "update", "id": "b1", "text": "x", "refs": [-1]}]}', "bad_refs"),
    ('{"ops": [{"op": "add", "text": "   ", "refs": [0], "parent": null}]}', "empty"),
    ('{"ops": [""]}', "empty"),
    ('{"ops": ["' + "x" * (MAX_TEXT + 1) + '"]}', "too_long"),
    (json.dumps({"ops": ["x"] * (MAX_OPS + 1)}), "too_many"),
])
def test_wrong_answers_are_rejected_with_a_reason(answer: str, reason: str) -> None:
    assert reason_of(parse_ops, answer, known_segments=5) == reason


# ---------------------------------------------------------------- applying

A, B, C = Bullet("b1", "first", (0,)), Bullet("b2", "second", (1,)), Bullet("b3", "sub of first", (1,), "b1")


def test_additions_get_the_next_free_ids_and_their_place() -> None:
    state = state_with(A, C, B)
    change = state.apply_ops([Op("add", text="end", refs=(2,)), Op("add", text="another sub", refs=(2,), parent="b1"),
                              Op("add", text="sub of sub", refs=(2,), parent="b3")], "llm", known_segments=3)
    assert change is not None and change.version == 2
    assert [(b.id, b.parent) for b in state.bullets] == [("b1", None), ("b3", "b1"), ("b6", "b3"), ("b5", "b1"),
                                                           ("b2", None), ("b4", None)]
    assert (change.added, change.changed, change.removed) == (["b6", "b5", "b4"], [], [])
    assert [b.to_dict() for b in change.bullets] == [b.to_dict() for b in state.bullets]  # the full list goes out


def test_updates_and_removes_report_what_changed() -> None:
    state = state_with(A, C, B)
    change = state.apply_ops([Op("update", "b2", "second, corrected", (3,)), Op("remove", "b1")], "llm", 4)
    assert change is not None
    assert state.bullets == [Bullet("b3", "sub of first", (1,), None), Bullet("b2", "second, corrected", (1, 3))]
    assert (change.added, change.changed, change.removed) == ([], ["b3", "b2"], ["b1"])  # b3 moved up
    assert state.apply_ops([Op("update", "b2", "second, corrected")], "llm", 4) is None  # no change, no version
    assert state.apply_ops([], "llm", 4) is None and state.version == 2


def test_removed_ids_are_not_given_out_again() -> None:
    state = state_with(A, B)
    state.apply_ops([Op("remove", "b2")], "llm", 2)
    change = state.apply_ops([Op("add", text="new", refs=(1,))], "llm", 2)
    assert change is not None and change.added == ["b3"]


def test_an_addition_named_by_the_model_may_be_a_later_parent() -> None:
    state = state_with(A)
    change = state.apply_ops([Op("add", "topic", "a topic", (1,)), Op("add", text="its point", refs=(1,),
                                                                       parent="topic"),
                              Op("update", "topic", "the topic")], "llm", 2)
    assert change is not None and [(b.id, b.text, b.parent) for b in state.bullets] == [
        ("b1", "first", None), ("b2", "the topic", None), ("b3", "its point", "b2")]


def test_starting_over_from_extractive_notes() -> None:
    state = state_with(Bullet("x0.0", "extracted", (0,)), source="extractive")
    change = state.apply_ops([Op("add", text="llm bullet", refs=(0,))], "llm", 1, base=[])
    assert change is not None and (change.source, change.added, change.removed) == ("llm", ["b1"], ["x0.0"])


@pytest.mark.parametrize(("ops", "reason"), [
    ([Op("update", "b9", "x")], "unknown_id"),
    ([Op("remove", "b9")], "unknown_id"),
    ([Op("add", text="x", parent="b9")], "unknown_id"),
    ([Op("remove", "b2"), Op("update", "b2", "x")], "unknown_id"),  # removed before
    ([Op("add", text="x", refs=(7,))], "bad_refs"),  # parse_ops checks refs too; this is the state's own check
    ([Op("add", text="x")] * (MAX_BULLETS - 1), "too_many"),
    ([Op("add", text="x" * (MAX_TEXT + 1))], "too_long"),
])
def test_ops_that_would_corrupt_the_notes_leave_them_alone(ops: list[Op], reason: str) -> None:
    state = state_with(A, B)
    assert reason_of(state.apply_ops, ops, "llm", known_segments=2) == reason
    assert state.bullets == [A, B] and state.version == 1


def test_a_whole_list_is_still_applied_and_checked() -> None:  # the extractive engine's proposals
    state = NotesState()
    assert reason_of(state.apply, [Bullet("a", "x"), Bullet("a", "y")], "extractive", 1) == "duplicate_id"
    assert reason_of(state.apply, [Bullet("a", " ")], "extractive", 1) == "empty"
    assert state.apply([Bullet("a", "x", (0,))], "extractive", 1) is not None


# ---------------------------------------------------------------- what an update costs

def finals(n: int, words: int = 18) -> list[Final]:
    return [Final(i, i, i * 6.0, i * 6.0 + 5, " ".join(["mitochondria"] * words)) for i in range(n)]


FORTY = [Bullet(f"b{i}", "**Oxidative phosphorylation** makes most of the cell's ATP in the mitochondria", (i,))
         for i in range(1, 41)]


def test_the_request_splits_new_text_from_context_and_names_the_next_id() -> None:
    req = build_request(FORTY, finals(60), first_new=55, budget_tokens=3000, next_id="b41")
    data = json.loads(req.messages[1]["content"])
    assert [s["id"] for s in data["transcript"]] == list(range(55, 60))
    assert data["context"] and all(s["id"] < 55 for s in data["context"])
    assert data["next_id"] == "b41" and data["bullets"][0] == {"id": "b1", "text": FORTY[0].text}
    assert req.tokens <= 3000 and req.messages[0]["content"] == SYSTEM_PROMPT
    fresh = json.loads(build_request([], finals(6), first_new=4, budget_tokens=3000).messages[1]["content"])
    assert [s["id"] for s in fresh["transcript"]] == list(range(6)) and fresh["context"] == []  # no notes yet


def test_max_tokens_follows_the_notes_and_the_new_text() -> None:
    lecture = finals(200)
    small = build_request([], lecture[:2], 0, budget_tokens=3000).max_tokens
    few_new = build_request(FORTY, lecture, 195, budget_tokens=3000).max_tokens
    many_new = build_request(FORTY, lecture, 190, budget_tokens=3000).max_tokens
    short_notes = build_request(FORTY[:5], lecture, 195, budget_tokens=3000).max_tokens
    assert 256 <= small <= 320 and short_notes < few_new < many_new < 1500  # a short update reserves little
    assert build_request(FORTY, lecture, 100, budget_tokens=8000, max_tokens=900).max_tokens == 900  # the cap
    assert answer_tokens([], [], cap=100) == 100


def test_an_update_costs_what_changed_not_the_length_of_the_notes() -> None:
    """Forty bullets and two new segments: the edits are a small fraction of the whole list the old format asked
    for (which did not even fit the old fixed 1500), and they fit the sized max_tokens with room to spare."""
    from tests.fake_openai import ops_for

    req = build_request(FORTY, finals(60), first_new=58, budget_tokens=3000, next_id="b41")
    edits = json.dumps({"ops": ops_for({"messages": req.messages})})
    rewrite = json.dumps({"bullets": [b.to_dict() for b in FORTY + [Bullet("b41", "x" * 80, (58,)),
                                                                     Bullet("b42", "x" * 80, (59,))]]})
    assert estimate_tokens(edits) * 10 < estimate_tokens(rewrite)
    assert estimate_tokens(rewrite) > 1500 > req.max_tokens > 2 * estimate_tokens(edits)


# ---------------------------------------------------------------- the service counts rejections

@pytest.fixture
async def fake():
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


async def test_rejections_are_counted_by_reason_and_the_notes_stay(fake: FakeOpenAI) -> None:
    store = SQLiteStore(":memory:")
    store.add_room(RoomRecord("r"))
    rooms = Rooms(store)
    room = rooms.find("r")
    assert room is not None
    llm = LLMClient(LLMConfig("fake", fake.url, "k", timeout_s=2.0, retries=0, backoff_s=0.01))
    service = NotesService(rooms, llm, notes_min_words=1)
    n = 0

    async def update(step: str | None = None) -> dict | None:
        nonlocal n
        if step:
            fake.push(step)
        room.publish(Final(UNNUMBERED, n, n * 3.0, n * 3.0 + 2, f"The Krebs cycle step {n} releases carbon dioxide."))
        n += 1
        await service.update(room)
        latest = room.latest("notes")
        return json.loads(latest) if latest else None

    first = await update("unknown_id")  # no LLM notes yet: rejected, and extractive notes stand in
    assert first is not None and first["source"] == "extractive"
    assert service.rejected["unknown_id"] == 1 and service.rejected_in(room) == 1
    ok = await update()
    assert ok is not None and ok["source"] == "llm" and [b["id"] for b in ok["bullets"]] == ["b1", "b2"]
    for step, reason in (("unknown_id", "unknown_id"), ("length", "length"), ("malformed", "not_json"),
                         ("prose", "not_json")):
        assert await update(step) == ok  # the LLM's notes stay as they were
        assert service.rejected[reason] >= 1
    assert service.rejected == {**dict.fromkeys(REJECTIONS, 0), "unknown_id": 2, "length": 1, "not_json": 2}
    assert service.rejected_in(room) == 5 and service.of(room).last_rejection == "not_json"
    fenced = await update("fenced")  # near-misses are no rejection
    strings = await update("strings")
    assert fenced is not None and strings is not None
    assert strings["version"] == fenced["version"] + 1 == ok["version"] + 2
    assert strings["added"] == [f"b{len(fenced['bullets']) + 1}"] and service.rejected_in(room) == 5
    sent = [r["body"] for r in fake.requests]
    assert all(b["response_format"]["type"] == "json_schema" for b in sent)
    assert all(256 <= b["max_tokens"] < 1500 for b in sent)  # sized, not the configured maximum
    await llm.close()


def test_additions_without_refs_cite_the_new_segment_they_share_words_with() -> None:
    from realtime.core.protocol import Final
    from realtime.notes.prompt import ground

    new = [Final(7, 7, 30.0, 34.0, "The Carnot cycle bounds the efficiency of heat engines."),
           Final(8, 8, 34.0, 38.0, "Entropy of an isolated system never decreases.")]
    ops = [Op("add", text="**Entropy** never decreases"), Op("add", text="unrelated words here"),
           Op("add", text="Carnot bound", refs=(2,)), Op("remove", "b1")]
    grounded = ground(ops, new)
    assert [op.refs for op in grounded] == [(8,), (8,), (2,), ()]  # best overlap; else the newest; given refs stay
    assert ground(ops, []) == ops


def test_an_answer_without_a_time_gets_the_times_of_its_excerpts() -> None:
    from realtime.core.protocol import Final
    from realtime.notes.summary import cite_times

    excerpts = [Final(3, 3, 75.0, 80.0, "b"), Final(1, 1, 12.0, 15.0, "a")]
    assert cite_times("Forty percent.", excerpts) == "Forty percent. [0:12, 1:15]"
    assert cite_times("Forty percent [1:15].", excerpts) == "Forty percent [1:15]."
    assert cite_times("Not covered.", []) == "Not covered."

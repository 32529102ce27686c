"""LLM notes as edits: the ops an answer may hold (near-misses forgiven, wrong structure rejected with a reason), how
they apply to the current bullets, what an answer may cost (max_tokens from the notes and the new text), and the
notes service counting every rejection by reason, against the scripted endpoint."""

from __future__ import annotations

import json

import pytest

from realtime.core.protocol import UNNUMBERED, Final
from realtime.core.records import RoomRecord
from realtime.notes.llm import LLMClient, LLMConfig
from realtime.notes.prompt import (
    CONTEXT_TOKENS,
    EDITABLE_BULLETS,
    SYSTEM_PROMPT,
    NotesRequest,
    answer_tokens,
    build_request,
    complete_ops,
    estimate_tokens,
    parse_ops,
    reconcile,
    relevant,
)
from realtime.notes.service import NotesService
from realtime.notes.state import MAX_BULLETS, MAX_OPS, MAX_TEXT, REJECTIONS, Bullet, InvalidNotes, NotesState, Op
from realtime.notes.summary import fit_bullets, summary_request
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


def test_an_answer_cut_off_keeps_the_ops_it_finished() -> None:
    cut = ('```json\n{"ops": [{"op": "add", "text": "**Entropy** grows", "refs": [0], "parent": null}, '
           '{"op": "remove", "id": "b1"}, {"op": "add", "text": "The second law says that heat')
    assert complete_ops(cut, known_segments=1) == [Op("add", None, "**Entropy** grows", (0,)), Op("remove", "b1")]
    assert complete_ops('{"ops": [{"op": "add", "text": "cut', 1) == []
    assert complete_ops('{"bullets": [{"id": "b1", "text": "x"}, {"id": "b2"', 1) == []  # not the ops shape
    with pytest.raises(InvalidNotes):  # a finished op that is bad is bad, cut off or not
        complete_ops('{"ops": [{"op": "rewrite", "id": "b1"}, {"op": "add"', 1)


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
    ('{"ops": [{"op": "add", "text": "   ", "refs": [0], "parent": null}]}', "empty"),
    ('{"ops": [""]}', "empty"),
    (json.dumps({"ops": ["x"] * (MAX_OPS + 1)}), "too_many"),
])
def test_wrong_answers_are_rejected_with_a_reason(answer: str, reason: str) -> None:
    assert reason_of(parse_ops, answer, known_segments=5) == reason


def test_a_wrong_citation_or_an_over_long_bullet_costs_the_citation_or_the_tail_not_the_update() -> None:
    """The 1.5B cited segments past the transcript and copied 400-character paragraphs: 2 of 17 answers lost."""
    ops = parse_ops('{"ops": [{"op": "add", "text": "x", "refs": [5, 1, -1], "parent": null},'
                    '{"op": "update", "id": "b1", "text": "y", "refs": [9]}]}', known_segments=5)
    assert [op.refs for op in ops] == [(1,), ()]
    long = "word " * 150
    (op,) = parse_ops(json.dumps({"ops": [long]}), known_segments=5)
    assert len(op.text) <= MAX_TEXT and op.text.endswith("word…") and long.startswith(op.text[:-1])
    (op,) = parse_ops(json.dumps({"ops": ["x" * 1000]}), known_segments=5)  # no space to cut at
    assert len(op.text) == MAX_TEXT


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
    ([Op("add", text="x")] * (MAX_OPS + 1), "too_many"),
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
    assert data["next_id"] == "b41" and data["bullets"][0] == {"id": "b33", "text": FORTY[32].text}
    assert len(data["bullets"]) == EDITABLE_BULLETS and data["earlier_bullets"] == 32  # the latest ones only
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
    cut = json.dumps({"ops": [{"op": "add", "text": "Carbon dioxide leaves the cycle", "refs": [n], "parent": None},
                              {"op": "add", "text": "and then the cycle", "refs": [n], "parent": None}]})
    salvaged = await update({"kind": "answer", "content": cut[:-30], "finish_reason": "length"})
    assert salvaged is not None and salvaged["version"] == strings["version"] + 1 and service.salvaged == 1
    assert salvaged["bullets"][-1]["text"] == "Carbon dioxide leaves the cycle" and service.rejected_in(room) == 5
    sent = [r["body"] for r in fake.requests]
    assert all(b["response_format"]["type"] == "json_schema" for b in sent)
    notes_calls = [b for b in sent if b["messages"][0]["content"].startswith("You keep the live notes")]
    assert all(256 <= b["max_tokens"] < 1500 for b in notes_calls)  # sized, not the configured maximum
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


def test_notes_stop_at_the_bullet_cap() -> None:
    state = state_with(*(Bullet(f"b{i}", f"point {i}", (0,)) for i in range(1, MAX_BULLETS + 1)))
    assert reason_of(state.apply_ops, [Op("add", text="one more", refs=(0,))], "llm", known_segments=1) == "too_many"
    assert len(state.bullets) == MAX_BULLETS


def test_an_update_in_the_90th_minute_costs_what_one_in_the_5th_does() -> None:
    """Only the latest bullets and a little context are sent: the prompt does not grow with the lecture."""
    def request(minute: int) -> NotesRequest:
        finals = [Final(i, i, i * 6.0, i * 6.0 + 5, f"segment {i} about entropy and heat engines, carnot cycles")
                  for i in range(minute * 10)]
        bullets = [Bullet(f"b{i}", f"**Point** number {i} of the lecture so far", (i,)) for i in range(minute * 2)]
        return build_request(bullets, finals, first_new=len(finals) - 8, budget_tokens=3000)

    early, late = request(5), request(90)
    assert late.tokens <= early.tokens * 1.1  # longer ids and times only
    data = json.loads(late.messages[1]["content"])
    assert len(data["bullets"]) == EDITABLE_BULLETS and data["earlier_bullets"] == 180 - EDITABLE_BULLETS
    assert data["bullets"][-1]["id"] == "b179" and [s["id"] for s in data["transcript"]] == list(range(892, 900))
    assert 0 < len(data["context"]) and data["context"][-1]["id"] == 891
    assert sum(estimate_tokens(json.dumps(s)) + 1 for s in data["context"]) <= CONTEXT_TOKENS
    assert late.max_tokens <= early.max_tokens * 1.1


def test_the_summary_gets_the_notes_of_a_long_lecture_within_half_its_budget() -> None:
    bullets = [Bullet(f"b{i}", f"**Point** {i} " + "detail " * 12, (i,), f"b{i - 1}" if i % 3 else None)
               for i in range(150)]
    assert len(fit_bullets(bullets[:6], 1000)) == 6  # all, with their sub-points, when they fit
    fitted = fit_bullets(bullets, 1000)
    assert 0 < sum(estimate_tokens(b["text"]) + 12 for b in fitted) <= 1000
    assert fitted[0]["id"] == "b0" and int(fitted[-1]["id"][1:]) > 100  # spread across the lecture
    assert all("parent" not in b for b in fitted)  # only top-level bullets, so no parent is left dangling
    messages = summary_request([Final(i, i, i * 6.0, i * 6.0 + 5, "the end matters") for i in range(400)], bullets,
                               budget_tokens=6000, glossary="", language="en")
    assert json.loads(messages[1]["content"])["transcript"]  # the transcript's end still fits


def test_id_slips_are_mended_not_rejected() -> None:
    """The 0.5B 'updates' the bullet it was told to add and removes bullets that are not there (6 of its 70 answers
    in the 90-minute replay were lost to unknown_id before)."""
    ops = [Op("update", "b3", "new point", (1,)), Op("remove", "b9"), Op("add", "x1", "sub", (1,), parent="b7"),
           Op("add", "x2", "kept", (1,)), Op("update", "x2", "kept, better"), Op("update", "b1", "changed")]
    mended = reconcile(ops, [A, B])
    assert mended == [Op("add", "b3", "new point", (1,)), Op("add", "x1", "sub", (1,)), Op("add", "x2", "kept", (1,)),
                      Op("update", "x2", "kept, better"), Op("update", "b1", "changed")]
    state = state_with(A, B)
    change = state.apply_ops(mended, "llm", known_segments=2)
    assert change is not None and [b.text for b in state.bullets][-3:] == ["new point", "sub", "kept, better"]


def test_edits_unrelated_to_the_transcript_or_repeated_are_dropped() -> None:
    window = ["The Carnot engine runs between a hot and a cold reservoir.", "Its efficiency is one minus Tc over Th."]
    example = "**Mitochondria** make most of the cell's energy (**ATP**) by cellular respiration"
    ops = [Op("add", text=example), Op("add", text="**Carnot efficiency**: 1 - Tc/Th"),
           Op("add", text="**carnot efficiency**:  1 - Tc/Th"), Op("update", "b1", "Mitochondria again"),
           Op("add", text="A **reservoirs** pair drives the engine"), Op("remove", "b2")]
    kept = relevant(ops, [A, B], window)
    assert [op.text for op in kept] == ["**Carnot efficiency**: 1 - Tc/Th", "A **reservoirs** pair drives the engine",
                                        ""]
    assert relevant([Op("add", text=A.text)], [A], [A.text]) == []  # a bullet the notes already have


def test_edits_that_would_empty_the_notes_are_refused() -> None:
    state = state_with(Bullet("b1", "**Entropy** grows", (1,)))
    assert reason_of(state.apply_ops, [Op("remove", "b1")], "llm", 2) == "empties"
    assert [b.id for b in state.bullets] == ["b1"]  # as they were
    change = state.apply_ops([Op("remove", "b1"), Op("add", text="**Heat** flows downhill", refs=(2,))], "llm", 3)
    assert change is not None and [b.text for b in change.bullets] == ["**Heat** flows downhill"]

"""`realtime notes TRANSCRIPT`: transcripts made elsewhere read back as finals (plain text, this project's JSON,
SRT and VTT), and the notes and summary a room would have made of them (extractive here; the LLM path is the live
notes' own, tested with them)."""

from __future__ import annotations

import json

import pytest

from realtime.cli import main
from realtime.core.transcript_in import TranscriptError, guess_format, parse

SRT = """1
00:00:01,000 --> 00:00:04,500
The first law says energy is conserved.

2
00:01:02,250 --> 00:01:06,000
<i>A heat engine</i> turns heat
into work, never all of it.
"""
VTT = "WEBVTT\n\nNOTE made elsewhere\n\n00:01.000 --> 00:04.000\n今天我们讲梯度下降。\n\n" \
      "1:00:05.000 --> 1:00:09.000\n学习率是梯度下降里最重要的超参数。\n"


def test_each_format_gives_numbered_timed_finals() -> None:
    srt = parse(SRT, "srt")
    assert [(f.id, f.start, f.end, f.text) for f in srt] == [
        (0, 1.0, 4.5, "The first law says energy is conserved."),
        (1, 62.25, 66.0, "A heat engine turns heat into work, never all of it.")]
    vtt = parse(VTT, "vtt")
    assert [(f.start, f.text) for f in vtt] == [(1.0, "今天我们讲梯度下降。"),
                                                (3605.0, "学习率是梯度下降里最重要的超参数。")]
    export = json.dumps({"room": "r", "finals": [{"type": "final", "id": 7, "start": 2.0, "end": 3.5, "text": "Hi.",
                                                  "language": "en", "words": []}], "text": "Hi."})
    assert [(f.id, f.start, f.end, f.text, f.language) for f in parse(export, "json")] == [(0, 2.0, 3.5, "Hi.", "en")]
    lines = parse("# Title: x\nOne two three four five six.\n\n第二行有十个汉字左右吧。\n", "txt")
    assert [f.text for f in lines] == ["One two three four five six.", "第二行有十个汉字左右吧。"]
    assert lines[0].start == 0.0 and lines[1].start > lines[0].end  # timed by the speaking rate, in order
    assert [guess_format("a.srt", ""), guess_format("x", VTT), guess_format("x", "{}"), guess_format("x", SRT),
            guess_format("notes", "plain words")] == ["srt", "vtt", "json", "srt", "txt"]


@pytest.mark.parametrize(("text", "fmt", "message"), [
    ("", "txt", "no text"), ("{", "json", "not valid JSON"), ('{"finals": 3}', "json", "expected"),
    ('[{"start": 1}]', "json", "'text'"), ("WEBVTT\n", "vtt", "no text"), ("x", "docx", "unknown format")])
def test_unusable_transcripts_say_why(text: str, fmt: str, message: str) -> None:
    with pytest.raises(TranscriptError, match=message):
        parse(text, fmt)


def test_the_command_writes_notes_and_summary(tmp_path, capsys) -> None:
    lecture = tmp_path / "thermo.srt"
    cues = ["The Carnot engine is the most efficient heat engine between two reservoirs.",
            "Its efficiency is one minus the cold temperature over the hot temperature.",
            "Entropy is the heat exchanged reversibly divided by the absolute temperature.",
            "In an isolated system the total entropy never decreases, which is the second law.",
            "A refrigerator is a heat engine run backwards, paid for with work."]
    lecture.write_text("\n".join(f"{i + 1}\n00:0{i}:00,000 --> 00:0{i}:05,000\n{c}\n" for i, c in enumerate(cues)))
    assert main(["notes", str(lecture)]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Notes\n")
    assert "# thermo: " in md and "## Main points" in md  # the summary, titled after the file
    assert "## Key terms" in md and "- **entropy**: Entropy is the heat exchanged" in md  # and the panels
    out = tmp_path / "notes.json"
    assert main(["notes", str(lecture), "--format", "json", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["finals"] == 5 and data["bullets"] and data["sources"] == {"notes": "extractive",
                                                                          "summary": "extractive"}
    terms = {t["term"]: t for t in data["panels"]["terms"]}
    assert terms["entropy"]["refs"] == [2] and terms["entropy"]["start"] == 120.0  # first said in cue 3, at 2:00
    assert [s["start"] for s in data["panels"]["outline"]] == [0.0] and data["panels"]["tasks"] == []
    for b in data["bullets"]:  # cue i starts at minute i: each bullet links to the time of the cue it cites
        assert set(b["refs"]) <= {0, 1, 2, 3, 4} and f"- {b['text']} [{b['refs'][0]}:00]" in md, (b, md)
    (tmp_path / "empty.txt").write_text("\n\n")
    assert main(["notes", str(tmp_path / "empty.txt")]) == 2
    assert "no text found" in capsys.readouterr().err

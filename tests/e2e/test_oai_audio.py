"""OpenAI's speech-to-text API with the real, unmodified `openai` SDK against a real server process and the shipped
model: every response_format (SRT and WebVTT read back by real parsers and a small format check), streaming,
translations, the model list, and bad input answered with the SDK's error classes. Audio is kept to a few clips."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import openai
import pytest
import srt
import webvtt

from testbed.server import ServerProcess
from testbed.speech import Clip, english, normalise, wer, write_wav

pytestmark = pytest.mark.slow

ADMIN = "ak_test-admin-key-0123456789abcdef"
MAX_S = 40.0  # --max-lecture-s of the test server
MAX_MB = 2.0  # --max-upload-mb


@pytest.fixture(scope="module")
def srv(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    server = ServerProcess(cache_dir, tmp_path_factory.mktemp("oai-audio") / "server.log",
                           "--max-lecture-s", str(MAX_S), "--max-upload-mb", str(MAX_MB),
                           env={"REALTIME_ADMIN_KEY": ADMIN})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(srv) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.http + "/v1", api_key=ADMIN, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def two_clips(clips: list[Clip], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Two English clips with a 1 s pause: about 20 s, and its reference text."""
    chosen = english(clips)[:2]
    pause = np.zeros(16000, np.int16)
    audio = np.concatenate([x for c in chosen for x in (c.samples(), pause)])
    path = tmp_path_factory.mktemp("oai-audio-in") / "two.wav"
    write_wav(path, audio)
    return path, " ".join(c.reference for c in chosen)


def test_json_and_text(client: openai.OpenAI, two_clips) -> None:
    path, reference = two_clips
    with open(path, "rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, language="en")
    assert wer(reference, result.text) < 0.35, result.text
    assert result.usage is not None and result.usage.seconds == pytest.approx(len(path.read_bytes()) / 32000, 0.05)
    with open(path, "rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(text, str) and not text.lstrip().startswith("{")
    assert normalise(text) == normalise(result.text)  # the same decode, plain


def test_verbose_json_with_words_and_segments(client: openai.OpenAI, two_clips) -> None:
    path, reference = two_clips
    with open(path, "rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                    timestamp_granularities=["word", "segment"])
    assert result.language == "en" and result.duration == pytest.approx(21.0, abs=1.5)
    assert result.segments and [s.id for s in result.segments] == list(range(len(result.segments)))
    assert all(0 <= s.start < s.end <= result.duration + 0.5 for s in result.segments)
    assert result.words and len(result.words) >= len(reference.split()) * 0.7
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and all(w.start <= w.end for w in result.words)
    assert " ".join(s.text for s in result.segments) == result.text


def _srt_shape(text: str) -> None:
    """The format by hand: numbered blocks, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, text, a blank line."""
    blocks = text.strip().split("\n\n")
    for i, block in enumerate(blocks, 1):
        lines = block.split("\n")
        assert lines[0] == str(i)
        assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", lines[1]), lines[1]
        assert len(lines) >= 3 and all(line.strip() for line in lines[2:])


def test_srt_and_vtt_parse(client: openai.OpenAI, two_clips, tmp_path: Path) -> None:
    path, reference = two_clips
    with open(path, "rb") as f:
        subs = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")
    _srt_shape(subs)
    cues = list(srt.parse(subs))
    assert cues and all(a.end <= b.start for a, b in zip(cues, cues[1:], strict=False))
    assert wer(reference, " ".join(c.content for c in cues)) < 0.35
    with open(path, "rb") as f:
        vtt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n")
    (tmp_path / "x.vtt").write_text(vtt)
    captions = webvtt.read(str(tmp_path / "x.vtt"))
    assert len(captions) == len(cues)
    assert [c.start_in_seconds for c in captions] == sorted(c.start_in_seconds for c in captions)


def test_stream_deltas_join_to_done_text(client: openai.OpenAI, two_clips) -> None:
    path, reference = two_clips
    with open(path, "rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert deltas and len(done) == 1 and events[-1] is done[0]
    assert "".join(deltas) == done[0].text
    assert wer(reference, done[0].text) < 0.35


def test_translation_to_english(client: openai.OpenAI, clips: list[Clip]) -> None:
    german = [c for c in clips if c.language == "de"]
    if not german:
        pytest.skip("no German clip (espeak-ng fallback speech is English)")
    with open(german[0].path, "rb") as f:
        result = client.audio.translations.create(model="whisper-1", file=f)
    words = normalise(result.text).split()
    assert len(words) >= 5
    common = {"the", "and", "of", "to", "a", "in", "is", "it", "that", "for"}
    assert common & set(words), result.text  # English, not German
    assert not {"und", "der", "die", "das", "ist"} & set(words), result.text


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "whisper-1" and "base" in ids
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_bad_input(client: openai.OpenAI, srv, two_clips, tmp_path: Path) -> None:
    path, _ = two_clips
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("notes.txt", b"just some text\n" * 100))
    assert err.value.status_code == 415 and err.value.code == "not_audio"
    data = path.read_bytes()
    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(model="whisper-1", file=("cut.wav", data[: len(data) // 2]))
    assert bad.value.code == "corrupt" and "truncated" in bad.value.message
    long = np.zeros(round((MAX_S + 5) * 16000), np.int16)
    write_wav(tmp_path / "long.wav", long)
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=(tmp_path / "long.wav").open("rb"))
    assert err.value.status_code == 413 and err.value.code == "too_long"
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.transcriptions.create(model="whisper-1",
                                           file=("big.wav", data * int(MAX_MB * 1e6 // len(data) + 1)))
    assert err.value.status_code == 413 and err.value.code == "too_large"
    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=path.open("rb"))
    assert bad.value.code == "model_not_found"
    wrong = openai.OpenAI(base_url=srv.http + "/v1", api_key="sk_wrong-key-0123456789abcdef", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.audio.transcriptions.create(model="whisper-1", file=path.open("rb"))
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert srv.health()["status"]  # the server is still up

"""Finding the model offline: the shipped Whisper base reassembled once (size-checked, atomic, self-repairing),
clear errors for directories that are not models, and the device choice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from realtime.asr.whisper import SHIPPED_BASE_SIZE, ModelError, ensure_shipped_base, pick_device, resolve_model

FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


def leftovers(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if name.endswith(".tmp")]


@pytest.fixture(scope="module")
def assembled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("model-cache")
    return ensure_shipped_base(cache)


@pytest.mark.slow
def test_reassembles_the_shipped_base(assembled: Path):
    assert assembled.is_dir()
    for name in FILES:
        assert (assembled / name).is_file(), name
        assert (assembled / name).stat().st_size > 0, name
    assert SHIPPED_BASE_SIZE == 145_217_532
    assert (assembled / "model.bin").stat().st_size == 145_217_532
    assert leftovers(assembled) == []
    assert sorted(os.listdir(assembled)) == sorted(FILES)
    assert b'"alignment_heads"' in (assembled / "config.json").read_bytes()


@pytest.mark.slow
def test_second_call_reuses_the_cache(assembled: Path):
    cache = assembled.parent.parent
    before = {name: (assembled / name).stat().st_mtime_ns for name in FILES}
    inode = (assembled / "model.bin").stat().st_ino
    again = ensure_shipped_base(cache)
    assert again == assembled
    assert {name: (again / name).stat().st_mtime_ns for name in FILES} == before
    assert (again / "model.bin").stat().st_ino == inode
    assert resolve_model("base", cache) == assembled  # the default name goes through the same cache


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "grown", "missing-tokenizer"])
def test_damaged_cache_is_rebuilt(tmp_path: Path, assembled: Path, damage: str):
    cache = tmp_path / "cache"
    target = ensure_shipped_base(cache)
    model_bin = target / "model.bin"
    if damage == "truncated":
        with open(model_bin, "r+b") as f:
            f.truncate(SHIPPED_BASE_SIZE // 3)
    elif damage == "grown":
        with open(model_bin, "ab") as f:
            f.write(b"\0" * 10)
    else:
        (target / "tokenizer.json").unlink()
    damaged_inode = model_bin.stat().st_ino
    rebuilt = ensure_shipped_base(cache)
    assert rebuilt == target
    assert model_bin.stat().st_size == SHIPPED_BASE_SIZE
    assert model_bin.stat().st_ino != damaged_inode  # replaced atomically, not patched in place
    assert (target / "tokenizer.json").is_file()
    assert leftovers(target) == []
    # Byte for byte the same model as a clean assembly (compare the head, the middle and the tail).
    with open(model_bin, "rb") as a, open(assembled / "model.bin", "rb") as b:
        for offset in (0, SHIPPED_BASE_SIZE // 2, SHIPPED_BASE_SIZE - (1 << 16)):
            a.seek(offset)
            b.seek(offset)
            assert a.read(1 << 16) == b.read(1 << 16), offset


def test_missing_directory_is_a_model_error(tmp_path: Path):
    with pytest.raises(ModelError, match="/nonexistent"):
        resolve_model("/nonexistent", tmp_path)
    with pytest.raises(ModelError):
        resolve_model(str(tmp_path / "nope" / "model"), tmp_path)


def test_directory_without_weights_is_a_model_error(tmp_path: Path):
    folder = tmp_path / "ct2"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="model.bin"):
        resolve_model(str(folder), tmp_path)
    (folder / "config.json").unlink()
    (folder / "model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match="config.json"):
        resolve_model(str(folder), tmp_path)
    assert "\n" not in str(pytest.raises(ModelError, resolve_model, str(folder), tmp_path).value)


def test_a_model_directory_is_used_as_is(tmp_path: Path):
    folder = tmp_path / "ct2"
    folder.mkdir()
    for name in ("model.bin", "config.json"):
        (folder / name).write_bytes(b"{}")
    assert resolve_model(str(folder), tmp_path / "cache") == folder
    assert not (tmp_path / "cache").exists()  # nothing was reassembled for it


def test_pick_device_on_cpu():
    import ctranslate2

    assert pick_device("cpu", "auto") == ("cpu", "int8")
    assert pick_device("cuda", "auto") == ("cuda", "float16")
    assert pick_device("cpu", "float32") == ("cpu", "float32")
    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("a CUDA device is present: auto picks it")
    assert pick_device("auto", "auto") == ("cpu", "int8")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["partial", "final"])
def test_decodes_keep_word_times_of_the_buffer(cache_dir: Path, offline_model, clips, kind: str):
    """The decoder puts half a second of silence before each buffer (a lead-in against loops on trimmed encoder
    windows); the words it returns must still be timed from the buffer's first sample, as a plain decode times them."""
    from realtime.asr.whisper import WhisperDecoder
    from realtime.core.lecture import DecodeRequest
    from testbed.speech import english

    clip = english(clips)[0]
    samples = clip.samples()
    decoder = WhisperDecoder("base", cache_dir=cache_dir)
    segments, _ = decoder.decode(DecodeRequest(kind, 0, samples, 0.0, "", "en", "transcribe", None))
    ours = [w for s in segments for w in s.words]
    plain, _ = offline_model.transcribe(samples.astype("float32") / 32768, language="en", word_timestamps=True)
    theirs = [w for s in plain for w in s.words]
    assert ours and theirs
    # Ends, not starts: a plain decode stretches the first word back to the segment start (0.0 for this clip).
    assert abs(ours[0].end - theirs[0].end) < 0.15, (ours[0], theirs[0])
    assert abs(ours[-1].end - theirs[-1].end) < 0.15, (ours[-1], theirs[-1])

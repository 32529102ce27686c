"""The package's layers hold (docs/architecture.md): the core is sans-I/O, no import circle, only the app wires the
endpoints, no module grows past 400 lines. Static checks over the source, so a leak cannot come back quietly."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "realtime"
BLOCKED = ("asyncio", "aiohttp", "sqlite3", "threading", "faster_whisper", "ctranslate2", "onnxruntime", "webrtcvad",
           "websockets", "openai")
CORE_NOTES = ("budget", "catchup", "cjk", "extractive", "index", "lecture", "outline", "panels", "prompt",
              "scheduler", "state", "study_prompt", "summary", "tasks", "terms")
ENDPOINTS = ("realtime.server.speaker", "realtime.server.listener", "realtime.server.http_api")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every realtime module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != "realtime"}
    return found - ({module_name(path)} if path.is_relative_to(ROOT) else set())


def core_modules() -> list[str]:
    return [m for m in MODULES if m.startswith("realtime.core.")] + [f"realtime.notes.{m}" for m in CORE_NOTES]


def test_the_core_imports_nothing_of_the_shell() -> None:
    """Import every core module in a fresh interpreter where the shell's libraries cannot be imported. The standard
    library's own users of threading (logging) and numpy are imported first: they are not the core's I/O."""
    script = (f"import sys, logging, numpy\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\n"
              f"import importlib\nfor m in {core_modules()!r}:\n    importlib.import_module(m)\n"
              "leaked = sorted(m for m in sys.modules if m.startswith(('realtime.server', 'realtime.asr', "
              "'realtime.storage', 'realtime.notes.service', 'realtime.notes.llm')))\nprint(leaked)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", run.stdout


def test_core_modules_name_no_shell_module() -> None:
    """The same boundary read from the source: no core module imports asr, server or storage, even lazily."""
    for name in core_modules():
        shell = {m for m in imports(MODULES[name]) if m.startswith(("realtime.asr", "realtime.server",
                                                                    "realtime.storage", "realtime.notes.service",
                                                                    "realtime.notes.llm"))}
        assert not shell, (name, shell)


def test_no_import_circle() -> None:
    graph = {name: imports(path) for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_only_the_app_imports_the_endpoints() -> None:
    for name, path in MODULES.items():
        wired = imports(path) & set(ENDPOINTS)
        assert not wired or name == "realtime.server.app", (name, wired)


def test_no_module_over_400_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(sizes.values()) <= 400, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_the_check_sees_a_circle_and_a_lazy_import(tmp_path: Path) -> None:
    """`imports` reads function-level imports too (a lazy import must not hide a circle)."""
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from realtime.server.app import create_app\n    import realtime.core.room\n")
    assert imports(source) == {"realtime.server.app", "realtime.core.room"}

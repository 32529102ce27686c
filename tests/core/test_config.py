"""Settings.from_sources: defaults, then REALTIME_* environment variables, then command-line flags."""

from __future__ import annotations

import argparse

import pytest

from realtime.config import Settings


def cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    s = Settings.from_sources(env={})
    assert (s.host, s.port, s.model) == ("127.0.0.1", 8000, "base")
    assert s.vad_aggressiveness == 2 and s.vad_frame_ms == 30
    assert s.max_utterance_s == 12.0 and s.partial_interval_s == 0.25
    assert s.vad_silero is True


def test_unset_flags_do_not_shadow_defaults() -> None:
    assert Settings.from_sources(env={}, args=cli()) == Settings.from_sources(env={})


def test_env_overrides_default_with_the_field_type() -> None:
    s = Settings.from_sources(env={"REALTIME_PORT": "9000", "REALTIME_MAX_UTTERANCE_S": "7.5",
                                   "REALTIME_MODEL": "tiny.en"})
    assert s.port == 9000 and isinstance(s.port, int)
    assert s.max_utterance_s == 7.5
    assert s.model == "tiny.en"


def test_unrelated_env_is_ignored() -> None:
    assert Settings.from_sources(env={"PORT": "1", "REALTIME_NOT_A_FIELD": "x"}).port == 8000


def test_cli_flag_beats_env() -> None:
    s = Settings.from_sources(env={"REALTIME_PORT": "9000", "REALTIME_HOST": "0.0.0.0"}, args=cli("--port", "9100"))
    assert s.port == 9100
    assert s.host == "0.0.0.0"  # no flag given: the environment still applies


def test_cli_parses_typed_values() -> None:
    s = Settings.from_sources(env={}, args=cli("--vad-frame-ms", "20", "--encoder-pad-s", "-1"))
    assert s.vad_frame_ms == 20 and s.encoder_pad_s == -1.0


@pytest.mark.parametrize(("var", "raw"), [("REALTIME_PORT", "eighty"), ("REALTIME_PORT", "80.5"),
                                          ("REALTIME_MAX_LAG_S", "fast"), ("REALTIME_VAD_SILERO", "maybe")])
def test_bad_env_value_names_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ValueError, match=var) as exc:
        Settings.from_sources(env={var: raw})
    assert repr(raw) in str(exc.value)


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("true", True), ("Yes", True), (" on ", True),
                                            ("0", False), ("false", False), ("NO", False), ("off", False),
                                            ("", False)])
def test_boolean_env_values(raw: str, value: bool) -> None:
    assert Settings.from_sources(env={"REALTIME_VAD_SILERO": raw}).vad_silero is value


def test_boolean_flags_beat_env() -> None:
    env = {"REALTIME_VAD_SILERO": "yes"}
    assert Settings.from_sources(env=env, args=cli("--no-vad-silero")).vad_silero is False
    env = {"REALTIME_VAD_SILERO": "0"}
    assert Settings.from_sources(env=env, args=cli("--vad-silero")).vad_silero is True
    assert Settings.from_sources(env=env, args=cli()).vad_silero is False


def test_every_field_has_help_and_a_flag() -> None:
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    flags = {a.dest for a in parser._actions}
    for f in Settings.fields():
        assert f.metadata["help"], f.name
        assert f.name in flags


def test_readme_table_lists_every_setting_with_its_default() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for f in Settings.fields():
        flag, env = "--" + f.name.replace("_", "-"), f"REALTIME_{f.name.upper()}"
        rows = [line for line in readme.splitlines() if line.startswith(f"| `{flag}` |")]
        assert rows, f"README configuration table lacks {flag}"
        assert f"`{env}`" in rows[0]


def test_impossible_settings_are_refused_at_startup() -> None:
    import pytest

    for kw in ({"vad_frame_ms": 25}, {"vad_aggressiveness": 4}, {"listener_queue": 0}, {"port": 0},
               {"device": "tpu"}, {"workers": -1}):
        with pytest.raises(ValueError):
            Settings(**kw)


def test_default_db_path_follows_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from realtime.config import _default_db_path

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert _default_db_path() == str(tmp_path / "state" / "realtime" / "realtime.db")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value in ("", "relative/dir"):  # unset or not absolute: ignored, as the XDG spec says
        monkeypatch.setenv("XDG_STATE_HOME", value)
        assert _default_db_path() == str(tmp_path / "home" / ".local" / "state" / "realtime" / "realtime.db")


def test_state_dir_follows_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from realtime.certs import default_dir
    from realtime.config import state_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert state_dir() == tmp_path / "state" / "realtime"
    assert default_dir() == state_dir() / "tls"  # `realtime certs` writes beside the default database
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME")
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "realtime"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "realtime"


def test_client_key_comes_from_realtime_key_and_the_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from realtime.cli import _key
    from realtime.config import client_key

    monkeypatch.delenv("REALTIME_KEY", raising=False)
    assert client_key() is None and _key(argparse.Namespace(key=None)) is None
    monkeypatch.setenv("REALTIME_KEY", "")
    assert client_key() is None  # empty counts as unset
    monkeypatch.setenv("REALTIME_KEY", "from-env")
    assert client_key() == "from-env" and _key(argparse.Namespace(key=None)) == "from-env"
    assert _key(argparse.Namespace(key="from-flag")) == "from-flag"


@pytest.mark.parametrize(("value", "offline"), [(None, False), ("", False), ("0", False), ("1", True),
                                                 ("true", True), ("yes", True)])
def test_hf_hub_offline(monkeypatch: pytest.MonkeyPatch, value: str | None, offline: bool) -> None:
    from realtime.config import hf_hub_offline

    if value is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hf_hub_offline() is offline


def test_max_frame_bytes_is_one_second_of_wire_audio() -> None:
    from realtime.core.audio import BYTES_PER_SECOND, SAMPLE_RATE

    assert BYTES_PER_SECOND == SAMPLE_RATE * 2 == Settings().max_frame_bytes == 32000
    field = next(f for f in Settings.fields() if f.name == "max_frame_bytes")
    assert field.metadata["help"] == "Largest binary audio frame (32000 bytes = 1 s of 16 kHz s16le)."


ENV_NAMES_OF_CONFIG = ("REALTIME_", "XDG_", "HF_HUB_OFFLINE")


def _environment_reads(source: str) -> list[tuple[int, str]]:
    """(line, variable) for each read of the environment in `source`: os.environ.get / os.getenv / environ[...]
    loaded / `... in os.environ`; '?' where the name is not a literal. Writes (`os.environ[...] = ...`,
    setdefault, update) and whole copies for child processes (`{**os.environ, ...}`) are not reads of a name."""
    import ast

    def is_environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ")

    def name_of(node: ast.AST | None) -> str:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else "?"

    reads = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and is_environ(func.value):
                reads.append((node.lineno, name_of(node.args[0] if node.args else None)))
            elif (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                    isinstance(func, ast.Name) and func.id == "getenv"):
                reads.append((node.lineno, name_of(node.args[0] if node.args else None)))
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and is_environ(node.value):
            reads.append((node.lineno, name_of(node.slice)))
        elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops) and any(
                is_environ(c) for c in node.comparators):
            reads.append((node.lineno, name_of(node.left)))
    return reads


def test_environment_reads_are_found_precisely() -> None:
    source = '''
import os
from os import environ, getenv
a = os.environ.get("REALTIME_KEY")
b = os.getenv("XDG_STATE_HOME", "")
c = environ["HF_HUB_OFFLINE"]
d = "REALTIME_X" in os.environ
e = getenv(name)
os.environ["CHILD_ONLY"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
env = {**os.environ, "REALTIME_CACHE_DIR": "/tmp"}
'''
    assert _environment_reads(source) == [(4, "REALTIME_KEY"), (5, "XDG_STATE_HOME"), (6, "HF_HUB_OFFLINE"),
                                          (7, "REALTIME_X"), (8, "?")]


def test_only_config_reads_realtime_xdg_and_hub_variables() -> None:
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "realtime"
    config = package / "config.py"
    assert {name for _, name in _environment_reads(config.read_text())} >= {"XDG_STATE_HOME", "REALTIME_KEY",
                                                                            "HF_HUB_OFFLINE"}
    offenders = [f"{path.relative_to(package.parent)}:{line}: {name}"
                 for path in sorted(package.rglob("*.py")) if path != config
                 for line, name in _environment_reads(path.read_text())
                 if name == "?" or name.startswith(ENV_NAMES_OF_CONFIG)]
    assert not offenders, "read these through realtime.config: " + ", ".join(offenders)


def test_the_cpu_layout_gives_each_core_a_worker_unless_told_otherwise() -> None:
    from realtime.asr.whisper import cpu_layout

    assert cpu_layout(0, 0, 2) == (2, 1)  # measured best on 2 cores (benchmarks/README.md, "Worker layout")
    assert cpu_layout(0, 0, 1) == (1, 1)
    assert cpu_layout(2, 0, 8) == (2, 4)  # fewer workers share the cores out
    assert cpu_layout(1, 2, 8) == (1, 2)  # both given: kept
    assert cpu_layout(0, 3, 4) == (4, 3)

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

"""The Prometheus text exposition: exact output for known families, and a round trip through the real parser
(`prometheus_client.parser`) for names, types, help, label values (with escapes) and sample values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from realtime.core.prometheus import CONTENT_TYPE, Family, counter, gauge, render

NASTY = 'say "hi"\\path\nnext line'


def families() -> list[Family]:
    return [
        counter("realtime_audio_seconds_total", "Seconds of audio received.", 12.5),
        gauge("realtime_ready", "1 when ready.\nSecond line with a \\ backslash.", 1),
        counter("realtime_events_total", "Events by type.").add(7, type="final").add(120, type="partial"),
        gauge("realtime_lag_seconds", "Lag by room.").add(0.25, room="a", kind="live").add(float("nan"), room="b",
                                                                                           kind="live"),
        gauge("realtime_max", "Unbounded.", float("inf")),
        gauge("realtime_min", "Negative infinity.", float("-inf")),
        gauge("realtime_weird", "Escaped label.").add(-3, room=NASTY),
        gauge("realtime_empty", "No samples yet."),
    ]


EXPECTED = r"""# HELP realtime_audio_seconds_total Seconds of audio received.
# TYPE realtime_audio_seconds_total counter
realtime_audio_seconds_total 12.5
# HELP realtime_ready 1 when ready.\nSecond line with a \\ backslash.
# TYPE realtime_ready gauge
realtime_ready 1
# HELP realtime_events_total Events by type.
# TYPE realtime_events_total counter
realtime_events_total{type="final"} 7
realtime_events_total{type="partial"} 120
# HELP realtime_lag_seconds Lag by room.
# TYPE realtime_lag_seconds gauge
realtime_lag_seconds{room="a",kind="live"} 0.25
realtime_lag_seconds{room="b",kind="live"} NaN
# HELP realtime_max Unbounded.
# TYPE realtime_max gauge
realtime_max +Inf
# HELP realtime_min Negative infinity.
# TYPE realtime_min gauge
realtime_min -Inf
# HELP realtime_weird Escaped label.
# TYPE realtime_weird gauge
realtime_weird{room="say \"hi\"\\path\nnext line"} -3
# HELP realtime_empty No samples yet.
# TYPE realtime_empty gauge
"""


def test_render_exact_text() -> None:
    assert render(families()) == EXPECTED


def test_output_ends_with_one_newline_and_each_family_has_one_help_and_type() -> None:
    text = render(families())
    assert text.endswith("\n") and not text.endswith("\n\n")
    lines = text.split("\n")[:-1]
    assert all(line for line in lines)  # no blank lines
    for fam in families():
        helps = [i for i, line in enumerate(lines) if line.startswith(f"# HELP {fam.name} ")]
        types = [i for i, line in enumerate(lines) if line.startswith(f"# TYPE {fam.name} ")]
        assert len(helps) == 1 and len(types) == 1
        assert types[0] == helps[0] + 1
        assert lines[types[0]] == f"# TYPE {fam.name} {fam.kind}"
    assert render([]) == "\n"


def test_round_trip_through_the_prometheus_parser() -> None:
    parsed = list(text_string_to_metric_families(render(families())))
    # The parser names a counter family without its `_total` suffix; its samples keep it.
    assert [(f.name, f.type) for f in parsed] == [
        ("realtime_audio_seconds", "counter"), ("realtime_ready", "gauge"), ("realtime_events", "counter"),
        ("realtime_lag_seconds", "gauge"), ("realtime_max", "gauge"), ("realtime_min", "gauge"),
        ("realtime_weird", "gauge"), ("realtime_empty", "gauge"),
    ]
    by_name = {f.name: f for f in parsed}
    assert by_name["realtime_ready"].documentation == "1 when ready.\nSecond line with a \\ backslash."
    assert [(s.name, s.labels, s.value) for s in by_name["realtime_audio_seconds"].samples] == [
        ("realtime_audio_seconds_total", {}, 12.5)]
    assert [(s.name, s.labels, s.value) for s in by_name["realtime_events"].samples] == [
        ("realtime_events_total", {"type": "final"}, 7), ("realtime_events_total", {"type": "partial"}, 120)]
    lag = by_name["realtime_lag_seconds"].samples
    assert [s.labels for s in lag] == [{"room": "a", "kind": "live"}, {"room": "b", "kind": "live"}]
    assert lag[0].value == 0.25 and math.isnan(lag[1].value)
    assert by_name["realtime_max"].samples[0].value == math.inf
    assert by_name["realtime_min"].samples[0].value == -math.inf
    assert [(s.labels, s.value) for s in by_name["realtime_weird"].samples] == [({"room": NASTY}, -3)]
    assert by_name["realtime_empty"].samples == []


@pytest.mark.parametrize("value, text", [
    (0, "0"), (3, "3"), (2.0, "2"), (-0.0, "0"), (-7, "-7"), (0.1, "0.1"), (1 / 3, "0.3333333333333333"),
    (1e-7, "1e-07"), (1e22, "10000000000000000000000"), (2**60, "1152921504606846976"),
])
def test_numbers_are_written_exactly(value: float, text: str) -> None:
    out = render([gauge("g", "h", value)])
    assert out == f"# HELP g h\n# TYPE g gauge\ng {text}\n"
    (fam,) = text_string_to_metric_families(out)
    assert fam.samples[0].value == value


def test_helpers_keep_a_zero_value_and_none_means_no_sample() -> None:
    assert counter("c_total", "h", 0).samples == [({}, 0)]
    assert gauge("g", "h", 0.0).samples == [({}, 0.0)]
    assert counter("c_total", "h").samples == []
    assert gauge("g", "h").samples == []
    fam = gauge("g", "h")
    assert fam.add(1, a="x").add(2, a="y", b="z") is fam
    assert fam.samples == [({"a": "x"}, 1), ({"a": "y", "b": "z"}, 2)]
    assert (fam.kind, counter("c_total", "h").kind) == ("gauge", "counter")


def test_mixed_labelled_and_unlabelled_samples() -> None:
    out = render([counter("req_total", "Requests.", 4).add(1, code="500")])
    assert out.splitlines()[2:] == ["req_total 4", 'req_total{code="500"} 1']
    (fam,) = text_string_to_metric_families(out)
    assert [(s.labels, s.value) for s in fam.samples] == [({}, 4), ({"code": "500"}, 1)]


def test_content_type() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


@settings(max_examples=300, deadline=None)
@given(help_text=st.text().filter(lambda s: s == s.strip()), label=st.text(), value=st.floats())
def test_any_help_label_and_value_round_trip(help_text: str, label: str, value: float) -> None:
    (fam,) = text_string_to_metric_families(render([gauge("g", help_text).add(value, l=label)]))
    assert fam.documentation == help_text
    (sample,) = fam.samples
    assert sample.labels == {"l": label}
    assert sample.value == value or (math.isnan(value) and math.isnan(sample.value))

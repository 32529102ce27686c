"""The static files: the close-code tables of the pages and of the widget agree with realtime/core/protocol.py, and
the embeddable widget stays small (no framework, no build step, under 15 KB gzipped; README states its size)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from realtime.core import protocol

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "static"
STRING = r'"(?:[^"\\\n]|\\.)*"'


def block(source: str, name: str, opening: str = "{") -> str:
    """The text between `name: {` (or `name = [`, ...) and its closing bracket, skipping brackets in strings; the
    tables hold no nested ones."""
    closing = re.escape({"{": "}", "[": "]"}[opening])
    found = re.findall(rf"\b{name}\s*[:=]\s*(?:Object\.freeze\()?{re.escape(opening)}"
                       rf"((?:{STRING}|[^\"{closing}])*){closing}", source)
    assert len(found) == 1, f"expected one table {name} in the source, found {len(found)}"
    return found[0]


def codes(source: str, name: str) -> list[int]:
    """A list of numbers: `name: [4400, 4401]` or `const name = [4400, 4401];`."""
    text = block(source, name, "[")
    assert re.fullmatch(r"[\s\d,]*", text), f"{name} must be a plain list of numbers: {text!r}"
    return [int(n) for n in re.findall(r"\d+", text)]


def texts(source: str, name: str) -> dict[int, str]:
    """A table of close code -> string literal (parts joined with `+` are concatenated)."""
    text = block(source, name)
    entry = re.compile(rf"\s*(\d+)\s*:\s*({STRING}(?:\s*\+\s*{STRING})*)\s*,?")
    table: dict[int, str] = {}
    pos = 0
    while pos < len(text.rstrip()):
        m = entry.match(text, pos)
        assert m, f"{name} is not a plain table of code: string at {text[pos:pos + 60]!r}"
        code = int(m.group(1))
        assert code not in table, f"{name} has {code} twice"
        table[code] = "".join(s[1:-1] for s in re.findall(STRING, m.group(2)))
        pos = m.end()
    return table


def names(source: str, name: str) -> dict[str, int]:
    """`name: {NORMAL: 1000, ...}` -> {"NORMAL": 1000, ...}."""
    text = block(source, name)
    pairs = re.findall(r"\b([A-Z_]+)\s*:\s*(\d+)", text)
    assert re.sub(r"\b[A-Z_]+\s*:\s*\d+\s*,?", "", text).strip() == "", f"{name} is not a plain name: code table"
    return {k: int(v) for k, v in pairs}


def python_closes() -> dict[str, int]:
    return {k.removeprefix("CLOSE_"): v for k, v in vars(protocol).items() if k.startswith("CLOSE_")}


def test_protocol_js_has_the_close_codes_of_protocol_py() -> None:
    js = (STATIC / "protocol.js").read_text()
    assert names(js, "CLOSE") == python_closes()
    assert set(codes(js, "PERMANENT")) == protocol.PERMANENT_CLOSES
    assert len(codes(js, "PERMANENT")) == len(protocol.PERMANENT_CLOSES)
    speaker = texts(js, "SPEAKER_TEXT")
    missing = set(python_closes().values()) - set(speaker)
    assert not missing, f"static/protocol.js SPEAKER_TEXT has no message for {sorted(missing)}"
    assert set(speaker) <= set(python_closes().values()), "SPEAKER_TEXT has a code that protocol.py does not define"
    assert all(speaker.values())
    # The widget says something after every close that stops it reconnecting.
    assert set(texts(js, "VIEWER_TEXT")) == protocol.PERMANENT_CLOSES
    assert all(texts(js, "VIEWER_TEXT").values())


def test_the_widget_copy_of_the_table_matches_protocol_js() -> None:
    js, widget = (STATIC / "protocol.js").read_text(), (STATIC / "widget.js").read_text()
    assert codes(widget, "PERMANENT") == codes(js, "PERMANENT")
    assert texts(widget, "CLOSE_TEXT") == texts(js, "VIEWER_TEXT")
    assert "RealtimeProtocol" not in widget, "the widget must stay one self-contained file"


def test_the_pages_use_protocol_js_rather_than_literals() -> None:
    page = (STATIC / "speak.html").read_text()
    scripts = re.findall(r'<script src="/static/([\w.-]+)"', page)
    assert "protocol.js" in scripts and scripts.index("protocol.js") < scripts.index("speak.js"), scripts
    speak = (STATIC / "speak.js").read_text()
    spelled = {int(m) for m in re.findall(r"(?<![\w.])([14]\d{3})(?![\w.])", speak)}
    literal = sorted(spelled & (set(python_closes().values()) - {protocol.CLOSE_NORMAL}))  # 1000: also ms per s
    assert not literal, f"static/speak.js spells close codes {literal}: use RealtimeProtocol (static/protocol.js)"
    assert not re.search(r"close\(\s*1000", speak), "static/speak.js spells 1000: use RealtimeProtocol.CLOSE.NORMAL"


def test_closing_errors_map_to_documented_close_codes() -> None:
    assert set(protocol.CLOSING.values()) <= set(python_closes().values())
    assert protocol.PERMANENT_CLOSES <= set(python_closes().values())


def test_widget_is_small_and_the_readme_states_its_size() -> None:
    source = (STATIC / "widget.js").read_bytes()
    packed = len(gzip.compress(source, 9))
    assert packed < 15 * 1024, packed
    stated = re.search(r"widget.js` — ([\d.]+) KB, \*\*([\d.]+) KB gzipped", (ROOT / "README.md").read_text())
    assert stated, "README does not state the widget's size"
    assert abs(float(stated.group(1)) - len(source) / 1000) < 0.15, (stated.group(1), len(source))
    assert abs(float(stated.group(2)) - packed / 1000) < 0.15, (stated.group(2), packed)

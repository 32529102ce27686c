"""The embeddable widget stays small: no framework, no build step, under 15 KB gzipped (README states its size)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_widget_is_small_and_the_readme_states_its_size() -> None:
    source = (ROOT / "static" / "widget.js").read_bytes()
    packed = len(gzip.compress(source, 9))
    assert packed < 15 * 1024, packed
    stated = re.search(r"widget.js` — ([\d.]+) KB, \*\*([\d.]+) KB gzipped", (ROOT / "README.md").read_text())
    assert stated, "README does not state the widget's size"
    assert abs(float(stated.group(1)) - len(source) / 1000) < 0.15, (stated.group(1), len(source))
    assert abs(float(stated.group(2)) - packed / 1000) < 0.15, (stated.group(2), packed)

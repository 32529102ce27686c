"""What docs/protocol.md and realtime/core/protocol.py list: error codes and close codes, for the tests that check the
server against the document (tests/core/test_protocol_fuzz.py cross-checks the two; the e2e fuzzing uses them)."""

from __future__ import annotations

import re
from pathlib import Path

from realtime.core import protocol

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()


def doc_section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end > 0 else None]


# The error codes are the lowercase string constants of realtime/core/protocol.py; the close codes its CLOSE_* constants
# plus 1009 and 1007, which aiohttp sends for messages far over the limits and text that is not UTF-8.
CODE_ERRORS = frozenset(v for k, v in vars(protocol).items()
                        if k.isupper() and isinstance(v, str) and re.fullmatch(r"[a-z][a-z_]*", v))
DOC_ERRORS = frozenset(re.findall(r"^\| `([a-z_]+)` \|", doc_section("Error codes"), re.M))
CODE_CLOSES = frozenset(v for k, v in vars(protocol).items()
                        if k.startswith("CLOSE_") and isinstance(v, int)) | {1007, 1009}
DOC_CLOSES = frozenset(int(c) for c in re.findall(r"^\| (\d{4}) \|", doc_section("Close codes"), re.M))

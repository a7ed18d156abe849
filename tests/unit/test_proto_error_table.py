"""The error codes in ``syncproto.errors`` are exactly the table of PROTOCOL.md §6, statuses included."""

from __future__ import annotations

import re
from pathlib import Path

from syncproto import errors

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol" / "PROTOCOL.md"
ROW = re.compile(r"^\| `([a-z_]+)` \| (\d{3}|—) \| (request|change|request or change) \|", re.MULTILINE)


def table() -> dict[str, tuple[str, str]]:
    return {code: (status, scope) for code, status, scope in ROW.findall(PROTOCOL.read_text())}


def test_request_statuses_match_the_protocol_table() -> None:
    documented = {code: int(status) for code, (status, scope) in table().items() if "request" in scope}
    assert documented == errors.REQUEST_STATUS
    assert set(documented) == errors.REQUEST_CODES


def test_change_codes_match_the_protocol_table() -> None:
    documented = {code for code, (_, scope) in table().items() if "change" in scope}
    assert documented == errors.CHANGE_CODES


def test_every_code_row_is_inside_a_table() -> None:
    """A row after a paragraph with no header renders as text, not as part of the table."""
    lines = PROTOCOL.read_text().splitlines()
    loose = [line for i, line in enumerate(lines) if ROW.match(line) and not lines[i - 1].startswith("|")]
    assert not loose, f"rows outside a table in PROTOCOL.md: {loose}"

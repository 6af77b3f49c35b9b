"""docs/control-api.md is the contract: its command and event tables name exactly what the server accepts."""

import re
from pathlib import Path

from ocsync_tui.engine.control import COMMANDS, EVENT_KINDS, PROTOCOL_VERSION

DOC = Path(__file__).parents[2] / "docs" / "control-api.md"


def table_names(section: str) -> list[str]:
    """The backquoted first cells of the table rows in one `## section` of the document."""
    text = DOC.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_.]+)` \|", body, flags=re.MULTILINE)


def test_the_documented_commands_are_the_servers() -> None:
    assert table_names("Commands") == list(COMMANDS)


def test_the_documented_event_kinds_are_the_servers() -> None:
    assert table_names("Events") == list(EVENT_KINDS)


def test_the_document_names_the_version_it_describes() -> None:
    assert DOC.read_text().startswith(f"# The ocsync control API, version {PROTOCOL_VERSION}\n")

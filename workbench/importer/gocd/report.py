"""What the importer could not carry over (or changed), each at its XML line.

Plain data: the converter appends :class:`Note` objects, the CLI prints them
as a table and writes them beside the output, tests assert on them.
"""
from __future__ import annotations

from dataclasses import dataclass

KINDS = ("dropped", "changed", "secret")


@dataclass(frozen=True)
class Note:
    """``kind``: *dropped* (not in the output), *changed* (converted with a difference the user should know),
    *secret* (a secure value that needs a new value: it could not be re-encrypted)."""

    file: str
    line: int
    col: int
    element: str  # e.g. "<p4>" in pipeline 'api'
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.kind}: {self.element}: {self.message}"


def as_text(notes: list[Note] | tuple[Note, ...]) -> str:
    if not notes:
        return "Everything in the GoCD config was carried over.\n"
    lines = [f"{len(notes)} element(s) not carried over as they were:", ""]
    lines += [str(n) for n in notes]
    return "\n".join(lines) + "\n"

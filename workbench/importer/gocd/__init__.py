"""``workbench import-gocd``: a GoCD server's ``cruise-config.xml`` into workbench files (docs/import-gocd.md).

:func:`convert` is pure (bytes in, file texts and a report out); :func:`write`
checks and writes the result into a workspace folder all at once.
"""
from .convert import Result, convert
from .report import Note
from .write import check, write

__all__ = ["Note", "Result", "check", "convert", "write"]

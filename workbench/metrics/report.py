"""``workbench report``: the post-release analysis notebook, executed and shared as one HTML file.

papermill runs the notebook with the period or release as parameters (so a
cron job and a person get the same report); nbconvert turns the executed
notebook into HTML without the code cells. The file is self-contained: the
charts carry plotly.js inline and every script or stylesheet fetched from
the network is removed, so the report opens offline and in a mail client's
sandbox. The notebook prints no environment, store URL or secret, and the
parameters we pass hold none.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import UsageError, WorkbenchError

NOTEBOOK = "post_release_analysis.ipynb"
_EXTERNAL = re.compile(r"<script[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>|<link[^>]*\bhref=[\"']https?://[^>]*>",
                       re.IGNORECASE)


class ReportError(WorkbenchError):
    """The analysis notebook failed; the message says which cell and why."""


def find_notebook(ws_root: Path | None, name: str = NOTEBOOK) -> Path:
    """The workspace's ``notebooks/NAME`` if it has one, else the one shipped with the workbench."""
    candidates = []
    if ws_root is not None:
        candidates.append(Path(ws_root) / "notebooks" / name)
    candidates.append(Path(__file__).resolve().parents[2] / "notebooks" / name)
    for c in candidates:
        if c.is_file():
            return c
    raise UsageError(f"no {name} found (looked in {', '.join(str(c.parent) for c in candidates)}); pass --notebook")


def self_contained(html: str) -> str:
    """Drop every script and stylesheet that would be fetched from the network."""
    return _EXTERNAL.sub("", html)


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 to ``path`` while the notebook runs.

    The kernel inherits it, and on success its start-up and shutdown chatter
    ("Kernel is running over TCP without encryption", "KeyboardInterrupt caught
    in kernel") is noise to a report's reader; on failure the caller shows its tail.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as fh:
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def render(output: Path, *, notebook: Path, parameters: dict[str, Any], timeout: float = 600,
           cwd: Path | None = None) -> Path:
    """Execute ``notebook`` with ``parameters`` and write the HTML report to ``output``."""
    import papermill as pm
    from nbconvert import HTMLExporter
    from papermill.exceptions import PapermillExecutionError

    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wb-report-") as tmp:
        executed = Path(tmp) / "executed.ipynb"
        spool = Path(tmp) / "kernel.stderr"
        try:
            with _stderr_to(spool):
                pm.execute_notebook(
                    str(notebook), str(executed), parameters=parameters, kernel_name="python3", progress_bar=False,
                    log_output=False, execution_timeout=int(timeout), cwd=str(cwd or tmp),
                )
        except PapermillExecutionError as exc:
            raise ReportError(f"the analysis notebook failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}") from None
        except Exception as exc:  # the kernel died or did not start: its own words say why
            tail = spool.read_text(errors="replace")[-2000:].strip() if spool.exists() else ""
            raise ReportError(f"the analysis notebook could not run: {type(exc).__name__}: {exc}"
                              + (f"\nkernel stderr:\n{tail}" if tail else "")) from None
        exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                                exclude_output_prompt=True)
        body, _ = exporter.from_filename(str(executed))
    output.write_text(self_contained(body), encoding="utf-8")
    return output

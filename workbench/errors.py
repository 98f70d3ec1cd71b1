"""The one exception hierarchy of the workbench.

Every error a user can cause is a :class:`WorkbenchError`; each class carries
its CLI exit status (``exit_code``, used by ``workbench.cli``) and its HTTP
status (``http_status``, used by ``workbench.server``) side by side here, the
one place both are decided, so no traceback reaches a user for a mistake of
theirs and the terminal and the API always agree on what went wrong. Third-party exceptions (SQLAlchemy,
GitPython, nbclient, subprocess) are translated where they enter.
"""
from __future__ import annotations

from dataclasses import dataclass


class WorkbenchError(Exception):
    """Root of everything the workbench raises on purpose."""

    exit_code = 1
    http_status = 500
    kind = "error"


@dataclass(frozen=True)
class Problem:
    """One config problem, located in a file (1-based line and column)."""

    file: str
    line: int
    col: int
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        tag = "" if self.severity == "error" else "warning: "
        return f"{self.file}:{self.line}:{self.col}: {tag}{self.message}"


class ConfigError(WorkbenchError):
    """The pipeline configuration is invalid; nothing was run."""

    exit_code = 2
    http_status = 400
    kind = "config"

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(WorkbenchError):
    """A command was asked for something that does not exist or makes no sense now."""

    exit_code = 2
    http_status = 400
    kind = "bad_request"


class NotFound(UsageError):
    """A pipeline, run, stage or job named by the user does not exist."""

    http_status = 404
    kind = "not_found"


class InvalidState(UsageError):
    """The thing exists but cannot do that now (e.g. approving a stage that is not waiting)."""

    http_status = 409
    kind = "conflict"


class NotSignedIn(WorkbenchError):
    """The release service could not establish who is calling (no, a bad, revoked or expired credential)."""

    exit_code = 3
    http_status = 401
    kind = "not_signed_in"


class Unauthorized(WorkbenchError):
    """The acting identity may not do this; the attempt is audited.

    ``user``: who was refused, when that is known before any workbench code
    runs (a JupyterHub token the hub vouches for but that may not use this
    service), so the HTTP layer can audit the attempt under that name.
    """

    exit_code = 3
    http_status = 403
    kind = "forbidden"

    def __init__(self, message: str = "", *, user: str | None = None) -> None:
        super().__init__(message)
        self.user = user


class StoreError(WorkbenchError):
    """The run-history store is unreadable, locked, corrupt or too new."""

    exit_code = 4
    http_status = 503
    kind = "store_unavailable"


class ExecutionError(WorkbenchError):
    """A job could not be started at all (as opposed to a job that failed)."""

    exit_code = 1
    http_status = 502
    kind = "execution_failed"


class MaterialError(WorkbenchError):
    """A material (git repository, upstream pipeline) could not be read."""

    exit_code = 1
    http_status = 502
    kind = "material_failed"


class SecretError(WorkbenchError):
    """A secret could not be decrypted or the key is missing or unsafe."""

    exit_code = 2
    http_status = 400
    kind = "secret"


class ArtifactError(WorkbenchError):
    """An artifact could not be published or fetched."""

    exit_code = 1
    http_status = 502
    kind = "artifact_failed"


class ImportRefused(WorkbenchError):
    """A file given to an importer (``import-gocd``) cannot be converted: unsafe, unreadable or too big;
    or the output would overwrite files. Nothing was written."""

    exit_code = 2
    http_status = 400
    kind = "import_refused"


class TrafficError(WorkbenchError):
    """A traffic provider failed to apply or confirm weights."""

    exit_code = 1
    http_status = 502
    kind = "traffic_failed"


EXIT_CODES = {
    "ok": 0,
    "failed": 1,
    "usage_or_config": 2,
    "unauthorized": 3,
    "store": 4,
    "interrupted": 130,
}

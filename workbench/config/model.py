"""The pipeline model: plain, immutable data built by the loader.

Everything downstream (scheduler, engine, CLI, dashboards) reads these records
and never the YAML, so our extensions (notebook tasks, traffic steps, roles,
routes) slot in as new record types without touching the parsers of others.
Every record keeps the :class:`Loc` it came from so that checks made after
parsing (references, cycles) can still point at a file, line and column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union


@dataclass(frozen=True)
class Loc:
    file: str = "<unknown>"
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NOWHERE = Loc()


# --- tasks -----------------------------------------------------------------

RUN_IF = ("passed", "failed", "any")


@dataclass(frozen=True)
class ExecTask:
    """Run a program with an argv list, never through a shell."""

    command: str
    arguments: tuple[str, ...] = ()
    working_directory: str | None = None
    run_if: str = "passed"
    on_cancel: "Task | None" = None
    loc: Loc = NOWHERE
    kind: str = "exec"


@dataclass(frozen=True)
class ScriptTask:
    """GoCD's ``script:`` shorthand: the user chose a shell, so we run ``bash -c``."""

    script: str
    working_directory: str | None = None
    run_if: str = "passed"
    on_cancel: "Task | None" = None
    loc: Loc = NOWHERE
    kind: str = "script"


@dataclass(frozen=True)
class FetchTask:
    """Fetch an artifact from an earlier stage or an ancestor pipeline.

    ``pipeline`` is GoCD's path (``upstream`` or ``upstream/parent``); None
    means the current pipeline.
    """

    stage: str
    job: str
    source: str
    pipeline: str | None = None
    destination: str = ""
    is_file: bool = False
    artifact_origin: str = "gocd"
    run_if: str = "passed"
    on_cancel: "Task | None" = None
    loc: Loc = NOWHERE
    kind: str = "fetch"


@dataclass(frozen=True)
class NotebookTask:
    """Our extension: run a parameterized notebook with papermill."""

    path: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    kernel: str | None = None
    timeout: float | None = None  # seconds
    run_if: str = "passed"
    on_cancel: "Task | None" = None
    loc: Loc = NOWHERE
    kind: str = "notebook"


@dataclass(frozen=True)
class GenericTask:
    """A task kind registered by an extension (package publish, traffic, ...).

    ``kind`` selects the runner from ``workbench.tasks`` registry; ``options``
    is the validated mapping the runner receives.
    """

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    run_if: str = "passed"
    on_cancel: "Task | None" = None
    loc: Loc = NOWHERE


Task = Union[ExecTask, ScriptTask, FetchTask, NotebookTask, GenericTask]


# --- jobs and stages -------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    type: str  # build | test | external
    source: str
    destination: str = ""
    loc: Loc = NOWHERE


@dataclass(frozen=True)
class Job:
    name: str
    tasks: tuple[Task, ...]
    timeout: float | None = None  # seconds; None = never
    run_instances: int | str | None = None  # int, "all" or None (one)
    resources: tuple[str, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    secure_variables: Mapping[str, str] = field(default_factory=dict)  # ciphertext
    elastic_profile_id: str | None = None
    # (ext) reruns allowed when the job's agent is lost mid-job: only jobs safe to run twice say so
    rerun_on_agent_lost: int = 0
    loc: Loc = NOWHERE


@dataclass(frozen=True)
class Approval:
    type: str = "success"  # success (automatic) | manual
    users: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    allow_only_on_success: bool = False
    loc: Loc = NOWHERE

    @property
    def manual(self) -> bool:
        return self.type == "manual"


@dataclass(frozen=True)
class Traffic:
    """Our extension: passing the stage moves ``route`` to ``weight`` % new stack."""

    route: str
    weight: int
    loc: Loc = NOWHERE


@dataclass(frozen=True)
class Stage:
    name: str
    jobs: tuple[Job, ...]
    approval: Approval = Approval()
    fetch_materials: bool = True
    clean_workspace: bool = False
    keep_artifacts: bool = False
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    secure_variables: Mapping[str, str] = field(default_factory=dict)
    traffic: Traffic | None = None
    loc: Loc = NOWHERE
    # values of stage keys added with config.register_stage_key that have no field above
    extensions: Mapping[str, Any] = field(default_factory=dict)


# --- materials -------------------------------------------------------------


@dataclass(frozen=True)
class GitMaterial:
    name: str
    url: str
    branch: str = "master"
    includes: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    shallow_clone: bool = False
    destination: str | None = None
    auto_update: bool = True
    username: str | None = None
    password: str | None = None  # plain text in YAML: GoCD allows it, we warn
    encrypted_password: str | None = None
    loc: Loc = NOWHERE
    kind: str = "git"


@dataclass(frozen=True)
class DependencyMaterial:
    name: str
    pipeline: str
    stage: str
    ignore_for_scheduling: bool = False
    loc: Loc = NOWHERE
    kind: str = "dependency"


Material = Union[GitMaterial, DependencyMaterial]


@dataclass(frozen=True)
class Timer:
    spec: str
    only_on_changes: bool = False
    loc: Loc = NOWHERE


# --- pipelines, environments, workspace config ------------------------------

LOCK_BEHAVIORS = ("none", "lockOnFailure", "unlockWhenFinished")


@dataclass(frozen=True)
class Pipeline:
    name: str
    stages: tuple[Stage, ...]
    group: str = "defaultGroup"
    label_template: str = "${COUNT}"
    lock_behavior: str = "none"
    parameters: Mapping[str, str] = field(default_factory=dict)
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    secure_variables: Mapping[str, str] = field(default_factory=dict)
    materials: tuple[Material, ...] = ()
    timer: Timer | None = None
    template: str | None = None  # name of the template the stages came from
    display_order: int | None = None
    tracking_tool: Mapping[str, str] | None = None
    fan_in: bool = True  # our extension: per-pipeline fan-in switch
    trigger: str = "batch"  # our extension: batch | each_commit
    loc: Loc = NOWHERE

    def stage(self, name: str) -> Stage | None:
        for s in self.stages:
            if s.name == name:
                return s
        return None


@dataclass(frozen=True)
class Environment:
    name: str
    pipelines: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    secure_variables: Mapping[str, str] = field(default_factory=dict)
    production: bool = False  # our extension, used by metrics
    loc: Loc = NOWHERE


@dataclass(frozen=True)
class Config:
    """Everything loaded from a workspace's pipeline files."""

    pipelines: Mapping[str, Pipeline] = field(default_factory=dict)
    environments: Mapping[str, Environment] = field(default_factory=dict)
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    warnings: tuple[Any, ...] = ()  # workbench.errors.Problem with severity="warning"
    extensions: Mapping[str, Any] = field(default_factory=dict)  # routes, package repos, ...

    def pipeline(self, name: str) -> Pipeline:
        from ..errors import NotFound

        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise NotFound(f"no pipeline named {name!r} (known: {known})") from None

    def environment_of(self, pipeline: str) -> Environment | None:
        for env in self.environments.values():
            if pipeline in env.pipelines:
                return env
        return None

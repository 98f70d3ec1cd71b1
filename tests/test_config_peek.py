"""The quick look `workbench run` takes at a pipeline's first stage before the features load."""
from __future__ import annotations

from typing import Any

from workbench.config.peek import first_stage_notebooks


def test_counts_the_first_stage_notebook_jobs_and_names_their_kernel(workspace: Any) -> None:
    workspace.write("a.yaml", """
        format_version: 10
        pipelines:
          other: {group: g, materials: {}, stages: [{s: {jobs: {j: {tasks: [{exec: {command: "true"}}]}}}}]}
        """)
    workspace.write("b.gocd.yaml", """
        format_version: 10
        pipelines:
          nb:
            group: g
            stages:
              - first:
                  jobs:
                    a: {tasks: [{exec: {command: "true"}}, {notebook: {path: x.ipynb, kernel: ir}}]}
                    b: {tasks: [{notebook: {path: y.ipynb}}]}
                    c: {tasks: [{exec: {command: "true"}}]}
              - second:
                  jobs:
                    d: {tasks: [{notebook: {path: z.ipynb}}]}
        """)
    assert first_stage_notebooks(workspace.root, "nb") == (2, "ir")
    assert first_stage_notebooks(workspace.root, "other") is None  # no notebook job first
    assert first_stage_notebooks(workspace.root, "missing") is None


def test_anything_unexpected_is_no_hint(workspace: Any) -> None:
    """Templates, broken YAML and odd shapes give None: the run then warms its kernels once the config is loaded."""
    workspace.write("a.yaml", """
        format_version: 10
        pipelines:
          templated: {group: g, template: t}
          odd: {group: g, stages: {not: a list}}
          empty: {group: g, stages: []}
          twokeys: {group: g, stages: [{a: {jobs: {}}, b: {jobs: {}}}]}
          tasksmap: {group: g, stages: [{s: {jobs: {j: {tasks: {notebook: {path: x.ipynb}}}}}}]}
        """)
    for name in ("templated", "odd", "empty", "twokeys", "tasksmap"):
        assert first_stage_notebooks(workspace.root, name) is None, name
    workspace.write("0broken.yaml", "pipelines: {broken: [\n")  # read first, and does not parse: no guess at all
    workspace.write("b.yaml", "pipelines: {nb: {stages: [{s: {jobs: {j: {tasks: [{notebook: {path: x}}]}}}}]}}\n")
    assert first_stage_notebooks(workspace.root, "nb") is None
    assert first_stage_notebooks(workspace.root / "nowhere", "templated") is None

"""A real Dask cluster of ``workbench agent`` processes, shared by the Dask test modules.

A LocalCluster scheduler with no workers of its own, and one ``workbench agent``
process (a Dask nanny and worker) per agent, each with its own options, so that
routing by resources and environments, lost agents and reruns are exercised
through Dask itself.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from conftest import require_module


def require_distributed() -> None:
    """Dask is like a service: a missing one is a skip locally and a failure under CI (call at module level)."""
    require_module("distributed", "pip install 'release-workbench[dask]'")


@contextlib.contextmanager
def agent_cluster(logs: Path, agents: Mapping[str, Sequence[str]]) -> Iterator[Any]:
    """The cluster with ``agents`` (name -> ``workbench agent`` options) connected; all stopped afterwards."""
    from distributed import Client, LocalCluster

    cl = LocalCluster(n_workers=0, processes=True, dashboard_address="127.0.0.1:0", host="127.0.0.1")
    procs = []
    for name, opts in agents.items():
        with open(logs / f"{name}.log", "wb") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "workbench", "agent", "--scheduler", cl.scheduler_address, "--name", name,
                 *opts], stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
    client = Client(cl.scheduler_address, set_as_default=False)
    try:
        try:
            client.wait_for_workers(len(agents), timeout=90)
        except TimeoutError:
            tails = {n: (logs / f"{n}.log").read_text()[-1500:] for n in agents}
            raise AssertionError(f"the agents did not all connect; their logs: {tails}") from None
        yield cl
    finally:
        client.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 1.5  # a graceful Dask close may take its time: not what we test
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the agent's worker process with it
            except ProcessLookupError:
                pass
            p.wait()
        cl.close()

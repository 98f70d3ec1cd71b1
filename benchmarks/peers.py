"""The tools users would pick instead, each in its own virtual environment under benchmarks/.venvs/.

A peer's environment is created the first time a benchmark needs it (``pip
install`` from the package index) and reused afterwards: a stamp file holds
the requirements it was built from, so changing them here rebuilds it. Their
dependencies never touch the workbench's own environment (Prefect alone
brings a web server and a hundred packages).

* **Prefect** 3: flows of subprocess tasks, the orchestrator a Python team
  would reach for. Its ephemeral local API server is started once per
  benchmark process and not timed (a warm-up flow runs first).
* **Ploomber**: a pipeline of notebooks executed through papermill. It is
  pinned to *this* environment's pandas so the comparison is with current
  pandas: on 2026-11-27 ``ploomber 0.23.3`` installed and ran with pandas 3.1.1
  (see benchmarks/README.md). If it ever stops installing with the current
  pandas, :func:`notebook_peer` says so and the notebook workload reports
  the papermill baselines without a peer row.

``python benchmarks/peers.py`` creates (or checks) every peer and prints its version.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"  # gitignored
INSTALL_TIMEOUT = 1200.0


def _main_pandas() -> str:
    try:
        return metadata.version("pandas")
    except metadata.PackageNotFoundError:
        return ""


@dataclass(frozen=True)
class PeerSpec:
    name: str
    requirements: tuple[str, ...]
    version_of: str  # the distribution whose version we report


SPECS: dict[str, PeerSpec] = {
    "prefect": PeerSpec("prefect", ("prefect>=3,<4",), "prefect"),
    "ploomber": PeerSpec(
        "ploomber",
        ("ploomber", "papermill", "ipykernel", "jupytext", *((f"pandas=={_main_pandas()}",) if _main_pandas() else ())),
        "ploomber",
    ),
}


@dataclass(frozen=True)
class Peer:
    name: str
    python: Path
    version: str

    @property
    def bin(self) -> Path:
        return self.python.parent

    def env(self, **extra: str) -> dict[str, str]:
        """The environment to run it with: its venv first on PATH, none of the workbench's variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKBENCH_", "VIRTUAL_ENV", "PYTHONPATH"))}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.python.parent.parent)
        env.update(extra)
        return env


class PeerUnavailable(Exception):
    """The peer could not be installed here; the message says why (pip's own last lines)."""


_locks: dict[str, threading.Lock] = {name: threading.Lock() for name in SPECS}


def ensure(name: str, *, quiet: bool = False) -> Peer:
    """The peer's environment, created when missing or built from other requirements."""
    spec = SPECS[name]
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    wanted = "\n".join(spec.requirements)
    with _locks[name]:
        if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
            failed = VENVS / f"{name}.failed"
            if failed.exists() and failed.read_text().startswith(wanted + "\n---\n"):
                raise PeerUnavailable(failed.read_text().split("\n---\n", 1)[1])
            if not quiet:
                print(f"[peers] creating {venv} ({' '.join(spec.requirements)}): a few minutes, once", flush=True)
            shutil.rmtree(venv, ignore_errors=True)
            VENVS.mkdir(parents=True, exist_ok=True)
            subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True)
            p = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                *spec.requirements], capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            if p.returncode != 0:
                why = "\n".join(ln for ln in (p.stderr or p.stdout).splitlines() if "is ignored" not in ln)[-2000:]
                failed.write_text(f"{wanted}\n---\n{why}")
                raise PeerUnavailable(why)
            stamp.write_text(wanted)
        version = subprocess.run([str(python), "-c", f"from importlib.metadata import version; print(version({spec.version_of!r}))"],
                                 capture_output=True, text=True).stdout.strip()
    return Peer(name, python, version or "?")


def ensure_all(names: list[str] | None = None) -> dict[str, Peer | PeerUnavailable]:
    """Create the missing environments side by side (pip is mostly waiting on the network)."""
    out: dict[str, Peer | PeerUnavailable] = {}

    def one(n: str) -> None:
        try:
            out[n] = ensure(n)
        except (PeerUnavailable, subprocess.SubprocessError, OSError) as exc:
            out[n] = exc if isinstance(exc, PeerUnavailable) else PeerUnavailable(str(exc))

    threads = [threading.Thread(target=one, args=(n,)) for n in (names or list(SPECS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def notebook_peer() -> Peer | PeerUnavailable:
    """Ploomber, or why not."""
    try:
        return ensure("ploomber")
    except PeerUnavailable as exc:
        return PeerUnavailable(f"ploomber does not install with pandas {_main_pandas()}: {exc}")


def _base_python() -> str:
    """The interpreter the workbench's venv was made from (a venv of a venv works too, but is slower to start)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if Path(base).exists() else sys.executable


if __name__ == "__main__":
    for n, result in ensure_all().items():
        if isinstance(result, Peer):
            print(f"{n:10} {result.version:10} {result.python}")
        else:
            print(f"{n:10} unavailable: {result}")

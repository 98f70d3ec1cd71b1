"""The job hook that puts each git material, at the run's exact revision, into the job's folder.

It runs where the job runs (a local thread or a Dask worker) and gets only
plain data from the JobSpec: the checkout list the engine built from the
run's recorded revisions. On the machine that polls, the workspace's bare
mirror is the source (hard links, no network); elsewhere, the remote itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MaterialError
from ..tasks import TaskError
from .git import checkout, mirror_path

MIRRORS = Path(".workbench") / "mirrors"


class CheckoutHook:
    def prepare(self, spec: Any, ctx: Any) -> None:
        entries = (spec.context or {}).get("materials") or ()
        if not entries:
            return
        base = Path(spec.workdir)
        mirrors = Path(spec.workspace) / MIRRORS
        for m in entries:
            dest = (base / (m.get("destination") or "")).resolve()
            if base.resolve() not in (dest, *dest.parents):
                where = m.get("destination")
                raise TaskError(f"material {m['name']}: destination {where!r} is outside the job's folder")
            mirror = mirror_path(mirrors, m["url"])
            try:
                checkout(m["url"], m["revision"], dest, mirror=mirror, shallow=bool(m.get("shallow")))
            except MaterialError as exc:
                raise TaskError(f"material {m['name']}: {exc}") from None
            where = m.get("destination") or "."
            ctx.say(f"material {m['name']}: {m['revision'][:12]} checked out into {where}"
                    + (" (shallow)" if m.get("shallow") else ""))

    def finish(self, spec: Any, ctx: Any, outcome: Any) -> Any:
        return outcome


HOOK = CheckoutHook()

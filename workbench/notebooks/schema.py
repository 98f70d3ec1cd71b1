"""nbformat's notebook validator, generated once per machine instead of once per process.

nbformat validates every notebook it reads or writes with fastjsonschema,
which turns the notebook schema into Python source and compiles it the first
time in each process: 80-150 ms of CPU, the largest part of a trivial
notebook job in a fresh ``workbench run`` (and of every Dask worker's first
job). fastjsonschema can write that source out as a module
(``compile_to_code``); we keep it compiled (``marshal``) in the user's cache
folder, keyed by the schema, the fastjsonschema version and Python's bytecode
format, so the next process's validator costs a millisecond. The validation
itself is fastjsonschema's, unchanged.

Anything unexpected (an nbformat without ``FastJsonSchemaValidator``, a
read-only cache folder) leaves nbformat as it is. ``WORKBENCH_SCHEMA_CACHE=0``
turns it off.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import marshal
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "release-workbench" / "nbschema"


def cached_validator(schema: Any) -> Callable[[Any], Any]:
    """fastjsonschema's validation function for ``schema``, from the cache folder when it is there."""
    import fastjsonschema

    text = json.dumps(schema, sort_keys=True)
    version = f"{fastjsonschema.VERSION}|{importlib.util.MAGIC_NUMBER.hex()}"  # the bytecode's format
    key = hashlib.sha256(f"{text}|{version}".encode()).hexdigest()[:24]
    path = cache_dir() / f"nbschema-{key}.marshal"
    try:
        code = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        code = compile(fastjsonschema.compile_to_code(schema), f"<nbformat schema {key}>", "exec")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps(code))
        os.replace(tmp, path)  # concurrent writers write the same bytes; readers never see half a file
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102  (fastjsonschema's generated code for nbformat's own schema)
    return namespace["validate"]  # type: ignore[no-any-return]


def install() -> None:
    """Make nbformat's fastjsonschema validator take its function from :func:`cached_validator`."""
    if os.environ.get("WORKBENCH_SCHEMA_CACHE", "1") == "0":
        return
    try:
        from nbformat import json_compat
    except ImportError:  # pragma: no cover
        return
    cls = getattr(json_compat, "FastJsonSchemaValidator", None)
    base = getattr(json_compat, "JsonSchemaValidator", None)
    if cls is None or base is None or getattr(cls, "_workbench_cached", False):
        return
    compile_once = cls.__init__

    def __init__(self: Any, schema: Any) -> None:
        try:
            base.__init__(self, schema)
            self._validator = cached_validator(schema)
        except Exception:  # noqa: BLE001  (no cache folder, an unexpected nbformat: its own way)
            compile_once(self, schema)

    cls.__init__ = __init__
    cls._workbench_cached = True

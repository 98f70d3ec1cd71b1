"""The release service: ``workbench server``, one authenticated HTTP API for the team.

Layout (imports are light here: the store's migrations import ``tokens``
without pulling in the web framework):

* ``tokens``   — the server's own API tokens (hashes in the store);
* ``auth``     — who is calling: API token, JupyterHub token or sign-in, trusted proxy;
* ``app``      — the FastAPI adapters over ``workbench.service`` (no business logic);
* ``process``  — the long-lived process: serve lock, scheduler thread, uvicorn.

See docs/server.md.
"""

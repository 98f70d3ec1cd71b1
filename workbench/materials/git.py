"""Git materials through GitPython: one bare mirror per URL, polled cheaply.

Polling asks the remote for its branch heads (``ls-remote``) and fetches into
the mirror only when a head moved, so a pass over fifty unchanged repositories
costs fifty small ``ls-remote`` calls and nothing else. Jobs clone from the
mirror (hard links, no network), so a stage with ten jobs does not fetch the
remote ten times. Every git failure becomes a :class:`MaterialError` with the
remote's own words and any password masked.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from filelock import FileLock

from ..errors import MaterialError

if TYPE_CHECKING:
    import git


def _git() -> Any:
    """GitPython, imported on first use.

    Importing it costs 0.1-0.2 s (it runs ``git version`` twice), which a
    ``workbench run`` of a pipeline without git materials would pay for nothing.
    """
    import git

    return git

__all__ = ["CommitInfo", "Mirror", "checkout", "fingerprint", "normalize_url", "mirror_path", "auth_url"]

LS_REMOTE_TIMEOUT = 60.0
FETCH_TIMEOUT = 600.0
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true", "LC_ALL": "C"}


FIRST_RUN_COMMITS = 100  # commits a material's first run records (all reachable from its revision, newest first)


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str
    author_email: str
    author_time: float
    commit_time: float
    message: str
    files: tuple[str, ...] = ()


def _is_local(url: str) -> bool:
    if url.startswith("file://"):
        return True
    if "://" in url:
        return False
    return not re.match(r"^[\w.-]+@[\w.-]+:", url)  # scp-like user@host:path


def normalize_url(url: str, base: Path | None = None) -> str:
    """A stable spelling of a URL: local paths absolute, no trailing slash."""
    url = url.strip()
    if _is_local(url):
        raw = url[len("file://"):] if url.startswith("file://") else url
        p = Path(raw).expanduser()
        if not p.is_absolute() and base is not None:
            p = base / p
        return str(p.resolve())
    return url.rstrip("/")


def fingerprint(url: str, branch: str, base: Path | None = None) -> str:
    """What identifies a git material across pipelines (fan-in, shared polling)."""
    return f"git:{normalize_url(url, base)}#{branch}"


def mirror_path(mirrors_dir: Path, url: str) -> Path:
    norm = normalize_url(url)
    tail = re.sub(r"[^\w.-]+", "_", norm.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git"))[:40] or "repo"
    return mirrors_dir / f"{tail}-{hashlib.sha1(norm.encode()).hexdigest()[:12]}.git"


def auth_url(url: str, username: str | None, password: str | None) -> str:
    """Put GoCD-style material credentials into an http(s) URL for git to use."""
    if not (username or password) or not url.startswith(("http://", "https://")):
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    cred = quote(username or "", safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit((parts.scheme, f"{cred}@{host}", parts.path, parts.query, parts.fragment))


def _mask(text: str, secret: str | None) -> str:
    return text.replace(secret, "****") if secret else text


def _git_error(exc: Exception, what: str, secret: str | None = None) -> MaterialError:
    if isinstance(exc, _git().GitCommandError):
        lines = [ln.strip() for ln in str(exc.stderr or "").splitlines() if ln.strip()]
        lines = [ln.removeprefix("stderr: ").strip("'").strip() for ln in lines]
        useful = [ln for ln in lines if ln.lower().startswith(("fatal", "error", "remote:"))] or lines
        detail = useful[0] if useful else f"git exited with status {exc.status}"
    else:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return MaterialError(_mask(f"{what}: {detail}", secret))


def _ls_remote(remote: str) -> str:
    """``git ls-remote --heads REMOTE``'s output, from a plain subprocess.

    A tick asks every repository once (500 at 10,000 pipelines): GitPython's ``execute`` with
    ``kill_after_timeout`` starts a watchdog thread per call and a ``Popen`` wrapper around it, which a py-spy of a
    quiet tick put at a fifth of its samples. The failures are GitPython's own ``GitCommandError`` (status and
    stderr), so :func:`_git_error` words them as before; a call past ``LS_REMOTE_TIMEOUT`` is killed.
    """
    import subprocess

    argv = ["git", "ls-remote", "--heads", remote]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **GIT_ENV})
    try:
        out, err = proc.communicate(timeout=LS_REMOTE_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise _git().GitCommandError(argv, -9, f"fatal: no answer in {LS_REMOTE_TIMEOUT:g} s") from None
    if proc.returncode:
        raise _git().GitCommandError(argv, proc.returncode, err.decode("utf-8", "replace"))
    return out.decode("utf-8", "replace")


_HISTORY: dict[tuple[str, str, int], tuple[str, ...]] = {}  # (mirror, head sha, depth) -> history
_HISTORY_MAX = 4096
_HISTORY_LOCK = threading.Lock()
_HISTORY_GATES: dict[tuple[str, str, int], threading.Lock] = {}  # keys being read by some thread now


class Mirror:
    """A bare mirror of one repository URL under ``.workbench/mirrors/``."""

    def __init__(self, mirrors_dir: Path, url: str, *, remote_url: str | None = None,
                 secret: str | None = None) -> None:
        self.url = normalize_url(url)
        self.remote = remote_url or (self.url if _is_local(url) else url)
        self.secret = secret  # masked in every message
        self.path = mirror_path(mirrors_dir, url)
        self._repo: git.Repo | None = None

    # -- setup ---------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.path / "HEAD").exists()

    def repo(self) -> git.Repo:
        if self._repo is None:
            if not self.exists:
                self._init()
            self._repo = _git().Repo(self.path)
            self._repo.git.update_environment(**GIT_ENV)
        return self._repo

    def _lock(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock", timeout=FETCH_TIMEOUT)

    def _init(self) -> None:
        with self._lock():
            if self.exists:
                return
            tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            repo = _git().Repo.init(tmp, bare=True, mkdir=True)
            with repo.config_writer() as cw:
                cw.set_value('remote "origin"', "url", self.remote)
                cw.set_value('remote "origin"', "fetch", "+refs/heads/*:refs/heads/*")
                cw.set_value("uploadpack", "allowAnySHA1InWant", "true")
                cw.set_value("gc", "auto", "0")  # job clones may still need unreachable objects
            repo.close()
            os.replace(tmp, self.path)

    # -- polling -------------------------------------------------------------
    def remote_heads(self) -> dict[str, str]:
        """Branch → sha as the remote has them now."""
        try:
            out = _ls_remote(self.remote)
        except Exception as exc:
            raise _git_error(exc, f"cannot reach {self.url}", self.secret) from None
        heads = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref.startswith("refs/heads/"):
                heads[ref[len("refs/heads/"):]] = sha
        return heads

    def local_head(self, branch: str) -> str | None:
        if not self.exists:
            return None
        found = _plain_ref(self.path, branch)
        if found is not None:
            return found
        try:  # a symbolic or odd ref: GitPython's reading (it opens the repository: its config parse)
            from git.refs.symbolic import SymbolicReference

            return SymbolicReference.dereference_recursive(self.repo(), f"refs/heads/{branch}")
        except (ValueError, OSError):
            return None

    def fetch(self) -> None:
        repo = self.repo()  # creates the mirror under its own lock first
        with self._lock():
            try:
                repo.git.execute(
                    ["git", "fetch", "--prune", "--quiet", "origin"], kill_after_timeout=FETCH_TIMEOUT,
                    env={**os.environ, **GIT_ENV},
                )
            except Exception as exc:
                raise _git_error(exc, f"cannot fetch {self.url}", self.secret) from None

    def poll(self, branches: Iterable[str]) -> dict[str, str | MaterialError]:
        """The head of each branch, fetching only when one moved; a missing branch is an error."""
        wanted = sorted(set(branches))
        heads = self.remote_heads()
        if any(b in heads and self.local_head(b) != heads[b] for b in wanted):
            self.fetch()
        out: dict[str, str | MaterialError] = {}
        for b in wanted:
            if b in heads:
                out[b] = heads[b]
            else:
                known = ", ".join(sorted(heads)[:10]) or "none"
                out[b] = MaterialError(f"branch {b!r} does not exist in {self.url} (branches: {known})")
        return out

    # -- history -------------------------------------------------------------
    def resolve(self, rev: str) -> str:
        """A sha, short sha, branch or tag → the full commit sha."""
        try:
            return self.repo().git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}")
        except _git().GitCommandError:
            raise MaterialError(f"revision {rev!r} is not in {self.url}") from None

    def has(self, sha: str) -> bool:
        try:
            self.repo().git.cat_file("-e", f"{sha}^{{commit}}")
            return True
        except _git().GitCommandError:
            return False

    def commits(self, old: str | None, new: str, *, limit: int = 500) -> list[CommitInfo]:
        """Commits in ``old..new`` (newest first) with the files each touched.

        Without ``old`` (a material's first run, or a force push that lost it) the run brings
        everything reachable from ``new``: the newest ``FIRST_RUN_COMMITS`` of them, so the first
        deployment's lead times count every commit it delivered (docs/metrics.md), boundedly.
        """
        rng = [new, f"--max-count={min(limit, FIRST_RUN_COMMITS)}"] if not old else [f"{old}..{new}", f"--max-count={limit}"]
        fmt = "%x1e%H%x1f%an%x1f%ae%x1f%at%x1f%ct%x1f%B%x1f"
        try:
            out = self.repo().git.execute(
                ["git", "-c", "core.quotePath=false", "log", f"--format={fmt}", "--name-only", *rng],
                strip_newline_in_stdout=False,
            )
        except _git().GitCommandError as exc:
            raise _git_error(exc, f"cannot read history of {self.url}", self.secret) from None
        commits = []
        for rec in str(out).split("\x1e")[1:]:
            sha, author, email, at, ct, message, files = rec.split("\x1f", 6)
            commits.append(CommitInfo(
                sha, author, email, float(at), float(ct), message.strip(),
                tuple(f for f in files.strip("\n").splitlines() if f),
            ))
        return commits

    def changed_files(self, old: str, new: str) -> list[str]:
        try:
            out = self.repo().git.execute(["git", "-c", "core.quotePath=false", "diff", "--name-only", "-z", old, new])
        except _git().GitCommandError as exc:
            raise _git_error(exc, f"cannot diff {self.url}", self.secret) from None
        return [f for f in str(out).split("\0") if f]

    def is_ancestor(self, older: str, newer: str) -> bool:
        try:
            self.repo().git.merge_base("--is-ancestor", older, newer)
            return True
        except _git().GitCommandError:
            return False

    def first_parent_history(self, head: str, n: int = 20) -> list[str]:
        """The first-parent history from ``head``, newest first; memoised, since a commit's history never changes.

        Every fan-in pipeline sharing a repository with its upstreams asks this of the
        same head on each pass: twenty pipelines on one repository cost one ``git rev-list``,
        and (kept beside the mirror) none in the next process.
        """
        key = (str(self.path), head, n)
        found = _HISTORY.get(key)
        if found is None:
            with _HISTORY_LOCK:  # one flight per key: the deciding threads ask for the same head at once
                gate = _HISTORY_GATES.setdefault(key, threading.Lock())
            with gate:
                found = _HISTORY.get(key)
                if found is None:
                    found = self._kept_history(head, n)
                if found is None:
                    out = self.repo().git.rev_list("--first-parent", f"--max-count={n}", head)
                    found = tuple(ln for ln in str(out).splitlines() if ln)
                    self._keep_history(head, n, found)
                with _HISTORY_LOCK:
                    if len(_HISTORY) >= _HISTORY_MAX:
                        _HISTORY.pop(next(iter(_HISTORY)))  # oldest first: dicts keep insertion order
                    _HISTORY[key] = found
            with _HISTORY_LOCK:
                _HISTORY_GATES.pop(key, None)
        return list(found)

    # a commit's first-parent history never changes: kept beside the mirror, so each `tick` process
    # (not only a long-running serve) reads a repository's history once per new head
    HISTORY_FILES = 256  # per mirror; beyond, the older half is removed

    def _history_file(self, head: str, n: int) -> Path | None:
        if not re.fullmatch(r"[0-9a-f]{40,64}", head):
            return None  # only a full sha names a fixed history (a branch name moves)
        return self.path.with_name(self.path.name + ".history") / f"{head}-{n}"

    def _kept_history(self, head: str, n: int) -> tuple[str, ...] | None:
        path = self._history_file(head, n)
        try:
            lines = tuple(path.read_text().split()) if path is not None else ()
        except OSError:
            return None
        return lines if lines and lines[0] == head else None

    def _keep_history(self, head: str, n: int, history: tuple[str, ...]) -> None:
        path = self._history_file(head, n)
        if path is None or not history:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text("\n".join(history) + "\n")
            os.replace(tmp, path)
            kept = sorted(path.parent.iterdir(), key=lambda f: f.stat().st_mtime)
            if len(kept) > self.HISTORY_FILES:
                for old in kept[: len(kept) // 2]:
                    old.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only or full disk: the memo is only a shortcut


_SAFE_BRANCH = re.compile(r"[\w][\w.+@-]*(/[\w][\w.+@-]*)*")
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def _plain_ref(git_dir: Path, branch: str) -> str | None:
    """``refs/heads/<branch>`` of a bare repository read as git stores it (the loose file, else packed-refs),
    without opening the repository: a poll of 500 mirrors asked GitPython to parse 500 configs for this.
    None when the ref is not a plain sha there (symbolic, missing, an unusual name): the caller asks GitPython."""
    if not _SAFE_BRANCH.fullmatch(branch) or ".." in branch or branch.endswith((".lock", ".")):
        return None
    ref = f"refs/heads/{branch}"
    try:
        text = (git_dir / ref).read_text().strip()
    except FileNotFoundError:
        text = ""
    except OSError:
        return None
    if text:
        return text if _SHA.fullmatch(text) else None
    try:
        packed = (git_dir / "packed-refs").read_text()
    except OSError:
        return None
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name == ref and _SHA.fullmatch(sha):
            return sha
    return None


def checkout(url: str, sha: str, dest: Path, *, mirror: Path | None = None, shallow: bool = False,
             remote_url: str | None = None, secret: str | None = None) -> str:
    """Put ``sha`` of ``url`` into ``dest`` as a working copy whose origin is ``url``.

    From the local mirror when there is one (hard links, no network); from
    the remote itself on a worker that has no mirror. Returns where it came from.
    """
    source = str(mirror) if mirror is not None and (mirror / "HEAD").exists() else (remote_url or url)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise MaterialError(f"cannot check out {url} into {dest}: the folder is not empty (set a destination)")
    env = {**os.environ, **GIT_ENV}
    g = _git().Git(str(dest))
    try:
        if shallow:
            g.execute(["git", "init", "-q"], env=env)
            src = source if "://" in source or not _is_local(source) else "file://" + source
            g.execute(["git", "fetch", "-q", "--depth", "1", src, sha], env=env, kill_after_timeout=FETCH_TIMEOUT)
            g.execute(["git", "-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD"], env=env)
            g.execute(["git", "remote", "add", "origin", url], env=env)
        else:
            g.execute(["git", "clone", "-q", "--no-checkout", source, "."], env=env, kill_after_timeout=FETCH_TIMEOUT)
            g.execute(["git", "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", sha], env=env)
            if source != url:
                g.execute(["git", "remote", "set-url", "origin", url], env=env)
    except Exception as exc:
        raise _git_error(exc, f"cannot check out {sha[:12]} of {url}", secret) from None
    return source


def env_with(extra: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **GIT_ENV, **extra}

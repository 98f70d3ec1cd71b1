"""Secure variables: Fernet ciphertext in the YAML, plain values only in job environments.

The key comes from ``WORKBENCH_SECRET_KEY`` or from ``.workbench/secret.key``
(which must be mode 0600: a key anyone can read protects nothing).
``WORKBENCH_SECRET_KEY`` may hold several comma-separated keys for rotation:
the first encrypts, any of them decrypts (cryptography's MultiFernet).

Plain values never leave the job: the engine hands them to the executor as
``JobSpec.secrets`` and everything that writes what a job produced masks
them — the log (``tasks.process.OutputPump`` and ``JobContext.say``), the
job's outcome reason before it reaches the store or the CLI (the job hook
below), and executed notebooks (``workbench.notebooks``).

GoCD's ``AES:`` values are refused with a clear message: they are encrypted
with the GoCD server's cipher key, which the workbench does not have.
"""
from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .errors import SecretError

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

    from .workspace import Workspace

KEY_ENV = "WORKBENCH_SECRET_KEY"
KEY_FILE_ENV = "WORKBENCH_SECRET_KEY_FILE"
KEY_FILE = "secret.key"
MASK = "********"


def key_path(ws: "Workspace") -> Path:
    return Path(os.environ.get(KEY_FILE_ENV) or ws.state / KEY_FILE)


def _fernet(ws: "Workspace", *, create: bool = False) -> "MultiFernet":
    from cryptography.fernet import Fernet, MultiFernet

    raw = os.environ.get(KEY_ENV, "").strip()
    if not raw:
        path = key_path(ws)
        if not path.exists():
            if not create:
                raise SecretError(f"no secret key: set {KEY_ENV} or run `workbench encrypt` to create {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SecretError(f"key file {path} has mode {mode:04o}; it must be 0600 (chmod 600 {path})")
        raw = path.read_text().strip()
    try:
        return MultiFernet([Fernet(k.strip().encode()) for k in raw.split(",") if k.strip()])
    except (ValueError, TypeError):
        raise SecretError("the secret key is not a valid Fernet key (32 url-safe base64-encoded bytes)") from None


def generate_key() -> str:
    """A new key, for ``WORKBENCH_SECRET_KEY`` or the key file."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def encrypt(value: str, ws: "Workspace") -> str:
    return _fernet(ws, create=True).encrypt(value.encode()).decode()


def decrypt_variables(ciphertexts: Mapping[str, str], ws: "Workspace") -> dict[str, str]:
    from cryptography.fernet import InvalidToken

    f = _fernet(ws)
    out: dict[str, str] = {}
    for name, token in ciphertexts.items():
        if token.startswith("AES:"):
            raise SecretError(f"secure variable {name} holds a GoCD 'AES:' value, encrypted with the GoCD server's "
                              "key; re-encrypt the plain value with `workbench encrypt`")
        try:
            out[name] = f.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretError(f"secure variable {name} cannot be decrypted with this key") from None
    return out


def rotate(ciphertext: str, ws: "Workspace") -> str:
    """Re-encrypt with the first key of ``WORKBENCH_SECRET_KEY`` (after adding a new key in front)."""
    from cryptography.fernet import InvalidToken

    try:
        return _fernet(ws).rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretError("this value cannot be decrypted with any of the keys") from None


# -- masking ------------------------------------------------------------------------


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``********`` (longest first)."""
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text


def mask_data(value: Any, secrets: Iterable[str]) -> Any:
    """Mask secrets in strings nested in dicts, lists and tuples (outcome details, notebook outputs)."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return mask(value, secrets)
    if isinstance(value, Mapping):
        return {k: mask_data(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_data(v, secrets) for v in value)
    return value


class _MaskingHook:
    """Job hook: a job's outcome (reason, details) is masked before the engine stores or prints it."""

    def prepare(self, spec: Any, ctx: Any) -> None:
        return None

    def finish(self, spec: Any, ctx: Any, outcome: Any) -> Any:
        secrets = getattr(spec, "secrets", ())
        if not secrets:
            return outcome
        return dataclasses.replace(
            outcome,
            reason=mask(outcome.reason, secrets) if outcome.reason else outcome.reason,
            details=mask_data(dict(outcome.details), secrets),
        )


MASKING_HOOK = _MaskingHook()

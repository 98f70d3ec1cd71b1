"""Secure variables: Fernet ciphertext in the YAML, plain values only in job environments.

The key comes from ``WORKBENCH_SECRET_KEY`` or from ``.workbench/secret.key``
(which must be mode 0600: a key anyone can read protects nothing).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from .errors import SecretError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

    from .workspace import Workspace

KEY_ENV = "WORKBENCH_SECRET_KEY"
KEY_FILE = "secret.key"


def key_path(ws: "Workspace") -> Path:
    return Path(os.environ.get("WORKBENCH_SECRET_KEY_FILE") or ws.state / KEY_FILE)


def _fernet(ws: "Workspace", *, create: bool = False) -> "Fernet":
    from cryptography.fernet import Fernet

    raw = os.environ.get(KEY_ENV)
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
        return Fernet(raw.encode())
    except (ValueError, TypeError):
        raise SecretError("the secret key is not a valid Fernet key (32 url-safe base64-encoded bytes)") from None


def encrypt(value: str, ws: "Workspace") -> str:
    return _fernet(ws, create=True).encrypt(value.encode()).decode()


def decrypt_variables(ciphertexts: Mapping[str, str], ws: "Workspace") -> dict[str, str]:
    from cryptography.fernet import InvalidToken

    f = _fernet(ws)
    out: dict[str, str] = {}
    for name, token in ciphertexts.items():
        try:
            out[name] = f.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretError(f"secure variable {name} cannot be decrypted with this key") from None
    return out

"""GoCD's server-side secret format, ``AES:<base64 IV>:<base64 ciphertext>``.

GoCD (since 18.x) encrypts secure variables and material passwords with
AES-128 in CBC mode with PKCS#5 padding, a random IV per value, and the key
written as hexadecimal in the server's ``cipher.aes`` file. Only a holder of
that file can decrypt; the importer uses it once to move each value into the
workbench's own Fernet secrets and never writes a plain value anywhere.
:func:`encrypt` is the same operation GoCD performs, kept so tests can make
values exactly as a GoCD server would.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from ...errors import ImportRefused

_HEX = re.compile(r"[0-9a-fA-F]{32}")


class CannotDecrypt(ValueError):
    """This value cannot be decrypted with this key (another server's key, or not AES: at all)."""


def read_cipher_file(path: Path) -> bytes:
    """The 16-byte key of a GoCD ``cipher.aes`` (32 hexadecimal digits)."""
    try:
        text = path.read_text("ascii", errors="replace").strip()
    except OSError as exc:
        raise ImportRefused(f"{path}: cannot read the cipher file: {exc.strerror or exc}") from None
    if not _HEX.fullmatch(text):
        raise ImportRefused(f"{path}: not a GoCD cipher.aes file (expected 32 hexadecimal digits, the AES-128 key "
                            "the GoCD server keeps in config/cipher.aes)")
    return binascii.unhexlify(text)


def is_aes(value: str) -> bool:
    return value.startswith("AES:")


def decrypt(value: str, key: bytes) -> str:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    parts = value.split(":")
    if len(parts) != 3 or parts[0] != "AES":
        raise CannotDecrypt("not in GoCD's AES:<iv>:<ciphertext> form")
    try:
        iv = base64.b64decode(parts[1], validate=True)
        data = base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError):
        raise CannotDecrypt("its IV or ciphertext is not base64") from None
    if len(iv) != 16 or not data or len(data) % 16:
        raise CannotDecrypt("its IV or ciphertext has the wrong length")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
        return plain.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise CannotDecrypt("it does not decrypt with this cipher file (a different GoCD server's key?)") from None


def encrypt(plain: str, key: bytes, iv: bytes | None = None) -> str:
    """What GoCD's AES encrypter writes for ``plain`` (a fresh random IV unless one is given)."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = iv or os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    data = encryptor.update(padded) + encryptor.finalize()
    return f"AES:{base64.b64encode(iv).decode()}:{base64.b64encode(data).decode()}"

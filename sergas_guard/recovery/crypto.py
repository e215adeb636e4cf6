"""Keys, chunk ids and sealing for the backup repository.

A repository has three secrets, generated at random when it is created: the 256-bit
AES-GCM data key, the 256-bit MAC key that turns a chunk's plaintext into its id
(HMAC-SHA256, so an id reveals nothing about the content to someone without the key),
and the chunker's seed (so chunk boundaries do not leak file contents either).

In an encrypted repository they are stored only wrapped: ``keys/<id>`` is a JSON key
file holding the scrypt parameters and salt and the secrets sealed with AES-256-GCM
under the key scrypt derives from the passphrase. A wrong passphrase fails the GCM tag
check, which is reported as "wrong passphrase", never as garbage. The passphrase itself
comes from the caller (:func:`passphrase_from_env`, :func:`passphrase_from_file` or any
callable) and is never written anywhere.

An unencrypted repository keeps its MAC key and seed in ``config`` in the clear: ids
and boundaries then only serve deduplication, and sealing adds a checksum instead of
encryption, so corruption is still detected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sergas_guard.errors import BackupError, IntegrityError

__all__ = [
    "AesGcmSealer",
    "ChecksumSealer",
    "KdfParams",
    "RepositoryKeys",
    "Sealer",
    "chunk_id",
    "passphrase_from_env",
    "passphrase_from_file",
    "unwrap_keys",
    "wrap_keys",
]

_NONCE = 12
_KEY_FILE_AAD = b"sergas-guard repository key v1"


def passphrase_from_env(variable: str) -> Callable[[], str]:
    """A passphrase source reading environment variable ``variable`` when called.

    The callable raises BackupError (naming the variable, never a value) when it is unset
    or empty.
    """

    def read() -> str:
        value = os.environ.get(variable, "")
        if not value:
            raise BackupError(f"the passphrase variable {variable} is not set")
        return value

    return read


def passphrase_from_file(path: Path) -> Callable[[], str]:
    """A passphrase source reading the first line of ``path`` when called.

    The callable raises BackupError when the file cannot be read or is empty.
    """

    def read() -> str:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise BackupError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
        value = text.splitlines()[0] if text else ""
        if not value:
            raise BackupError(f"the passphrase file {path} is empty")
        return value

    return read


@dataclass(frozen=True, repr=False)
class RepositoryKeys:
    """The repository's secrets; ``repr`` shows none of them."""

    data_key: bytes
    mac_key: bytes
    chunker_seed: int

    @classmethod
    def generate(cls) -> RepositoryKeys:
        """Fresh random keys and a random non-zero 63-bit chunker seed."""
        return cls(
            data_key=secrets.token_bytes(32),
            mac_key=secrets.token_bytes(32),
            chunker_seed=secrets.randbits(63) | 1,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "data_key": self.data_key.hex(),
            "mac_key": self.mac_key.hex(),
            "chunker_seed": self.chunker_seed,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RepositoryKeys:
        """Raises BackupError when ``raw`` is not a key record."""
        try:
            return cls(
                data_key=bytes.fromhex(raw["data_key"]),
                mac_key=bytes.fromhex(raw["mac_key"]),
                chunker_seed=int(raw["chunker_seed"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(f"the repository key record is malformed ({exc!r})") from None

    def __repr__(self) -> str:
        return "RepositoryKeys(<secret>)"


@dataclass(frozen=True)
class KdfParams:
    """scrypt parameters; the defaults cost ~32 MiB and ~0.1 s per unlock."""

    n: int = 2**15
    r: int = 8
    p: int = 1

    def derive(self, passphrase: str, salt: bytes) -> bytes:
        """The 256-bit key-encryption key for ``passphrase``."""
        need = 128 * self.n * self.r * self.p
        return hashlib.scrypt(
            passphrase.encode("utf-8"),
            salt=salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=2 * need + (1 << 20),
            dklen=32,
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wrap_keys(keys: RepositoryKeys, passphrase: str, kdf: KdfParams | None = None) -> bytes:
    """The key file contents: ``keys`` sealed under a key derived from ``passphrase``."""
    kdf = kdf or KdfParams()
    salt = secrets.token_bytes(32)
    nonce = secrets.token_bytes(_NONCE)
    plain = json.dumps(keys.to_json()).encode("utf-8")
    sealed = AESGCM(kdf.derive(passphrase, salt)).encrypt(nonce, plain, _KEY_FILE_AAD)
    record = {
        "version": 1,
        "kdf": {"name": "scrypt", "n": kdf.n, "r": kdf.r, "p": kdf.p, "salt": _b64(salt)},
        "cipher": "aes-256-gcm",
        "nonce": _b64(nonce),
        "keys": _b64(sealed),
    }
    return json.dumps(record, indent=2).encode("utf-8")


def unwrap_keys(key_file: bytes, passphrase: str) -> RepositoryKeys:
    """The keys sealed in ``key_file``.

    Raises BackupError("wrong passphrase ...") when ``passphrase`` does not open it, and
    BackupError when the key file is malformed.
    """
    try:
        record = json.loads(key_file)
        kdf_raw = record["kdf"]
        if kdf_raw["name"] != "scrypt" or record["cipher"] != "aes-256-gcm":
            raise ValueError("unknown kdf or cipher")
        kdf = KdfParams(n=int(kdf_raw["n"]), r=int(kdf_raw["r"]), p=int(kdf_raw["p"]))
        salt = base64.b64decode(kdf_raw["salt"], validate=True)
        nonce = base64.b64decode(record["nonce"], validate=True)
        sealed = base64.b64decode(record["keys"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"the repository key file is malformed ({exc!r})") from None
    try:
        plain = AESGCM(kdf.derive(passphrase, salt)).decrypt(nonce, sealed, _KEY_FILE_AAD)
    except InvalidTag:
        raise BackupError("wrong passphrase for the backup repository") from None
    return RepositoryKeys.from_json(json.loads(plain))


def chunk_id(mac_key: bytes, data: bytes | memoryview) -> str:
    """The id of a chunk: HMAC-SHA256 of its plaintext, as hex.

    HMAC-SHA256 rather than keyed BLAKE2b: with the SHA extensions OpenSSL uses it is
    about twice as fast here (1.7 vs 0.8 GB/s), and hashing is a backup's hot loop.
    """
    return hmac.digest(mac_key, data, "sha256").hex()


class Sealer(Protocol):
    """Turns a plaintext into a stored blob and back, bound to ``aad`` (what it is)."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def open(self, blob: bytes | memoryview, aad: bytes) -> bytes:
        """Raises IntegrityError when ``blob`` was altered or belongs to another ``aad``."""
        ...


class AesGcmSealer:
    """AES-256-GCM with a random 96-bit nonce per blob: ``nonce || ciphertext || tag``."""

    overhead = _NONCE + 16

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes | memoryview, aad: bytes) -> bytes:
        if len(blob) < self.overhead:
            raise IntegrityError("a stored blob is truncated")
        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise IntegrityError("a stored blob failed its authentication check") from None


class ChecksumSealer:
    """No encryption: ``HMAC-SHA256(len(aad) || aad || plaintext) || plaintext``, to
    detect corruption."""

    overhead = 32

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _digest(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod="sha256")
        mac.update(len(aad).to_bytes(4, "little"))
        mac.update(aad)
        mac.update(plaintext)
        return mac.digest()

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        return self._digest(plaintext, aad) + plaintext

    def open(self, blob: bytes | memoryview, aad: bytes) -> bytes:
        if len(blob) < self.overhead:
            raise IntegrityError("a stored blob is truncated")
        plaintext = blob[32:]
        if not secrets.compare_digest(self._digest(plaintext, aad), blob[:32]):
            raise IntegrityError("a stored blob failed its checksum")
        return bytes(plaintext)

"""Keys, passphrase sources, chunk ids and sealing (recovery/crypto.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sergas_guard.errors import BackupError, IntegrityError
from sergas_guard.recovery.crypto import (
    AesGcmSealer,
    ChecksumSealer,
    KdfParams,
    RepositoryKeys,
    Sealer,
    chunk_id,
    passphrase_from_env,
    passphrase_from_file,
    unwrap_keys,
    wrap_keys,
)

FAST_KDF = KdfParams(n=2**10)


def test_wrapped_keys_open_with_the_passphrase_only() -> None:
    keys = RepositoryKeys.generate()
    key_file = wrap_keys(keys, "correct horse", FAST_KDF)
    assert unwrap_keys(key_file, "correct horse") == keys
    with pytest.raises(BackupError, match="wrong passphrase"):
        unwrap_keys(key_file, "correct hors")


def test_key_file_holds_no_secret_in_the_clear() -> None:
    keys = RepositoryKeys.generate()
    key_file = wrap_keys(keys, "p4ssphrase-xyz", FAST_KDF)
    assert b"p4ssphrase-xyz" not in key_file
    assert keys.data_key.hex().encode() not in key_file
    assert keys.mac_key.hex().encode() not in key_file
    assert b'"n": 1024' in key_file  # the KDF parameters are stored with the key


def test_keys_repr_shows_no_secret() -> None:
    keys = RepositoryKeys.generate()
    assert keys.data_key.hex() not in repr(keys)
    assert "secret" in repr(keys)


def test_malformed_key_file_is_a_backup_error() -> None:
    with pytest.raises(BackupError, match="malformed"):
        unwrap_keys(b"{}", "x")
    with pytest.raises(BackupError, match="malformed"):
        unwrap_keys(b"not json", "x")


def test_passphrase_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    source = passphrase_from_env("SG_TEST_PASSPHRASE")
    monkeypatch.delenv("SG_TEST_PASSPHRASE", raising=False)
    with pytest.raises(BackupError, match="SG_TEST_PASSPHRASE is not set"):
        source()
    monkeypatch.setenv("SG_TEST_PASSPHRASE", "s3cret value")
    assert source() == "s3cret value"


def test_passphrase_from_file(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    source = passphrase_from_file(path)
    with pytest.raises(BackupError, match="cannot read"):
        source()
    path.write_text("")
    with pytest.raises(BackupError, match="empty"):
        source()
    path.write_text("line one\nline two\n")
    assert source() == "line one"


def test_chunk_ids_are_keyed() -> None:
    data = b"the same content"
    one, two = RepositoryKeys.generate(), RepositoryKeys.generate()
    assert chunk_id(one.mac_key, data) == chunk_id(one.mac_key, data)
    assert chunk_id(one.mac_key, data) != chunk_id(two.mac_key, data)
    assert len(chunk_id(one.mac_key, data)) == 64


SEALERS = [
    pytest.param(lambda: AesGcmSealer(RepositoryKeys.generate().data_key), id="aes-gcm"),
    pytest.param(lambda: ChecksumSealer(RepositoryKeys.generate().mac_key), id="checksum"),
]


@pytest.mark.parametrize("make", SEALERS)
@settings(max_examples=40, deadline=None)
@given(plaintext=st.binary(max_size=300), position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(
    make: Callable[[], Sealer], plaintext: bytes, position: int, bit: int
) -> None:
    sealer = make()
    blob = sealer.seal(plaintext, b"aad")
    assert sealer.open(blob, b"aad") == plaintext
    damaged = bytearray(blob)
    damaged[position % len(blob)] ^= 1 << bit
    with pytest.raises(IntegrityError):
        sealer.open(bytes(damaged), b"aad")
    with pytest.raises(IntegrityError):
        sealer.open(blob, b"other")
    with pytest.raises(IntegrityError):
        sealer.open(blob[: len(blob) // 3], b"aad")


def test_aes_gcm_hides_the_plaintext() -> None:
    sealer = AesGcmSealer(RepositoryKeys.generate().data_key)
    plaintext = b"very recognisable plaintext " * 4
    one, two = sealer.seal(plaintext, b""), sealer.seal(plaintext, b"")
    assert plaintext[:16] not in one
    assert one != two  # a fresh nonce per blob


@settings(max_examples=20, deadline=None)
@given(passphrase=st.text(min_size=3, max_size=30), guess=st.text(min_size=3, max_size=30))
def test_no_passphrase_in_key_files_or_errors(passphrase: str, guess: str) -> None:
    # Key files and messages are ASCII: a non-ASCII mark makes any copy a real leak.
    passphrase, guess = "§" + passphrase, "§" + guess
    key_file = wrap_keys(RepositoryKeys.generate(), passphrase, FAST_KDF)
    assert passphrase.encode("utf-8") not in key_file
    if guess != passphrase:
        with pytest.raises(BackupError) as info:
            unwrap_keys(key_file, guess)
        assert guess not in str(info.value)
        assert passphrase not in str(info.value)

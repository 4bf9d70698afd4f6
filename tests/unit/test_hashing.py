"""vipo.io.hashing: sha256 hex digests of strings, bytes and files (files read in 1 MiB blocks)."""

import hashlib

import pytest

from vipo.io import hashing
from vipo.io.hashing import BLOCK, digest, feed_file, file_digest

# FIPS 180-2 test vectors
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_digest_of_known_strings_and_bytes():
    assert digest("") == EMPTY and digest(b"") == EMPTY
    assert digest("abc") == ABC and digest(b"abc") == ABC


def test_digest_encodes_strings_as_utf8():
    # "é" is 0xC3 0xA9 in UTF-8, a different digest from latin-1's single 0xE9
    assert digest("\u00e9") == hashlib.sha256(b"\xc3\xa9").hexdigest()
    assert digest("\u00e9") != hashlib.sha256(b"\xe9").hexdigest()


def test_file_digest_matches_the_digest_of_its_bytes(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert file_digest(p) == ABC and file_digest(str(p)) == ABC
    e = tmp_path / "empty"
    e.write_bytes(b"")
    assert file_digest(e) == EMPTY


def test_feed_file_reads_in_blocks_and_covers_every_byte(tmp_path, monkeypatch):
    # a small block size makes a 10-byte file span three blocks, the last one short
    monkeypatch.setattr(hashing, "BLOCK", 4)
    p = tmp_path / "f.bin"
    p.write_bytes(b"0123456789")

    class Recorder:
        def __init__(self):
            self.blocks = []

        def update(self, block):
            self.blocks.append(block)

    h = Recorder()
    feed_file(h, p)
    assert h.blocks == [b"0123", b"4567", b"89"]
    assert file_digest(p) == hashlib.sha256(b"0123456789").hexdigest()


def test_feed_file_continues_a_running_hash(tmp_path):
    # a folder's hash covers names and bytes: feeding two files after their names equals hashing the concatenation
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    h = hashlib.sha256()
    h.update(b"a")
    feed_file(h, a)
    h.update(b"b")
    feed_file(h, b)
    assert h.hexdigest() == digest(b"afirstbsecond")


def test_block_is_one_mebibyte():
    assert BLOCK == 1024 * 1024


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        file_digest(tmp_path / "nope")

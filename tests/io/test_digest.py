"""hvx.io.digest: whole-file SHA-256 in chunks."""

import hashlib

from hvx.io.digest import file_sha256


def test_file_sha256_equals_hashlib_across_chunk_boundaries(tmp_path):
    for n in (0, 1, (1 << 22) - 1, 1 << 22, (1 << 22) + 3):
        data = bytes(range(256)) * (n // 256) + bytes(n % 256)
        p = tmp_path / f"f{n}"
        p.write_bytes(data)
        assert file_sha256(p) == hashlib.sha256(data).hexdigest(), n

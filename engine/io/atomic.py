"""The one way hvx writes a file: atomically, never through a symlink, durable by default.

Policy (every result, record, checkpoint and cache file of hvx goes through here):

- **Atomic.** Bytes go to a temp file ``.<name>.<pid>.<thread>.tmp`` in the
  destination folder, which then replaces the destination with ``os.replace``: a
  reader (or a resumed run) sees the old file or the new one, never a torn one.
  On any error the temp file is removed and the destination is left untouched.
- **Never through a symlink or a leftover.** A temp file of the same name (left by
  a crashed process with the same pid, or planted) is removed, then the temp file is
  created with ``O_CREAT | O_EXCL | O_NOFOLLOW``: a fresh regular file or an error.
  :func:`open_new` gives the same guarantee to files written in place (the
  ``.part`` files of :mod:`hvx.io.streams`).
- **Readable by others.** Mode 0o644 whatever the umask (a QuPath user or a
  colleague on a shared server opens the results).
- **Durable unless told otherwise.** ``durable=True`` (the default) fsyncs the temp
  file before the rename and the folder after it, so a power cut or kernel crash
  cannot leave a renamed but empty file that a resumed run would take as finished.
  ``durable=False`` keeps atomicity against killed processes only; it is for
  high-volume per-image results (``hvx infer``'s npy / CSV / GeoJSON / overlay,
  :mod:`hvx.io.writers`), where one fsync per file (about 7 ms each on this
  project's ext4 disk) would cost more than a small image's inference on a GPU, and
  the loss on a power cut is recomputing those images.

Three forms: :func:`atomic_write` for bytes or text in memory, :func:`atomic_file`
for a writer that streams into a binary file object (``np.savez(f, ...)``), and
:func:`atomic_path` for a writer that wants a file name (safetensors, tifffile).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "FILE_MODE",
    "atomic_file",
    "atomic_path",
    "atomic_write",
    "fsync_dir",
    "open_existing",
    "open_new",
    "temp_path",
]

#: Mode of every file hvx writes (rw-r--r--).
FILE_MODE = 0o644

_NAME_MAX = 255


def temp_path(path: str | os.PathLike) -> Path:
    """The temp file for ``path``: ``.<name>.<pid>.<thread id>.tmp`` beside it.

    Unique per process and thread, so two writers of one destination never share a
    temp file; the name is shortened to stay within the 255-byte file name limit.
    """
    path = Path(path)
    suffix = f".{os.getpid()}.{threading.get_native_id()}.tmp"
    name = path.name.encode()[: _NAME_MAX - 1 - len(suffix)].decode(errors="ignore")
    return path.with_name(f".{name}{suffix}")


def _open_fd(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    except OSError as e:
        raise ValueError(f"expected to open {path} as a regular file, got {e}") from e


def open_new(path: str | os.PathLike) -> BinaryIO:
    """Creates ``path`` as a new, empty regular file and opens it for writing.

    Whatever is at ``path`` (a leftover file, a planted symlink) is removed first,
    never followed; ``O_EXCL | O_NOFOLLOW`` then refuse anything that appears in
    between. The file gets :data:`FILE_MODE`.

    Returns:
        A binary file object (``"wb"``).

    Raises:
        ValueError: If the file cannot be created as a regular file.
    """
    path = Path(path)
    path.unlink(missing_ok=True)
    fd = _open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def open_existing(path: str | os.PathLike) -> BinaryIO:
    """Opens an existing regular file for reading and writing, never through a symlink.

    Returns:
        A binary file object (``"r+b"``) positioned at the start.

    Raises:
        ValueError: If ``path`` is a symlink or cannot be opened.
    """
    return os.fdopen(_open_fd(Path(path), os.O_RDWR), "r+b")


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flushes a folder's entries (a rename in it) to disk.

    File systems that cannot open or fsync a folder (some network mounts, Windows)
    are skipped silently: the rename itself has already happened.
    """
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, durable: bool = True) -> Iterator[BinaryIO]:
    """Streams into a temp file that replaces ``path`` when the block ends without error.

    Example::

        with atomic_file(out / "state.npz") as f:
            np.savez(f, **arrays)

    Args:
        path: Destination (its folder is created when missing).
        durable: fsync the file before and the folder after the rename (module docs).

    Yields:
        A binary file object open for writing (seekable).

    Raises:
        ValueError: If the temp file cannot be created as a regular file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    f = open_new(tmp)
    try:
        with f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Like :func:`atomic_file`, for a writer that takes a file name.

    The temp file is created (empty, regular, :data:`FILE_MODE`) before it is
    yielded, so the writer opens a file hvx made, not one planted at that name.

    Example::

        with atomic_path(out / "model.safetensors") as tmp:
            safetensors.torch.save_file(tensors, str(tmp))

    Yields:
        The temp file's path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    open_new(tmp).close()
    try:
        yield tmp
        if durable:
            with open_existing(tmp) as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str, *, durable: bool = True) -> Path:
    """Writes ``data`` (str as UTF-8) to ``path`` atomically (see the module docs).

    Args:
        path: Destination (its folder is created when missing).
        data: The whole content.
        durable: fsync the file before and the folder after the rename.

    Returns:
        ``path`` as a ``Path``.
    """
    with atomic_file(path, durable=durable) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)

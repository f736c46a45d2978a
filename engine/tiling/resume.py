"""Run folders of tiled inference: identity, per-region completion records, resume.

A run folder holds ``run.json`` (what was run: input identity, model identity,
parameters, and their hash), ``progress.jsonl`` (one JSON line per completed
region, appended and fsynced after that region's outputs and stitcher state are
on disk), ``state/`` (the stitcher state at the last completed regions) and the
outputs. A run restarted with the same hash continues after the last complete
record; a folder holding another run's ``run.json``, or hvx outputs without
one, is refused: nothing is overwritten silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from hvx.io.atomic import atomic_file, atomic_write

__all__ = ["FolderLock", "FolderLockedError", "RunFolder", "RunMismatchError", "run_hash"]


class RunMismatchError(ValueError):
    """The output folder belongs to a different run (input, model or parameters)."""


class FolderLockedError(RuntimeError):
    """Another process is writing to the output folder."""


LOCK_FILE = ".hvx.lock"


class FolderLock:
    """An exclusive ``flock`` on ``<folder>/.hvx.lock``, held while a run writes there.

    The lock file holds the holder's pid and host (for the refusal message); the
    lock itself is the kernel's, so a killed holder releases it at once. On a
    file system without ``flock`` (some network mounts) nothing is locked and a
    warning is logged.

    Raises:
        FolderLockedError: Another process holds the lock (message names it).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        import fcntl

        self._fd: int | None = None
        self.path = Path(folder) / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderLockedError(
                f"expected {self.path.parent} to be free, got it in use by another hvx run "
                f"({holder}); wait for it to finish or choose another --out"
            ) from None
        except OSError as e:  # no flock on this file system
            import logging

            logging.getLogger("hvx.tiling").warning("cannot lock %s (%s)", self.path, e)
        import socket

        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Releases the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def run_hash(identity: dict) -> str:
    """SHA-256 of the canonical JSON of a run's identity."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclasses.dataclass
class RunFolder:
    """One output folder of a tiled run.

    Attributes:
        path: The folder.
        identity: What was run (JSON-ready).
        digest: ``run_hash(identity)``.
        outputs: File names the run writes (checked for strays in a new folder).
    """

    path: Path
    identity: dict
    digest: str
    outputs: tuple[str, ...]
    lock: FolderLock | None = None

    @classmethod
    def open(
        cls, path: str | os.PathLike, identity: dict, outputs: tuple[str, ...], *, overwrite=False
    ) -> RunFolder:
        """Creates or reopens the run folder for ``identity``.

        Args:
            path: Output folder (created when missing).
            identity: The run's identity (input, model, parameters).
            outputs: Names of the files the run writes.
            overwrite: Discard a different run's records and outputs in ``path``
                instead of refusing (an explicit user choice).

        The folder is locked (:class:`FolderLock`) until :meth:`release`.

        Raises:
            RunMismatchError: The folder holds another run, or outputs of unknown origin.
            FolderLockedError: Another process is writing to the folder.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunMismatchError(f"expected an output folder, got a file: {path}")
        path.mkdir(parents=True, exist_ok=True)
        digest = run_hash(identity)
        lock = FolderLock(path)
        try:
            return cls._open_locked(path, identity, digest, tuple(outputs), overwrite, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _open_locked(cls, path, identity, digest, outputs, overwrite, lock) -> RunFolder:
        run = cls(path, identity, digest, outputs, lock)
        manifest = path / "run.json"
        if manifest.exists():
            try:
                old = json.loads(manifest.read_text())
                old_digest = old["hash"]
            except (ValueError, KeyError) as e:
                raise RunMismatchError(f"expected a readable {manifest}, got {e}") from e
            if old_digest != digest:
                if not overwrite:
                    diff = sorted(
                        k
                        for k in set(identity) | set(old.get("identity", {}))
                        if identity.get(k) != old.get("identity", {}).get(k)
                    )
                    raise RunMismatchError(
                        f"expected {path} to hold this run (hash {digest[:12]}) or nothing, got "
                        f"a different run (hash {old_digest[:12]}; differs in {diff}). Use a new "
                        "output folder, or --overwrite to discard it"
                    )
                run.clear()
        else:
            strays = [n for n in (*outputs, "progress.jsonl") if (path / n).exists()]
            if strays and not overwrite:
                raise RunMismatchError(
                    f"expected {path} without hvx outputs of an unknown run, got {strays} "
                    "and no run.json. Use a new output folder, or --overwrite"
                )
            if strays:
                run.clear()
        if not manifest.exists():
            doc = {"hash": digest, "identity": identity}
            atomic_write(manifest, json.dumps(doc, indent=2, default=str) + "\n")
        (path / "state").mkdir(exist_ok=True)
        return run

    def release(self) -> None:
        """Releases the folder lock (idempotent)."""
        if self.lock is not None:
            self.lock.release()

    def clear(self) -> None:
        """Removes this folder's run records, state and outputs (not other files)."""
        for name in (*self.outputs, "run.json", "progress.jsonl", "summary.json"):
            for p in (self.path / name, self.path / f"{name}.part"):
                p.unlink(missing_ok=True)
        state = self.path / "state"
        if state.is_dir():
            for p in state.glob("region_*.npz"):
                p.unlink()

    def records(self) -> list[dict]:
        """Completed-region records, in order (a torn last line is ignored)."""
        p = self.path / "progress.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_bytes().split(b"\n"):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                break  # a line cut by a crash: everything after it is void
        return out

    def complete(self, record: dict, state: dict[str, np.ndarray]) -> None:
        """Saves the stitcher state, then appends (and fsyncs) the region's record."""
        name = f"state/region_{record['region']:06d}.npz"
        with atomic_file(self.path / name) as f:
            np.savez(f, **state)
        record = {**record, "state": name}
        with open(self.path / "progress.jsonl", "ab") as f:
            f.write(json.dumps(record).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        for old in (self.path / "state").glob("region_*.npz"):  # keep the last two
            if int(old.stem.split("_")[1]) < record["region"] - 1:
                old.unlink(missing_ok=True)

    def keep_records(self, records: list[dict]) -> None:
        """Rewrites the records file with ``records`` only (drops a torn or stale tail)."""
        data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
        atomic_write(self.path / "progress.jsonl", data)

    def load_state(self, record: dict) -> dict[str, np.ndarray]:
        """The stitcher state saved with ``record``."""
        with np.load(self.path / record["state"], allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def summary(self) -> dict | None:
        """The finished run's summary, or None while unfinished."""
        p = self.path / "summary.json"
        return json.loads(p.read_text()) if p.exists() else None

    def write_summary(self, summary: dict) -> None:
        """Writes ``summary.json`` (atomically): the run is complete."""
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

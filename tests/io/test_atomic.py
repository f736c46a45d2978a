"""hvx.io.atomic: the one atomic-write helper, and every writer of hvx that goes through it."""

import json
import os
import threading

import numpy as np
import pytest

from hvx.io.atomic import atomic_file, atomic_path, atomic_write, open_existing, open_new, temp_path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_bytes_and_text_and_makes_the_folder(tmp_path):
    assert atomic_write(tmp_path / "a" / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "c.txt", "h\u00e9\n").read_bytes() == "h\u00e9\n".encode()
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "a") == []


def test_mode_is_0644_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        assert atomic_write(tmp_path / "r.csv", "x").stat().st_mode & 0o777 == 0o644
        with atomic_path(tmp_path / "s.bin") as tmp:
            assert tmp.stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "s.bin").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


@pytest.mark.parametrize("form", ["file", "path"])
def test_an_error_while_writing_keeps_the_old_file_and_no_temp(tmp_path, form):
    target = tmp_path / "r.npz"
    target.write_text("old complete file\n")
    with pytest.raises(RuntimeError, match="writer died"):
        if form == "file":
            with atomic_file(target) as f:
                f.write(b"half")
                raise RuntimeError("writer died")
        else:
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"half")
                raise RuntimeError("writer died")
    assert target.read_text() == "old complete file\n"
    assert _leftovers(tmp_path) == []


def test_a_failed_rename_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "r.csv"
    target.write_text("old\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "new")
    assert target.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_a_planted_temp_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    target = tmp_path / "out" / "summary.json"
    target.parent.mkdir()
    temp_path(target).symlink_to(victim)
    atomic_write(target, "{}\n")
    assert victim.read_text() == "precious\n"
    assert target.read_text() == "{}\n" and not target.is_symlink()
    assert _leftovers(target.parent) == []


def test_a_leftover_temp_file_is_replaced(tmp_path):
    target = tmp_path / "x.json"
    temp_path(target).write_text("stale leftover of a crash, longer than the new content")
    atomic_write(target, "new")
    assert target.read_text() == "new" and _leftovers(tmp_path) == []


def test_a_symlink_at_the_destination_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "r.csv").symlink_to(victim)
    atomic_write(tmp_path / "r.csv", "new\n")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "r.csv").is_symlink() and (tmp_path / "r.csv").read_text() == "new\n"


def test_open_new_removes_a_planted_symlink_and_open_existing_refuses_one(tmp_path):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"x" * 10)
    part = tmp_path / "a.csv.part"
    part.symlink_to(victim)
    with open_new(part) as f:
        f.write(b"fresh")
    assert victim.read_bytes() == b"x" * 10 and part.read_bytes() == b"fresh"
    part.unlink()
    part.symlink_to(victim)
    with pytest.raises(ValueError, match="regular file"):
        open_existing(part)
    assert victim.read_bytes() == b"x" * 10


@pytest.mark.parametrize(("durable", "expected"), [(True, 2), (False, 0)])
def test_durable_fsyncs_the_file_and_the_folder(tmp_path, monkeypatch, durable, expected):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    atomic_write(tmp_path / "a.json", "{}", durable=durable)
    assert len(calls) == expected
    calls.clear()
    with atomic_path(tmp_path / "b.bin", durable=durable) as tmp:
        tmp.write_bytes(b"b")
    assert len(calls) == expected


def test_temp_names_fit_the_file_name_limit_and_differ_per_thread(tmp_path):
    long = tmp_path / ("n" * 250 + ".geojson")
    assert len(temp_path(long).name.encode()) <= 255
    names = []
    t = threading.Thread(target=lambda: names.append(temp_path(long)))
    t.start()
    t.join()
    assert names[0] != temp_path(long) and names[0].parent == tmp_path
    atomic_write(tmp_path / ("\u00e9" * 125 + ".csv"), "x")  # 254 bytes; temp cut at a char


def test_atomic_file_takes_a_streamed_writer(tmp_path):
    with atomic_file(tmp_path / "s.npz") as f:
        np.savez(f, a=np.arange(3))
    with np.load(tmp_path / "s.npz") as z:
        assert z["a"].tolist() == [0, 1, 2]


# Every writer of hvx goes through hvx.io.atomic: a symlink planted at the temp name the
# helper would use (this process and thread) must be removed, never written through.


def _checkpoint(dest):
    import torch

    from hvx.training.checkpoint import save_checkpoint

    save_checkpoint(dest, model=torch.nn.Linear(2, 1), state={"step": 1})


def _resume_record(dest):
    from hvx.training.checkpoint import check_resume_data

    data = dest.parent / "data"
    data.mkdir()
    (data / "a.npy").write_bytes(b"1")
    check_resume_data(dest.parent, data, force=False)


def _run_summary(dest):
    from hvx.tiling.resume import RunFolder

    run = RunFolder.open(dest.parent, {"input": "a"}, ("nuclei.csv",))
    try:
        run.write_summary({"nuclei": 0})
    finally:
        run.release()


def _region(dest):
    from hvx.distributed.regions import RegionStore

    RegionStore(dest.parent.parent, "digest", {"side": 1}).commit(0, [b"blob"])


def _eval_json(dest):
    from hvx.cli.eval import _write_json

    _write_json(str(dest), {"pq": 1.0})


def _csv(dest):
    from hvx.io.writers import write_csv
    from hvx.results import NucleusTable

    write_csv(dest, NucleusTable.empty(), ())


WRITERS = {
    "checkpoint": ("last.safetensors", _checkpoint),
    "resume data record": ("data.json", _resume_record),
    "tiled run summary": ("summary.json", _run_summary),
    "distributed region": ("regions/r000000.npz", _region),
    "hvx eval --json": ("scores.json", _eval_json),
    "whole-image CSV": ("r.csv", _csv),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_goes_through_the_helper(tmp_path, name):
    rel, write = WRITERS[name]
    dest = tmp_path / "run" / rel
    dest.parent.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    temp_path(dest).symlink_to(victim)
    write(dest)
    assert victim.read_text() == "precious\n"
    assert dest.is_file() and not dest.is_symlink() and dest.stat().st_size > 0
    assert not temp_path(dest).exists() and not temp_path(dest).is_symlink()
    if dest.suffix == ".json":
        json.loads(dest.read_text())

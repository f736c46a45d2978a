"""Findings 3, 4, 7, 10, 11 and 12 (issue 23) through the ``hvx`` command line.

3: unbounded one-pass inference (big or rescaled images, huge --tile, --mpp 40).
4: one bad file (a 100000^2 PNG header, a backend failure) aborted the batch.
7: ``hvx infer`` mixed runs silently (nothing recorded of model / mpp).
10: CSV formula injection through class names; ``--model FILE`` said "CUDA".
11: tracebacks instead of one clear line (exit status 2; ``--debug`` shows them).
12: ``hvx eval`` on a text file said "pickled data".
"""

import json
import struct
import zlib

import cv2
import numpy as np
import pytest

from hvx.cli import main


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("HVX_CACHE_DIR", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _err(capsys, caplog) -> str:
    """What the user sees on stderr (log records go to stderr outside pytest)."""
    return capsys.readouterr().err + caplog.text


def _infer(*args):
    return main(["infer", *map(str, args), "--no-progress", "--backend", "torch"])


def _png_with_header(path, width, height):
    """A PNG whose IHDR claims ``width`` x ``height`` (the data is a tiny image's)."""
    _, buf = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(buf.tobytes())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))


@pytest.fixture
def good_and_bad(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
    _png_with_header(folder / "b_huge.png", 100000, 100000)
    return folder


# ---------------------------------------------------------------- finding 4
def test_a_100000_square_header_png_fails_alone(bundle, good_and_bad, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    assert _infer(good_and_bad, "--out", out, "--model", bundle, "--format", "npy,csv") == 1
    for stem in ("a", "c"):
        assert (out / f"{stem}_inst.npy").is_file() and (out / f"{stem}.csv").is_file()
    cap = capsys.readouterr()
    assert "2 processed" in cap.out and "1 failed" in cap.out
    assert "b_huge.png" in cap.err + caplog.text and "Traceback" not in cap.err


def test_a_backend_failure_fails_that_file_only(bundle, tmp_path, monkeypatch, capsys, caplog):
    from hvx.engine import Engine

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "b.png"), rng.integers(0, 256, (56, 56, 3), dtype=np.uint8))
    real = Engine.infer

    class BackendError(Exception):  # e.g. onnxruntime's own exception types
        pass

    def flaky(self, batch, **kw):
        if np.asarray(batch).shape[1] == 56:
            raise BackendError("device lost")
        return real(self, batch, **kw)

    monkeypatch.setattr(Engine, "infer", flaky)
    out = tmp_path / "out"
    assert _infer(folder, "--out", out, "--model", bundle, "--format", "npy") == 1
    assert (out / "a_inst.npy").is_file() and not (out / "b_inst.npy").exists()
    assert "device lost" in _err(capsys, caplog)


# ---------------------------------------------------------------- finding 3
def test_network_sees_bounded_pixels_for_a_rescaled_image(bundle, tmp_path, monkeypatch):
    import hvx.cli.infer as infer_cli
    from hvx.engine import Engine

    monkeypatch.setattr(infer_cli, "ONE_PASS_MAX_PIXELS", 256 * 256)
    seen = []
    real = Engine.heads

    def spy(self, batch):
        b = np.asarray(batch)
        seen.append(b.shape[0] * b.shape[1] * b.shape[2])
        return real(self, batch)

    monkeypatch.setattr(Engine, "heads", spy)
    folder = tmp_path / "in"
    folder.mkdir()
    img = np.random.default_rng(2).integers(0, 256, (200, 180, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "a.png"), img)
    out = tmp_path / "out"
    # model mpp 0.5, input 1.0 mpp: the network sees 400 x 360 > 256^2 -> tiled.
    assert (
        _infer(
            folder,
            "--out",
            out,
            "--model",
            bundle,
            "--mpp",
            "1.0",
            "--tile",
            "128",
            "--overlap",
            "32",
            "--batch-size",
            "2",
            "--format",
            "npy,csv",
        )
        == 0
    )
    assert seen and max(seen) <= 2 * 128 * 128, seen
    inst = np.load(out / "a_inst.npy")
    assert inst.shape == (200, 180)  # results at the input's resolution


@pytest.mark.parametrize("mpp", ["40", "0", "-1", "inf", "nan", "0.001"])
def test_mpp_out_of_range_is_refused_with_a_hint(bundle, tmp_path, capsys, mpp):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(SystemExit) as e:
        _infer(img, "--out", tmp_path / "o", "--model", bundle, "--mpp", mpp)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "0.25" in err and "40x" in err and "Traceback" not in err


def test_huge_tile_is_refused_before_allocating(bundle, tmp_path, capsys, caplog):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    code = main(
        [
            "slide",
            str(img),
            "--model",
            str(bundle),
            "--out",
            str(tmp_path / "o"),
            "--tile",
            "20000",
            "--overlap",
            "64",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 2
    err = _err(capsys, caplog)
    assert "--max-memory-gb" in err and "GB" in err and "Traceback" not in err


def test_memory_estimate_names_the_limit():
    from hvx.tiling.budget import MemoryBudgetError, check_tiled_memory

    check_tiled_memory(256, 8, 32, limit_gb=4)
    with pytest.raises(MemoryBudgetError, match=r"4\.0 GB.*--max-memory-gb"):
        check_tiled_memory(20000, 8, 32, limit_gb=4)


# ---------------------------------------------------------------- finding 7
def test_infer_folder_records_the_run_and_refuses_other_settings(bundle, tmp_path, capsys, caplog):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.random.default_rng(3).integers(0, 256, (40, 40, 3), np.uint8))
    out = tmp_path / "out"
    assert _infer(img, "--out", out, "--model", bundle, "--format", "npy") == 0
    rec = json.loads((out / "hvx-run.json").read_text())
    assert rec["model"]["files_sha256"] and rec["hvx"] and rec["format"] == ["npy"]
    assert "mpp" in rec
    capsys.readouterr()
    caplog.clear()
    assert _infer(img, "--out", out, "--model", bundle, "--format", "npy", "--mpp", "0.25") == 2
    err = _err(capsys, caplog)
    assert "mpp" in err and "--overwrite" in err
    assert (
        _infer(
            img, "--out", out, "--model", bundle, "--format", "npy", "--mpp", "0.25", "--overwrite"
        )
        == 0
    )
    assert json.loads((out / "hvx-run.json").read_text())["mpp"] == 0.25


# ---------------------------------------------------------------- finding 10
@pytest.mark.parametrize("name", ['=HYPERLINK("http://x")', "@SUM(A1)", "+cmd", "-1+2"])
def test_csv_cells_are_neutralised(tmp_path, name):
    import csv

    from hvx.io.streams import CSVStream
    from hvx.io.writers import write_csv
    from hvx.results import Nuclei

    class T:
        id = np.array([1])
        type = np.array([1])
        type_prob = np.array([0.9])
        centroid = np.array([[1.0, 2.0]])
        bbox = np.array([[0, 0, 3, 3]])
        area = np.array([9])
        contours = (np.zeros((1, 2), np.int32),)

        def __len__(self):
            return 1

    write_csv(tmp_path / "a.csv", T(), [name])
    nu = Nuclei(
        T.id,
        T.type,
        T.type_prob.astype(np.float32),
        T.centroid,
        T.bbox,
        T.area,
        T.contours,
        [np.ones((3, 3), bool)],
        np.array([False]),
        np.array([0]),
    )
    s = CSVStream(tmp_path / "b.csv", [name])
    s.add(nu)
    s.finish()
    for f in ("a.csv", "b.csv"):
        with open(tmp_path / f, newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows[1][2] == "'" + name


def test_model_file_that_is_not_a_bundle_says_so(tmp_path, capsys, caplog):
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"\0" * 100)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    assert _infer(img, "--out", tmp_path / "o", "--model", bad) == 2
    err = _err(capsys, caplog)
    assert "CUDA" not in err and "bundle" in err


# ---------------------------------------------------------------- finding 11
@pytest.mark.parametrize(
    "extra",
    [
        ["--tile", "0"],
        ["--overlap", "300"],
        ["--tile-batch", "0"],
        ["--tile", "100", "--overlap", "-2"],
    ],
)
def test_bad_tiling_options_give_one_line(bundle, tmp_path, capsys, caplog, extra):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    try:
        code = main(
            [
                "slide",
                str(img),
                "--model",
                str(bundle),
                "--out",
                str(tmp_path / "o"),
                "--no-progress",
                "--device",
                "cpu",
                *extra,
            ]
        )
    except SystemExit as e:  # argparse
        code = e.code
    assert code == 2
    err = _err(capsys, caplog)
    assert "Traceback" not in err and err.strip() and len(err.strip().splitlines()) <= 2


def test_out_being_a_file_is_one_line(bundle, tmp_path, capsys, caplog):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    f = tmp_path / "file"
    f.write_text("x")
    assert _infer(img, "--out", f, "--model", bundle) == 2
    err = _err(capsys, caplog)
    assert "Traceback" not in err and "file" in err
    true = tmp_path / "t.npy"
    np.save(true, np.zeros((1, 8, 8, 2), np.int32))
    (tmp_path / "d").mkdir()
    code = main(["eval", "--pred", str(true), "--true", str(true), "--json", str(tmp_path / "d")])
    assert code == 2 and "Traceback" not in capsys.readouterr().err


def _info_raises(monkeypatch, error: BaseException) -> None:
    """Makes ``hvx info`` raise ``error`` (its parser's func is replaced)."""
    import hvx.cli.info as info

    def fail(args):
        raise error

    parser_func = info.add_parser

    def add(sub):
        parser_func(sub)
        sub.choices["info"].set_defaults(func=fail)

    monkeypatch.setattr(info, "add_parser", add)


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch, capsys, tmp_path):
    _info_raises(monkeypatch, KeyError("surprise"))
    assert main(["info"]) == 2
    err = capsys.readouterr().err
    assert "surprise" in err and "Traceback" not in err and "--debug" in err
    with pytest.raises(KeyError):
        main(["--debug", "info"])


def test_interrupt_is_one_line_exit_130(monkeypatch, capsys):
    _info_raises(monkeypatch, KeyboardInterrupt())
    assert main(["info"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


# ---------------------------------------------------------------- finding 12
def test_eval_on_a_text_file_says_not_npy(tmp_path, capsys, caplog):
    txt = tmp_path / "notes.npy"
    txt.write_text("hello\n")
    assert main(["eval", "--pred", str(txt), "--true", str(txt)]) == 2
    err = _err(capsys, caplog)
    assert "pickled" not in err and ".npy" in err


def test_engine_load_of_a_non_bundle_file_says_bundle(tmp_path):
    from hvx.engine import Engine

    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match="bundle folder") as e:
        Engine.load(bad, device="cpu")
    assert "CUDA" not in str(e.value)


def test_infer_into_a_locked_folder_is_refused(bundle, tmp_path, capsys, caplog):
    import os

    from hvx.tiling.resume import FolderLock

    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    with FolderLock(out):
        assert _infer(img, "--out", out, "--model", bundle, "--format", "npy") == 2
        assert f"pid {os.getpid()}" in _err(capsys, caplog)
        assert not (out / "a_inst.npy").exists()
    assert _infer(img, "--out", out, "--model", bundle, "--format", "npy") == 0


def test_build_out_being_a_file_is_refused_before_exporting(bundle, tmp_path, capsys, caplog):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["build", str(bundle), "--onnx", "--out", str(f)]) == 2
    err = _err(capsys, caplog)
    assert "got a file" in err and "Traceback" not in err
    assert f.read_text() == "x"

import json

import numpy as np
import pytest

from hvx.cli import main
from hvx.cli.eval import COUNT_COLUMNS, read_counts_csv
from hvx.metrics import conic_scores, r2_scores


@pytest.fixture
def map_files(tmp_path):
    rng = np.random.default_rng(0)
    true = np.zeros((3, 32, 32, 2), np.int32)
    for k in range(3):
        for i in range(1, 9):
            y, x = rng.integers(0, 28, 2)
            true[k, y : y + 4, x : x + 4] = (i, rng.integers(1, 7))
    pred = np.roll(true, 1, axis=2)
    pred[0, ..., 1] = np.where(pred[0, ..., 0] > 0, 3, 0)
    t, p = tmp_path / "true.npy", tmp_path / "pred.npy"
    np.save(t, true)
    np.save(p, pred)
    return t, p, conic_scores(true, pred)


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


@pytest.fixture
def count_files(tmp_path):
    rng = np.random.default_rng(1)
    t = rng.integers(0, 20, (10, 6))
    p = t + rng.integers(-2, 3, (10, 6))
    order = [5, 0, 3, 1, 4, 2]  # columns in another order than COUNT_COLUMNS
    tf = write_csv(tmp_path / "t.csv", COUNT_COLUMNS, t.tolist())
    pf = write_csv(tmp_path / "p.csv", [COUNT_COLUMNS[j] for j in order], p[:, order].tolist())
    return tf, pf, r2_scores(t, p)


def test_eval_maps_prints_the_compute_stats_table(map_files, capsys):
    t, p, scores = map_files
    assert main(["eval", "--true", str(t), "--pred", str(p)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["pq", "multi_pq+"]
    assert out[1].split() == [f"{scores.pq:.6f}", f"{scores.mpq_plus:.6f}"]
    text = "\n".join(out)
    for name, v in zip(COUNT_COLUMNS, scores.pq_plus, strict=True):
        assert f"{v:8.5f}" in next(line for line in out if line.startswith(name))
    assert "PQ+" in text


def test_eval_counts_and_json(map_files, count_files, tmp_path, capsys):
    t, p, scores = map_files
    tc, pc, (r2, per_class) = count_files
    out_json = tmp_path / "sub" / "scores.json"
    args = ["eval", "--true", str(t), "--pred", str(p), "--true-counts", str(tc)]
    args += ["--pred-counts", str(pc), "--json", str(out_json)]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["pq", "multi_pq+", "r2"]
    assert out[1].split()[2] == f"{r2:.6f}"
    doc = json.loads(out_json.read_text())
    assert doc["pq"] == scores.pq
    assert doc["multi_pq+"] == scores.mpq_plus
    assert doc["r2"] == r2
    assert list(doc["r2_per_class"].values()) == per_class.tolist()
    assert set(doc["pq_plus"]) == set(COUNT_COLUMNS)
    assert doc["n_images"] == 3


def test_eval_counts_only(count_files, capsys):
    tc, pc, (r2, _) = count_files
    assert main(["eval", "--true-counts", str(tc), "--pred-counts", str(pc)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["r2"]
    assert out[1].strip() == f"{r2:.6f}"


def test_read_counts_csv_rejects_unknown_and_missing_columns(tmp_path):
    header = [*COUNT_COLUMNS[:5], "macrophage"]
    path = write_csv(tmp_path / "bad.csv", header, [[1] * 6])
    with pytest.raises(ValueError, match=r"unknown: \['macrophage'\]; missing: \['connective'\]"):
        read_counts_csv(path)
    path = write_csv(tmp_path / "ragged.csv", COUNT_COLUMNS, [[1] * 5])
    with pytest.raises(ValueError, match=r"ragged.csv:2: expected 6 values, got 5"):
        read_counts_csv(path)
    path = write_csv(tmp_path / "text.csv", COUNT_COLUMNS, [[1, 2, 3, 4, 5, "x"]])
    with pytest.raises(ValueError, match=r"expected numbers"):
        read_counts_csv(path)


def test_eval_unknown_column_exits_2_with_message(count_files, tmp_path, capsys):
    tc, _, _ = count_files
    bad = write_csv(tmp_path / "bad.csv", ["", *COUNT_COLUMNS], [[0] + [1] * 6] * 10)
    assert main(["eval", "--true-counts", str(tc), "--pred-counts", str(bad)]) == 2
    assert "unknown: ['']" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--pred", "x.npy"], "expected --pred and --true together"),
        ([], "expected --pred/--true maps and/or --pred-counts/--true-counts"),
        (["--pred-counts", "x.csv"], "expected --pred-counts and --true-counts together"),
    ],
)
def test_eval_argument_errors(extra, match, capsys):
    assert main(["eval", *extra]) == 2
    assert match in capsys.readouterr().err


def test_eval_bad_maps_exit_2(map_files, tmp_path, capsys):
    t, _, _ = map_files
    bad = np.load(t)
    bad[0, 0, 0, 1] = 9
    np.save(tmp_path / "bad.npy", bad)
    assert main(["eval", "--true", str(t), "--pred", str(tmp_path / "bad.npy")]) == 2
    assert "expected class ids in 0..6, got 9 in pred[0]" in capsys.readouterr().err
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    assert main(["eval", "--true", str(t), "--pred", str(tmp_path / "obj.npy")]) == 2
    assert "allow_pickle" in capsys.readouterr().err

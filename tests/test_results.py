"""hvx.results: NucleusTable and BatchResult containers."""

import numpy as np
import pytest

from hvx.results import BatchResult, NucleusTable


def _table(k):
    return NucleusTable(
        id=np.arange(1, k + 1, dtype=np.int32),
        type=np.ones(k, np.int32),
        type_prob=np.ones(k, np.float32),
        centroid=np.zeros((k, 2)),
        bbox=np.zeros((k, 4), np.int32),
        area=np.ones(k, np.int64),
        contours=[np.zeros((3, 2), np.int32)] * k,
    )


def test_table_len_and_empty():
    assert len(_table(3)) == 3
    assert len(NucleusTable.empty()) == 0


def test_table_rejects_ragged_columns():
    t = _table(2)
    with pytest.raises(
        ValueError, match=r"NucleusTable.area: expected 2 rows \(len\(id\)\), got 1"
    ):
        NucleusTable(t.id, t.type, t.type_prob, t.centroid, t.bbox, t.area[:1], t.contours)
    with pytest.raises(ValueError, match=r"NucleusTable\.contours: expected 2 contours, got 0"):
        NucleusTable(t.id, t.type, t.type_prob, t.centroid, t.bbox, t.area, [])


def test_batch_to_conic_and_checks():
    inst = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4)
    typ = (inst % 7).astype(np.uint8)
    res = BatchResult(inst=inst, type=typ, tables=[_table(1), _table(0)])
    out = res.to_conic()
    assert len(res) == 2 and out.shape == (2, 3, 4, 2) and out.dtype == np.int32
    np.testing.assert_array_equal(out[..., 0], inst)
    np.testing.assert_array_equal(out[..., 1], typ)
    with pytest.raises(ValueError, match="expected 2 tables, got 1"):
        BatchResult(inst=inst, type=typ, tables=[_table(1)])
    with pytest.raises(ValueError, match=r"expected inst and type of one \(N, H, W\) shape"):
        BatchResult(inst=inst, type=typ[:1], tables=[_table(1), _table(0)])

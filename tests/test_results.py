"""hvx.results: NucleusTable, its tiled extension Nuclei, and BatchResult."""

import numpy as np
import pytest

from hvx.results import BatchResult, Nuclei, NucleusTable


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


def _nuclei(k, first=1, masks=True):
    t = _table(k)
    cols = {f: getattr(t, f) for f in ("type", "type_prob", "centroid", "bbox", "area")}
    return Nuclei(
        id=np.arange(first, first + k, dtype=np.int32),
        **cols,
        contours=[np.full((3, 2), first + i, np.int32) for i in range(k)],
        masks=[np.ones((1, 1), bool)] * k if masks else [],
        cut=np.arange(k) % 2 == 1,
        tile=np.full(k, first, np.int32),
    )


def test_nuclei_is_a_nucleus_table_with_three_more_columns():
    nu = _nuclei(3)
    assert isinstance(nu, NucleusTable) and len(nu) == 3
    empty = Nuclei.empty()
    assert isinstance(empty, Nuclei) and len(empty) == 0
    assert empty.cut.dtype == bool and empty.tile.dtype == np.int32 and empty.masks == []
    with pytest.raises(ValueError, match=r"Nuclei\.cut: expected 3 rows \(len\(id\)\), got 2"):
        Nuclei(**{**vars(nu), "cut": nu.cut[:2]})
    with pytest.raises(ValueError, match=r"Nuclei\.tile: expected 3 rows"):
        Nuclei(**{**vars(nu), "tile": nu.tile[:1]})
    with pytest.raises(ValueError, match=r"Nuclei\.masks: expected 3 masks or none, got 1"):
        Nuclei(**{**vars(nu), "masks": nu.masks[:1]})
    assert len(Nuclei(**{**vars(nu), "masks": []})) == 3  # masks dropped once painted


def test_concat_keeps_rows_in_order_and_skips_empty_parts():
    a, b = _nuclei(2, first=1), _nuclei(3, first=3)
    out = Nuclei.concat([a, Nuclei.empty(), b])
    assert type(out) is Nuclei
    np.testing.assert_array_equal(out.id, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(out.cut, [False, True, False, True, False])
    np.testing.assert_array_equal(out.tile, [1, 1, 3, 3, 3])
    assert [int(c[0, 0]) for c in out.contours] == [1, 2, 3, 4, 5]
    assert len(out.masks) == 5 and out.id.dtype == np.int32
    assert len(Nuclei.concat([])) == 0 and type(Nuclei.concat([])) is Nuclei
    plain = NucleusTable.concat([_table(2), _table(1)])
    assert type(plain) is NucleusTable and len(plain) == 3

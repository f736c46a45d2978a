import pytest

from hvx import _native


def test_openmp_thread_control_roundtrip():
    before = _native.max_threads()
    assert before >= 1
    if _native.openmp_enabled():
        _native.set_num_threads(1)
        assert _native.max_threads() == 1
        _native.set_num_threads(before)
        assert _native.max_threads() == before
    else:
        assert before == 1


@pytest.mark.parametrize("n", [0, -3])
def test_set_num_threads_rejects_non_positive(n):
    with pytest.raises(ValueError, match=f"expected n >= 1, got {n}"):
        _native.set_num_threads(n)

"""Type stub for the hvx._native C++ extension (built from csrc/)."""

def openmp_enabled() -> bool:
    """True when hvx._native was compiled with OpenMP."""

def max_threads() -> int:
    """Threads a parallel batch call uses by default (1 without OpenMP)."""

def set_num_threads(n: int) -> None:
    """Sets the thread count of later batch calls (n >= 1)."""

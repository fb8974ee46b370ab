import importlib.util
import pathlib
import sys

# The tests exercise the *installed* package with its compiled kernels. When
# pytest runs from the repository root (``python -m pytest`` puts the current
# directory on sys.path), the bare source tree would shadow the installed
# package; drop it from the path unless it holds built kernels (an in-place
# developer build: ``python setup.py build_ext --inplace``).
_root = pathlib.Path(__file__).resolve().parent.parent
_kernels = _root / "fastconv" / "_kernels"
if not any(_kernels.glob("stretch*.so")) and not any(_kernels.glob("stretch*.pyd")):
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _root]
    if importlib.util.find_spec("fastconv") is None:
        raise ImportError("fastconv is not installed: run  python3 -m pip install '.[test]'")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _blas_at_full_rate():
    """The planner's choices that tests check were measured beside a BLAS on
    kernels as wide as fastconv's own; on a machine whose BLAS runs narrower
    ones (Tuning.blas_rate: OpenBLAS's AVX2 kernels on AMD Zen 5) the
    planner rightly chooses otherwise. Every test plans at the full rate,
    so that they check the same rules on any machine; the tests of the rate
    itself set it."""
    from fastconv._tuning import tuned
    with tuned(blas_rate=1.0):
        yield

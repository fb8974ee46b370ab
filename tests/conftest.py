import pathlib

import fastconv

# The tests must exercise the installed package (with its compiled kernels),
# not a bare source tree that happens to be importable.
_here = pathlib.Path(__file__).resolve().parent.parent
_pkg = pathlib.Path(fastconv.__file__).resolve().parent
if _pkg.parent == _here:
    assert any(_pkg.joinpath("_kernels").glob("stretch*.so")) or any(
        _pkg.joinpath("_kernels").glob("stretch*.pyd")), (
        "fastconv is imported from the source tree without compiled kernels; "
        "install it first: pip install '.[test]'")

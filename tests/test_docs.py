"""The examples in the docstrings run and print what they show (doctests).

Each module's doctests run in a fresh interpreter against the installed
package: examples change settings (set_config) and must not leak into the
other tests, nor see what those changed.
"""
import importlib.util
import pathlib
import subprocess
import sys

import pytest

import fastconv

MODULES = sorted(
    f"fastconv.{path.stem}" for path in pathlib.Path(fastconv.__file__).parent.glob("*.py")
    if ">>>" in path.read_text())
# the compiled kernels' examples, found in the sources next to these tests
# (an installed wheel holds only the compiled modules)
KERNEL_MODULES = sorted(
    f"fastconv._kernels.{path.stem}"
    for path in (pathlib.Path(__file__).resolve().parent.parent / "fastconv" / "_kernels").glob(
        "*.pyx")
    if ">>>" in path.read_text())

_RUN = """
import doctest, importlib, sys
module = importlib.import_module(sys.argv[1])
result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
print(f"{result.attempted} attempted")
sys.exit(1 if result.failed or not result.attempted else 0)
"""


def test_modules_with_examples_are_found():
    assert {"fastconv.conv", "fastconv._plan", "fastconv._config"} <= set(MODULES)
    assert {"fastconv._kernels.fused", "fastconv._kernels.winograd"} <= set(KERNEL_MODULES)


@pytest.mark.parametrize("module", MODULES + KERNEL_MODULES)
def test_docstring_examples(module, tmp_path):
    if module == "fastconv.dask" and importlib.util.find_spec("distributed") is None:
        pytest.skip("fastconv.dask needs the dask extra")
    # outside the repository, so that the installed package is imported
    result = subprocess.run([sys.executable, "-c", _RUN, module], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

"""Benchmark layers: ../shared/layers.json beside the repository, or the file
named by --layers or FASTCONV_LAYERS. Without a layers file every benchmark
is skipped, with that reason."""
import json
import os
import pathlib

import pytest

_DEFAULT = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "layers.json"


def pytest_addoption(parser):
    parser.addoption("--layers", default=None, help="layers JSON file (default: ../shared/layers.json)")
    parser.addoption("--layer-names", default=None, help="comma-separated subset of layer names")
    parser.addoption("--threads", type=int, default=None, help="threads per call (default: all)")


@pytest.fixture
def threads(request):
    return request.config.getoption("--threads")


def _layers(config):
    path = config.getoption("--layers") or os.environ.get("FASTCONV_LAYERS") or _DEFAULT
    path = pathlib.Path(path)
    if not path.is_file():
        return None, f"no layers file at {path}"
    layers = json.loads(path.read_text())["layers"]
    names = config.getoption("--layer-names")
    if names:
        wanted = set(names.split(","))
        layers = [layer for layer in layers if layer["name"] in wanted]
    return layers, None


def pytest_generate_tests(metafunc):
    if "layer" in metafunc.fixturenames:
        layers, why = _layers(metafunc.config)
        if layers is None:
            metafunc.parametrize("layer", [pytest.param(None, marks=pytest.mark.skip(reason=why))],
                                 ids=["no-layers"])
        else:
            metafunc.parametrize("layer", layers, ids=[layer["name"] for layer in layers])

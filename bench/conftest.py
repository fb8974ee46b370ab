"""Benchmark layers: ../shared/layers.json beside the repository, or the file
named by --layers or FASTCONV_LAYERS. Without a layers file every benchmark
is skipped, with that reason."""
import os

import pytest

from _layers import DEFAULT_LAYERS, load_layers


def pytest_addoption(parser):
    parser.addoption("--layers", default=None, help="layers JSON file (default: ../shared/layers.json)")
    parser.addoption("--layer-names", default=None, help="comma-separated subset of layer names")
    parser.addoption("--threads", type=int, default=None, help="threads per call (default: all)")


@pytest.fixture
def threads(request):
    return request.config.getoption("--threads")


def _layers(config):
    path = config.getoption("--layers") or os.environ.get("FASTCONV_LAYERS") or DEFAULT_LAYERS
    layers = load_layers(path, config.getoption("--layer-names"))
    return layers, (None if layers is not None else f"no layers file at {path}")


def pytest_generate_tests(metafunc):
    if "layer" in metafunc.fixturenames:
        layers, why = _layers(metafunc.config)
        if layers is None:
            metafunc.parametrize("layer", [pytest.param(None, marks=pytest.mark.skip(reason=why))],
                                 ids=["no-layers"])
        else:
            metafunc.parametrize("layer", layers, ids=[layer["name"] for layer in layers])

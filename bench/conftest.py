"""Benchmark layers: ../shared/layers.json beside the repository, or the file
named by --layers or FASTCONV_LAYERS (fastconv._benchcases.default_layers_path).
Without a layers file every benchmark is skipped, with that reason."""
import pytest

from fastconv._benchcases import default_layers_path, load_layers


def pytest_addoption(parser):
    parser.addoption("--layers", default=None, help="layers JSON file (default: ../shared/layers.json)")
    parser.addoption("--layer-names", default=None, help="comma-separated subset of layer names")
    parser.addoption("--threads", type=int, default=None, help="threads per call (default: all)")


@pytest.fixture
def threads(request):
    return request.config.getoption("--threads")


def pytest_generate_tests(metafunc):
    if "layer" in metafunc.fixturenames:
        path = metafunc.config.getoption("--layers") or default_layers_path()
        try:
            layers = load_layers(path, metafunc.config.getoption("--layer-names"))
        except (FileNotFoundError, ValueError) as exc:
            metafunc.parametrize("layer", [pytest.param(None, marks=pytest.mark.skip(reason=str(exc)))],
                                 ids=["no-layers"])
        else:
            metafunc.parametrize("layer", layers, ids=[layer["name"] for layer in layers])

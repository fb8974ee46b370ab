"""The examples run and show what they claim (skipped without their extras)."""
import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conv_net_and_its_shared_dense_equivalent_train_identically():
    pytest.importorskip("sklearn")
    example = _load("equivalence")
    result = example.train(epochs=2, batch=100, log=lambda *a: None)
    curves = result["curves"]
    conv, shared, free = curves["conv (fastconv)"], curves["dense, shared weights"], \
        curves["dense, free weights"]
    assert len(conv) == 2 * 15 and conv[-1] < 0.8 * conv[0]  # it learns
    np.testing.assert_allclose(shared, conv, rtol=1e-10)
    assert np.abs(free - conv).max() > 1e-3  # without sharing it is another network
    for layer, w in ((result["shared"].l1, result["conv"]["w1"]),
                     (result["shared"].l2, result["conv"]["w2"])):
        kernel, spread, outside = layer.kernel()
        np.testing.assert_allclose(kernel, w, rtol=1e-10, atol=1e-12)
        assert spread < 1e-12 and outside == 0
    _, spread, outside = result["free"].l1.kernel()
    assert spread > 1e-3 and outside > 1e-3


def test_dask_stack_convolves_a_file_block_by_block(tmp_path):
    pytest.importorskip("distributed")
    import subprocess
    import sys
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "dask_stack.py"), "--images", "40", "--block", "16",
         "--dir", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "images/s" in result.stdout and result.stdout.count("peak memory") == 2
    assert result.stdout.count("largest relative difference") == 2
    blocks = sorted((tmp_path / "convolved").glob("*.npy"), key=lambda p: int(p.stem))
    assert [np.load(b, mmap_mode="r").shape for b in blocks] == \
        [(16, 64, 56, 56), (16, 64, 56, 56), (8, 64, 56, 56)]
    # the result is the convolution of the file's images (the NumPy reference)
    from reference import conv2d_reference
    example = _load("dask_stack")
    images = np.load(tmp_path / "images.npy", mmap_mode="r")[16:18]
    weight, bias = example.layer_parameters()
    np.testing.assert_allclose(np.load(blocks[1])[:2],
                               conv2d_reference(images, weight, bias, padding=((1, 1), (1, 1))),
                               rtol=1e-4, atol=1e-4)

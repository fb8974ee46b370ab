"""PyTorch as a second oracle, where it is installed (never a dependency)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastconv
from reference import assert_close

torch = pytest.importorskip("torch")


@settings(max_examples=150, deadline=None)
@given(groups=st.integers(1, 3), cg=st.integers(1, 3), kg=st.integers(1, 3),
       H=st.integers(5, 14), W=st.integers(5, 14), R=st.integers(1, 3), S=st.integers(1, 3),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       dtype=st.sampled_from([np.float32, np.float64]), method=st.sampled_from(["stretch", "mapped"]),
       seed=st.integers(0, 2**31))
def test_conv2d_matches_torch(groups, cg, kg, H, W, R, S, stride, padding, dilation, dtype, method, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, groups * cg, H, W)).astype(dtype)
    w = rng.standard_normal((groups * kg, cg, R, S)).astype(dtype)
    b = rng.standard_normal(groups * kg).astype(dtype)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                          stride=stride, padding=padding, dilation=dilation,
                                          groups=groups).numpy()
    out = fastconv.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
                          method=method)
    assert_close(out, expected.astype(np.float64), dtype)


@pytest.mark.parametrize("R, S, dilation", [(3, 3, 1), (4, 4, 1), (2, 5, 2)])
def test_same_padding_matches_torch(R, S, dilation):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 9, 8)), rng.standard_normal((3, 2, R, S))
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same",
                                          dilation=dilation).numpy()
    assert_close(fastconv.conv2d(x, w, padding="same", dilation=dilation), expected, np.float64)


def test_conv1d_matches_torch():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((3, 4, 30)), rng.standard_normal((6, 2, 5))
    expected = torch.nn.functional.conv1d(torch.from_numpy(x), torch.from_numpy(w), stride=2,
                                          padding=3, dilation=2, groups=2).numpy()
    assert_close(fastconv.conv1d(x, w, stride=2, padding=3, dilation=2, groups=2), expected, np.float64)

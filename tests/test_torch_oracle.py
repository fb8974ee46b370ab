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


@settings(max_examples=100, deadline=None)
@given(groups=st.integers(1, 3), cg=st.integers(1, 3), kg=st.integers(1, 3),
       H=st.integers(5, 12), W=st.integers(5, 12), R=st.integers(1, 3), S=st.integers(1, 3),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       dtype=st.sampled_from([np.float32, np.float64]), method=st.sampled_from(["stretch", "mapped"]),
       seed=st.integers(0, 2**31))
def test_gradients_match_torch(groups, cg, kg, H, W, R, S, stride, padding, dilation, dtype,
                               method, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, groups * cg, H, W)).astype(dtype)
    w = rng.standard_normal((groups * kg, cg, R, S)).astype(dtype)
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    g = rng.standard_normal(fastconv.conv2d(x, w, **conv).shape).astype(dtype)
    tx, tw, tg = (torch.from_numpy(a) for a in (x, w, g))
    assert_close(fastconv.conv2d_input_grad(x.shape, w, g, method=method, **conv),
                 torch.nn.grad.conv2d_input(x.shape, tw, tg, **conv).numpy(), dtype)
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, g, method=method, **conv),
                 torch.nn.grad.conv2d_weight(tx, w.shape, tg, **conv).numpy(), dtype)


@settings(max_examples=100, deadline=None)
@given(groups=st.integers(1, 3), cg=st.integers(1, 3), og=st.integers(1, 3),
       H=st.integers(1, 8), W=st.integers(1, 8), R=st.integers(1, 3), S=st.integers(1, 3),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       dtype=st.sampled_from([np.float32, np.float64]), data=st.data())
def test_conv_transpose2d_matches_torch(groups, cg, og, H, W, R, S, stride, dilation, dtype, data):
    output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    padding = tuple(data.draw(st.integers(0, min(2, ((size - 1) * s + d * (k - 1)) // 2)))
                    for size, s, d, k in zip((H, W), stride, dilation, (R, S)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = rng.standard_normal((2, groups * cg, H, W)).astype(dtype)
    w = rng.standard_normal((groups * cg, og, R, S)).astype(dtype)
    b = rng.standard_normal(groups * og).astype(dtype)
    conv = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                dilation=dilation)
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **conv).numpy()
    assert_close(fastconv.conv_transpose2d(x, w, b, **conv), expected, dtype)


def test_conv1d_gradients_and_transpose_match_torch():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((3, 4, 30)), rng.standard_normal((6, 2, 5))
    conv = dict(stride=2, padding=3, dilation=2, groups=2)
    g = rng.standard_normal(fastconv.conv1d(x, w, **conv).shape)
    assert_close(fastconv.conv1d_input_grad(x.shape, w, g, **conv),
                 torch.nn.grad.conv1d_input(x.shape, torch.from_numpy(w), torch.from_numpy(g),
                                            **conv).numpy(), np.float64)
    assert_close(fastconv.conv1d_weight_grad(x, w.shape, g, **conv),
                 torch.nn.grad.conv1d_weight(torch.from_numpy(x), w.shape, torch.from_numpy(g),
                                             **conv).numpy(), np.float64)
    y, wt = rng.standard_normal((2, 6, 9)), rng.standard_normal((6, 2, 4))
    assert_close(fastconv.conv_transpose1d(y, wt, stride=3, padding=2, output_padding=1, groups=3),
                 torch.nn.functional.conv_transpose1d(torch.from_numpy(y), torch.from_numpy(wt),
                                                      stride=3, padding=2, output_padding=1,
                                                      groups=3).numpy(), np.float64)

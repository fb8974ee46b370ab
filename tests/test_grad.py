"""Gradients and the transposed convolution against the NumPy reference,
finite differences, adjointness and the fully connected view."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

import fastconv
from fastconv import _tuning
from fastconv._kernels.fused import supported_isas
from fastconv import _lowerings, _plan
from cases import (DTYPES, GRADIENT_METHODS as METHODS, INPUT_GRAD_METHODS, WEIGHT_GRAD_METHODS,
                   blas_rules, conv_cases, random_arrays, small_tiles)
from reference import (assert_close, conv2d_input_grad_reference, conv2d_reference,
                       conv2d_weight_grad_reference, conv_transpose2d_reference)


def _conv(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"], flip=case["flip"])


def _grad_output(case, rng):
    x_shape = (case["N"], case["C"], case["H"], case["W"])
    w_shape = (case["K"], case["C"] // case["groups"], case["R"], case["S"])
    out_shape = fastconv.plan_conv2d(x_shape, w_shape, stride=case["stride"],
                                     padding=case["padding"], dilation=case["dilation"],
                                     groups=case["groups"]).output_shape
    return rng.standard_normal(out_shape).astype(case["dtype"])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases(METHODS))
def test_gradients_match_reference(case):
    x, w, _ = random_arrays(case)
    grad = _grad_output(case, np.random.default_rng(case["seed"] + 1))
    kw = dict(_conv(case), method=case["method"], num_threads=case["threads"])
    with small_tiles(case["tile_bytes"]):
        grad_x = fastconv.conv2d_input_grad(x.shape, w, grad, **kw)
        grad_w = fastconv.conv2d_weight_grad(x, w.shape, grad, **kw)
    assert grad_x.dtype == grad_w.dtype == case["dtype"]
    assert grad_x.flags.c_contiguous and grad_w.flags.c_contiguous
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)), case["dtype"])
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), case["dtype"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases([m for m in WEIGHT_GRAD_METHODS if m not in METHODS]),
       st.sampled_from([None, 4096, 20_000]))
def test_weight_grad_only_lowerings_match_reference(case, limit):
    """Lowerings of the weight gradient alone (fused), through the public
    function: any geometry, both dtypes, threads, tight memory limits (the
    plan shrinks its panels, or refuses below the smallest)."""
    x, w, _ = random_arrays(case)
    grad = _grad_output(case, np.random.default_rng(case["seed"] + 1))
    kw = dict(_conv(case), method=case["method"], num_threads=case["threads"],
              memory_limit=limit)
    try:
        plan = fastconv.plan_conv2d(x.shape, w.shape, case["dtype"], kind="weight_grad",
                                    **{k: v for k, v in kw.items() if k != "flip"})
    except fastconv.WorkspaceLimitError as exc:
        assert limit is not None and "needs" in str(exc)
        return
    assert limit is None or plan.workspace_bytes <= limit
    grad_w = fastconv.conv2d_weight_grad(x, w.shape, grad, **kw)
    assert grad_w.dtype == case["dtype"] and grad_w.flags.c_contiguous
    assert_close(grad_w, conv2d_weight_grad_reference(x, w.shape, grad, **_conv(case)), case["dtype"])
    # into an out= full of NaN: the kernel writes every element (nothing clears it first)
    out = np.full(w.shape, np.nan, case["dtype"])
    assert fastconv.conv2d_weight_grad(x, w.shape, grad, out=out, **kw) is out
    np.testing.assert_array_equal(out, grad_w)


@st.composite
def stride_one_cases(draw):
    """A stride-1 convolution whose padding never exceeds the kernel's span
    on a side: the geometries whose input gradient runs fused."""
    case = draw(conv_cases(["fused"]))
    spans = (case["dilation"][0] * (case["R"] - 1), case["dilation"][1] * (case["S"] - 1))
    padding = tuple((draw(st.integers(0, span)), draw(st.integers(0, span))) for span in spans)
    H = draw(st.integers(max(1, spans[0] + 1 - sum(padding[0])), 13))
    W = draw(st.integers(max(1, spans[1] + 1 - sum(padding[1])), 13))
    return dict(case, stride=(1, 1), padding=padding, H=H, W=W, method="fused")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stride_one_cases(), st.sampled_from([None, 8192, 60_000]),
       st.sampled_from(supported_isas()), st.sampled_from(["fused", "direct"]))
def test_adjoint_input_grad_matches_reference(case, limit, isa, method):
    """The input gradient as the adjoint's forward pass (stride 1), fused and
    direct: odd sizes, groups, dilation, uneven padding up to the kernel's
    span, flip, both dtypes, threads, every ISA, tight limits; it writes
    every element."""
    x, w, _ = random_arrays(case)
    grad = _grad_output(case, np.random.default_rng(case["seed"] + 1))
    kw = dict(_conv(case), method=method, num_threads=case["threads"], memory_limit=limit)
    with _tuning.tuned(isa=isa):
        try:
            plan = fastconv.plan_conv2d(x.shape, w.shape, case["dtype"], kind="input_grad",
                                        **{k: v for k, v in kw.items() if k != "flip"})
        except fastconv.WorkspaceLimitError as exc:
            assert limit is not None and "needs" in str(exc)
            return
        assert plan.method == method and (limit is None or plan.workspace_bytes <= limit)
        out = np.full(x.shape, np.nan, case["dtype"])
        grad_x = fastconv.conv2d_input_grad(x.shape, w, grad, out=out, **kw)
    assert grad_x is out
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)),
                 case["dtype"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases([m for m in INPUT_GRAD_METHODS if m not in METHODS]),
       st.sampled_from([None, 8192, 60_000]), st.sampled_from(supported_isas()))
def test_input_grad_only_lowerings_match_reference(case, limit, isa):
    """Lowerings of the input gradient alone (phased: a stride-1 forward pass
    per phase of the input) on any geometry: strides 1-3 (phases no tap
    reaches, when the stride exceeds the kernel's reach), dilation, uneven
    padding (wider than the kernel: cropped passes), groups, flip, both
    dtypes, threads, every ISA, tight limits; it writes every element."""
    x, w, _ = random_arrays(case)
    grad = _grad_output(case, np.random.default_rng(case["seed"] + 1))
    kw = dict(_conv(case), method=case["method"], num_threads=case["threads"],
              memory_limit=limit)
    with _tuning.tuned(isa=isa):
        try:
            plan = fastconv.plan_conv2d(x.shape, w.shape, case["dtype"], kind="input_grad",
                                        **{k: v for k, v in kw.items() if k != "flip"})
        except fastconv.WorkspaceLimitError as exc:
            assert limit is not None and "needs" in str(exc)
            return
        assert limit is None or plan.workspace_bytes <= limit
        out = np.full(x.shape, np.nan, case["dtype"])
        grad_x = fastconv.conv2d_input_grad(x.shape, w, grad, out=out, **kw)
    assert grad_x is out
    assert_close(grad_x, conv2d_input_grad_reference(x.shape, w, grad, **_conv(case)),
                 case["dtype"])


# (x shape, weight shape, conv arguments): phases of 3x3, 2x2, 1x1 and 0 taps
def _layer(stride, padding, dilation=(1, 1), groups=1):
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


PHASED_LAYERS = [
    ((2, 6, 13, 11), (8, 6, 5, 5), _layer((2, 2), ((2, 2), (2, 2)))),
    ((1, 4, 9, 10), (4, 1, 3, 3), _layer((2, 2), ((1, 1), (1, 1)), groups=4)),
    ((2, 4, 12, 9), (6, 2, 3, 2), _layer((3, 2), ((0, 2), (3, 1)), (2, 1), groups=2)),
    ((1, 3, 10, 10), (5, 3, 1, 1), _layer((3, 3), ((0, 0), (0, 0)))),
    ((2, 5, 7, 8), (3, 5, 3, 3), _layer((1, 1), ((4, 1), (0, 5)))),
    # 17 filters: the phases' passes have 17 channels per group, more than
    # the depthwise kernel takes
    ((1, 3, 9, 9), (17, 3, 3, 3), _layer((2, 2), ((1, 1), (1, 1)))),
]


@pytest.mark.parametrize("sub_method", ["fused", "direct", "winograd", "depthwise"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_phased_passes_on_each_forward_kernel(sub_method, dtype, monkeypatch):
    """Each phase's forward pass on each of fastconv's own forward kernels
    (the others taken out of the table, so the pass must use this one where
    it applies, or the BLAS lowerings where none does: then phased refuses)."""
    keep = tuple(e for e in _lowerings.TABLE["forward"] if e.uses_blas or e.name == sub_method)
    monkeypatch.setitem(_lowerings.TABLE, "forward", keep)
    _plan._choose.cache_clear()
    used, refused = set(), 0
    rng = np.random.default_rng(21)
    try:
        for x_shape, w_shape, conv in PHASED_LAYERS:
            w = rng.standard_normal(w_shape).astype(dtype)
            try:
                plan = fastconv.plan_conv2d(x_shape, w_shape, dtype, kind="input_grad",
                                            method="phased", **conv)
            except ValueError as exc:
                assert "has no forward kernel of its own for phase" in str(exc)
                refused += 1
                continue
            used |= {p.plan.method for p in plan.blocking.phases}
            grad = rng.standard_normal(fastconv.plan_conv2d(x_shape, w_shape, **conv)
                                       .output_shape).astype(dtype)
            out = np.full(x_shape, np.nan, dtype)
            fastconv.conv2d_input_grad(x_shape, w, grad, method="phased", out=out, **conv)
            assert_close(out, conv2d_input_grad_reference(x_shape, w, grad, **conv), dtype)
    finally:
        _plan._choose.cache_clear()
    assert used == {sub_method}
    # fused and direct compute any phase; Winograd only 3x3 taps, depthwise
    # at most GROUP_MAX_CHANNELS channels per group
    assert refused == {"fused": 0, "direct": 0, "winograd": 5, "depthwise": 1}[sub_method]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("layer", PHASED_LAYERS + [
    ((2, 6, 30, 30), (40, 3, 5, 4), _layer((3, 2), ((2, 1), (1, 3)), (1, 2), groups=2))])
def test_phase_filters_lay_out_every_phase(layer, flip, dtype):
    """phased.phase_filters, in one pass, against each phase's filters built
    by NumPy from the PhaseAxis description: phase p's (C, K/groups * taps)
    matrix at its offset, element [g*Cg + c, (k*rows + i)*cols + j] =
    w[g*Kg + k, c, r, s], r = first_tap + (rows-1-i) * tap_step (likewise
    s), of the kernel reversed first if flip; the gaps between phases'
    matrices untouched. Filter counts past PHASE_FILTER_BLOCK (16)."""
    from fastconv._kernels import phased
    from fastconv._params import conv_geometry
    x_shape, w_shape, conv = layer
    g = conv_geometry(x_shape, w_shape, **conv)
    w = np.random.default_rng(4).standard_normal(w_shape).astype(dtype)
    at, size = _lowerings.Phased._filters_at(g, True)
    out = np.full(size + 3, np.nan, dtype)
    phased.phase_filters(w, out, *_lowerings.phase_filter_taps(g, flip), at, g.groups, 2)
    kernel = w[:, :, ::-1, ::-1] if flip else w
    Kg, Cg = g.K // g.groups, g.C // g.groups
    written = np.zeros(out.shape, bool)
    for offset, (_, rows, cols, _) in zip(at, _lowerings.input_phases(g)):
        r = rows.first_tap + (rows.taps - 1 - np.arange(rows.taps)) * rows.tap_step
        s = cols.first_tap + (cols.taps - 1 - np.arange(cols.taps)) * cols.tap_step
        taps = kernel[:, :, r][:, :, :, s]                    # (K, Cg, rows, cols)
        expected = (taps.reshape(g.groups, Kg, Cg, -1).transpose(0, 2, 1, 3)
                    .reshape(g.C, Kg * rows.taps * cols.taps))
        n = expected.size
        np.testing.assert_array_equal(out[offset:offset + n].reshape(expected.shape), expected)
        written[offset:offset + n] = True
    assert np.isnan(out[~written]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_phased_filters_phase_by_phase_under_a_tight_limit(dtype):
    """Where the limit leaves no room for every phase's filters at once, the
    plan gathers them phase by phase into the largest phase's buffer (the
    workspace then smaller), with the same result."""
    x_shape, w_shape = (2, 64, 8, 8), (64, 64, 4, 4)
    conv = dict(stride=(2, 2), padding=((1, 1), (1, 1)))
    rng = np.random.default_rng(8)
    w = rng.standard_normal(w_shape).astype(dtype)
    grad = rng.standard_normal((2, 64, 4, 4)).astype(dtype)
    plans = {}
    for limit in (None, 200_000 * np.dtype(dtype).itemsize // 4):
        plan = fastconv.plan_conv2d(x_shape, w_shape, dtype, kind="input_grad",
                                    method="phased", memory_limit=limit, **conv)
        plans[plan.blocking.filters_at_once] = plan
        out = fastconv.conv2d_input_grad(x_shape, w, grad, method="phased",
                                         memory_limit=limit, **conv)
        assert_close(out, conv2d_input_grad_reference(x_shape, w, grad, **conv), dtype)
    assert set(plans) == {True, False}
    assert plans[False].workspace_bytes < plans[True].workspace_bytes
    assert "phase by phase" in repr(plans[False]) and "in one pass" in repr(plans[True])


def test_phase_filters_rejects_bad_maps():
    from fastconv._kernels import phased
    w = np.zeros((4, 2, 3, 3), np.float32)
    out = np.zeros(64, np.float32)
    taps = np.array([0, 4, 8], np.intp)
    with pytest.raises(ValueError, match="phase_first"):
        phased.phase_filters(w, out, np.array([0, 2], np.intp), taps, np.zeros(1, np.intp), 1, 1)
    with pytest.raises(ValueError, match="do not fit out"):
        phased.phase_filters(w, out, np.array([0, 3], np.intp), taps, np.array([60], np.intp),
                             1, 1)
    with pytest.raises(ValueError, match="do not fit out"):   # (no overflow past the check)
        phased.phase_filters(w, out, np.array([0, 3], np.intp), taps,
                             np.array([2**63 - 20], np.intp), 1, 1)
    for groups in (0, -1, 3):
        with pytest.raises(ValueError, match="must be >= 1 and divide the 4 filters"):
            phased.phase_filters(w, out, np.array([0, 3], np.intp), taps,
                                 np.zeros(1, np.intp), groups, 1)
    with pytest.raises(ValueError, match="is not a tap of 3x3"):
        phased.phase_filters(w, out, np.array([0, 3], np.intp), np.array([0, 9, 1], np.intp),
                             np.zeros(1, np.intp), 1, 1)


def test_phases_partition_the_kernel_taps():
    """Along one axis, each tap of the kernel feeds exactly the input
    positions of the phase it is assigned to: the phases' taps partition the
    taps reaching the input, for every stride, dilation and padding."""
    for length, taps, stride, pad, dil in [(13, 5, 2, 2, 1), (12, 3, 3, 0, 2), (10, 1, 3, 0, 1),
                                           (9, 4, 2, 5, 3), (7, 3, 1, 4, 1)]:
        out_len = (length + 2 * pad - dil * (taps - 1) - 1) // stride + 1
        seen = []
        for phase in range(stride):
            axis = _lowerings.phase_axis(length, out_len, taps, stride, pad, dil, phase)
            reaching = sorted({r for o in range(out_len) for r in range(taps)
                               if o * stride + r * dil - pad in range(phase, length, stride)})
            got = [] if axis is None else list(range(axis.first_tap, taps, axis.tap_step))
            assert set(reaching) <= set(got), (length, taps, stride, pad, dil, phase)
            seen += reaching
        assert len(seen) == len(set(seen))


def test_fused_input_grad_of_conv1d_and_what_it_refuses():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 4, 23)), rng.standard_normal((6, 2, 4))
    conv = dict(padding=(3, 1), dilation=2, groups=2)
    g = rng.standard_normal(fastconv.conv1d(x, w, **conv).shape)
    assert_close(fastconv.conv1d_input_grad(x.shape, w, g, method="fused", **conv),
                 conv2d_input_grad_reference((2, 4, 1, 23), w[:, :, None], g[:, :, None],
                                             padding=((0, 0), (3, 1)), dilation=(1, 2),
                                             groups=2)[:, :, 0], np.float64)
    with pytest.raises(ValueError, match="stride-1 convolutions only"):
        fastconv.plan_conv2d((1, 2, 9, 9), (2, 2, 3, 3), stride=2, kind="input_grad",
                             method="fused")
    with pytest.raises(ValueError, match="exceeds the kernel's span"):
        fastconv.plan_conv2d((1, 2, 9, 9), (2, 2, 3, 3), padding=3, kind="input_grad",
                             method="fused")
    with pytest.raises(ValueError, match="no output_padding"):
        fastconv.conv_transpose2d(np.ones((1, 2, 4, 4)), np.ones((2, 2, 3, 3)), dilation=2,
                                  output_padding=1, method="fused")
    # deep stride-1 layers plan it (3x3 ones Winograd's adjoint pass, also
    # on ResNet-50 5b's 7x7 maps; 5x5 ones on small maps with many channels,
    # where the padding is a large share of the taps, the direct kernel's);
    # paper_mnist's one channel (1 row in 8) does not
    assert fastconv.plan_conv2d((8, 64, 56, 56), (64, 64, 5, 5), padding=2,
                                kind="input_grad").method == "fused"
    assert fastconv.plan_conv2d((8, 64, 56, 56), (64, 64, 3, 3), padding=1,
                                kind="input_grad").method == "winograd"
    assert fastconv.plan_conv2d((8, 512, 7, 7), (512, 512, 3, 3), padding=1,
                                kind="input_grad").method == "winograd"
    assert fastconv.plan_conv2d((8, 512, 7, 7), (512, 512, 5, 5), padding=2,
                                kind="input_grad").method == "direct"
    assert fastconv.plan_conv2d((64, 1, 28, 28), (32, 1, 3, 3),
                                kind="input_grad").method != "fused"


@settings(max_examples=150, deadline=None)
@given(conv_cases(METHODS))
def test_adjointness(case):
    """<conv2d(x, w), g> == <x, input_grad(g)> == <w, weight_grad(x, g)> in float64."""
    case = dict(case, dtype=np.float64)
    x, w, _ = random_arrays(case)
    g = _grad_output(case, np.random.default_rng(case["seed"] + 1))
    kw = dict(_conv(case), method=case["method"], num_threads=case["threads"])
    lhs = np.vdot(fastconv.conv2d(x, w, **kw), g)
    tol = 1e-10 * max(1.0, abs(lhs))
    assert abs(lhs - np.vdot(x, fastconv.conv2d_input_grad(x.shape, w, g, **kw))) <= tol
    assert abs(lhs - np.vdot(w, fastconv.conv2d_weight_grad(x, w.shape, g, **kw))) <= tol


@pytest.mark.parametrize("method", METHODS + ["auto"])
@pytest.mark.parametrize("conv", [
    dict(stride=1, padding=1, dilation=1, groups=1),
    dict(stride=2, padding=((0, 2), (1, 0)), dilation=1, groups=2),
    dict(stride=(1, 3), padding=2, dilation=(2, 1), groups=1),
    dict(stride=1, padding=0, dilation=1, groups=4, flip=True),
])
def test_gradients_match_finite_differences(method, conv):
    """A nonlinear loss, L = sum(tanh(conv2d(x, w) + b)), differentiated both
    ways along random directions (central differences, float64)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((4, 4 // conv["groups"], 3, 2))
    b = rng.standard_normal(4)

    def loss(x, w, b):
        return np.tanh(fastconv.conv2d(x, w, b, method=method, **conv)).sum()

    grad_y = 1 - np.tanh(fastconv.conv2d(x, w, b, method=method, **conv)) ** 2
    analytic = dict(x=fastconv.conv2d_input_grad(x.shape, w, grad_y, method=method, **conv),
                    w=fastconv.conv2d_weight_grad(x, w.shape, grad_y, method=method, **conv),
                    b=grad_y.sum(axis=(0, 2, 3)))  # the bias gradient, as documented
    eps = 1e-6
    for name, value in dict(x=x, w=w, b=b).items():
        direction = rng.standard_normal(value.shape)
        args = dict(x=x, w=w, b=b)
        args[name] = value + eps * direction
        up = loss(**args)
        args[name] = value - eps * direction
        numeric = (up - loss(**args)) / (2 * eps)
        np.testing.assert_allclose(np.vdot(analytic[name], direction), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_matrix_transpose_is_the_input_gradient(groups):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 4 // groups, 3, 3))
    conv = dict(stride=2, padding=1, dilation=1, groups=groups)
    g = rng.standard_normal((1, 4, 4, 3))
    expected = fastconv.conv2d_input_grad((1, 4, 7, 6), w, g, **conv)[0].ravel()
    assert_close(fastconv.conv_matrix(w, (4, 7, 6), **conv).T @ g.ravel(), expected, np.float64)
    assert_close(fastconv.conv_matrix(w, (4, 7, 6), sparse=True, **conv).T @ g.ravel(),
                 expected, np.float64)


@pytest.mark.parametrize("method", METHODS + ["gemm1x1"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_gradients(method, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6, 5, 7)).astype(dtype)[:, :, :, ::-1]  # reversed rows: copied
    w = rng.standard_normal((4, 3, 1, 1)).astype(dtype)
    g = rng.standard_normal((3, 4, 5, 7)).astype(dtype)
    assert_close(fastconv.conv2d_input_grad(x.shape, w, g, groups=2, method=method),
                 conv2d_input_grad_reference(x.shape, w, g, groups=2), dtype)
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, g, groups=2, method=method),
                 conv2d_weight_grad_reference(x, w.shape, g, groups=2), dtype)


@pytest.mark.parametrize("method", METHODS)
def test_weight_grad_is_reproducible_and_input_grad_thread_independent(method):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 8, 12, 11)).astype(np.float32)
    g = rng.standard_normal((7, 6, 12, 11)).astype(np.float32)
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    with small_tiles(64 * 72 * 4):
        for threads in (1, 2, 3):
            first = fastconv.conv2d_weight_grad(x, w.shape, g, padding=1, method=method,
                                                num_threads=threads)
            for _ in range(3):
                again = fastconv.conv2d_weight_grad(x, w.shape, g, padding=1, method=method,
                                                    num_threads=threads)
                assert np.array_equal(first, again)
        # each input element is summed by one thread in tile order: the bits
        # do not depend on the thread count
        one = fastconv.conv2d_input_grad(x.shape, w, g, padding=1, method=method, num_threads=1)
        for threads in (2, 3):
            assert np.array_equal(one, fastconv.conv2d_input_grad(
                x.shape, w, g, padding=1, method=method, num_threads=threads))


@pytest.mark.parametrize("N, threads", [(1, 2), (1, 3), (2, 3)])
def test_small_batches_split_channels_between_threads(N, threads):
    rng = np.random.default_rng(6)
    x_shape, w = (N, 5, 9, 9), rng.standard_normal((4, 5, 3, 3))
    g = rng.standard_normal((N, 4, 9, 9))
    # (the mapped lowering's split; auto takes the adjoint's fused pass here)
    plan = fastconv.plan_conv2d(x_shape, w.shape, "float64", padding=1, num_threads=threads,
                                kind="input_grad", method="mapped")
    if plan.kernel_threads > 1:
        assert plan.blocking.blocks >= -(-threads // N)
    assert_close(fastconv.conv2d_input_grad(x_shape, w, g, padding=1, num_threads=threads,
                                            method="mapped"),
                 conv2d_input_grad_reference(x_shape, w, g, padding=((1, 1), (1, 1))), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, padding, groups", [(2, 0, 1), (2, 1, 1), (6, 1, 1), (3, 1, 2)])
def test_weight_grad_split_by_filters_for_many_filters_and_small_maps(N, padding, groups, dtype):
    """More filters than the batch has output positions: threads split the
    filters (no accumulators) instead of the images."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((N, 8, 3, 3)).astype(dtype)
    w_shape = (64, 8 // groups, 3, 3)
    g = rng.standard_normal((N, 64, 1 + 2 * padding, 1 + 2 * padding)).astype(dtype)
    expected = conv2d_weight_grad_reference(x, w_shape, g, padding=((padding,) * 2,) * 2,
                                            groups=groups)
    for threads in (1, 2, 3):
        plan = fastconv.plan_conv2d(x.shape, w_shape, dtype, padding=padding, groups=groups,
                                    num_threads=threads, kind="weight_grad", method="mapped")
        if threads > 1 and plan.kernel_threads > 1:
            assert plan.blocking.blocks > 1, plan
        for method in ("auto", "mapped"):
            out = fastconv.conv2d_weight_grad(x, w_shape, g, padding=padding, groups=groups,
                                              num_threads=threads, method=method)
            assert_close(out, expected, dtype)
            again = fastconv.conv2d_weight_grad(x, w_shape, g, padding=padding, groups=groups,
                                                num_threads=threads, method=method)
            assert np.array_equal(out, again)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["input_grad", "weight_grad"]), N=st.integers(1, 4),
       C=st.integers(1, 12), K=st.integers(1, 12), H=st.integers(3, 30), R=st.integers(1, 3),
       limit=st.integers(20_000, 2_000_000), threads=st.integers(1, 3),
       dtype=st.sampled_from(DTYPES))
def test_gradient_workspace_within_limit_and_really_allocated(kind, N, C, K, H, R, limit,
                                                              threads, dtype):
    shape, wshape = (N, C, H, H + 3), (K, C, R, R)
    try:
        plan = fastconv.plan_conv2d(shape, wshape, dtype, padding=R // 2, memory_limit=limit,
                                    num_threads=threads, kind=kind)
    except fastconv.WorkspaceLimitError as exc:
        assert "needs" in str(exc)
        return
    assert plan.workspace_bytes <= limit and plan.kind == kind
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(shape).astype(dtype), rng.standard_normal(wshape).astype(dtype)
    g = rng.standard_normal(plan.geometry.output_shape).astype(dtype)
    assert plan.output_shape == (shape if kind == "input_grad" else wshape)
    conv = dict(padding=R // 2, memory_limit=limit, num_threads=threads)
    run = {"input_grad": lambda: fastconv.conv2d_input_grad(shape, w, g, **conv),
           "weight_grad": lambda: fastconv.conv2d_weight_grad(x, wshape, g, **conv)}[kind]
    run()  # warm-up: first-call imports are not the call's memory
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = run()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak - out.nbytes <= plan.workspace_bytes + 64 * 1024, (plan, peak)
    pads = ((R // 2,) * 2,) * 2
    expected = (conv2d_input_grad_reference(shape, w, g, padding=pads) if kind == "input_grad"
                else conv2d_weight_grad_reference(x, wshape, g, padding=pads))
    assert_close(out, expected, dtype)


def test_gradient_plans_follow_the_forward_rules():
    vgg = (16, 64, 224, 224), (64, 64, 3, 3)
    # auto takes Winograd for both gradients (as for the forward pass), and
    # for a 5x5 kernel fused (input gradient) or direct (weight gradient:
    # 5 taps per tile; 0.85-0.89x fused's time on 64 -> 64 channels at 56x56
    # and 224x224), within the limit (the BLAS rules are this test's
    # subject, so they are asked for by name below)
    for kind in ("input_grad", "weight_grad"):
        wide = "direct" if kind == "weight_grad" else "fused"
        for weight, method in (((64, 64, 3, 3), "winograd"), ((64, 64, 5, 5), wide)):
            auto = fastconv.plan_conv2d(vgg[0], weight, padding=weight[2] // 2,
                                        memory_limit="64MiB", kind=kind)
            assert auto.method == method and auto.workspace_bytes <= 64 * 2**20, auto
    for kind in ("input_grad", "weight_grad"):
        plan = fastconv.plan_conv2d(*vgg, padding=1, memory_limit="64MiB", kind=kind,
                                    method="mapped")
        assert plan.method == "mapped" and plan.workspace_bytes <= 64 * 2**20, plan
        assert f"{kind}, mapped" in repr(plan)
        small = fastconv.plan_conv2d((8, 256, 14, 14), (256, 256, 3, 3), padding=1, kind=kind,
                                     method="stretch")
        # small images: several per GEMM, as in the forward pass (wider GEMMs
        # for the input gradient, deeper ones for the weight gradient)
        assert small.method == "stretch" and small.blocking.images == 2, small
        if kind == "weight_grad":
            # many filters, deep rows, few columns, a 5x5 kernel: the direct
            # weight gradient (23.9 ms against fused's 25.4, 2 threads) is
            # planned (a 3x3 kernel: Winograd's)
            auto = fastconv.plan_conv2d((8, 256, 14, 14), (256, 256, 5, 5), padding=2, kind=kind)
            assert auto.method == "direct", auto
            auto = fastconv.plan_conv2d((8, 256, 14, 14), (256, 256, 3, 3), padding=1, kind=kind)
            assert auto.method == "winograd", auto
            # ResNet-50's stem (147 rows, 64 filters): fused with the output
            # gradient read in place took 0.86x mapped's time (interleaved);
            # direct 0.88x fused's (a channel's 49 taps in tiles of 5-6
            # across kernel rows)
            stem = fastconv.plan_conv2d((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3,
                                        kind=kind)
            assert stem.method == "direct", stem
            # 9 rows, 32 filters: packing B^T weighs on 32 x 16 MACs per
            # column (the MNIST layer: mapped 0.92x fused's time)
            shallow = fastconv.plan_conv2d((64, 1, 28, 28), (32, 1, 3, 3), kind=kind)
            assert shallow.method != "fused", shallow
        # a 1x1 layer: the weight gradient on gemm1x1; the input gradient is
        # a 1x1 forward pass with 64 filters over the batch's columns, fused
        # (0.81x gemm1x1's time, interleaved, fp32, 2 threads)
        pointwise = fastconv.plan_conv2d((8, 64, 56, 56), (256, 64, 1, 1), kind=kind).method
        assert pointwise == ("fused" if kind == "input_grad" else "gemm1x1"), pointwise
        with blas_rules():
            assert fastconv.plan_conv2d((8, 64, 56, 56), (256, 64, 1, 1),
                                        kind=kind).method == "gemm1x1"
    # a gradient plan executes like the function of its kind, and names the
    # operands it expects
    rng = np.random.default_rng(3)
    x, w, g = (rng.standard_normal(s) for s in ((2, 3, 6, 5), (4, 3, 3, 3), (2, 4, 4, 3)))
    input_plan = fastconv.plan_conv2d(x.shape, w.shape, "float64", kind="input_grad")
    np.testing.assert_array_equal(input_plan.execute(w, g),
                                  fastconv.conv2d_input_grad(x.shape, w, g))
    weight_plan = fastconv.plan_conv2d(x.shape, w.shape, "float64", kind="weight_grad")
    np.testing.assert_array_equal(weight_plan.execute(x, g),
                                  fastconv.conv2d_weight_grad(x, w.shape, g))
    with pytest.raises(ValueError, match=r"grad_output has shape \(2, 4, 6, 5\)"):
        input_plan.execute(w, np.ones((2, 4, 6, 5)))
    with pytest.raises(TypeError, match=r"executes on \(weight, grad_output\)"):
        input_plan.execute(w)
    with pytest.raises(ValueError, match="kind"):
        fastconv.plan_conv2d((1, 1, 4, 4), (1, 1, 3, 3), kind="backward")


def test_weight_grad_accumulators_counted_and_dropped_under_a_tight_limit():
    shape, wshape = (8, 64, 16, 16), (128, 64, 3, 3)
    roomy = fastconv.plan_conv2d(shape, wshape, padding=1, num_threads=2, kind="weight_grad",
                                 method="mapped")
    accumulator = 128 * 64 * 9 * 4
    assert roomy.kernel_threads == 2 and roomy.workspace_bytes > accumulator
    tight = fastconv.plan_conv2d(shape, wshape, padding=1, num_threads=2, kind="weight_grad",
                                 memory_limit=accumulator, method="mapped")
    assert tight.kernel_threads == 1 and tight.workspace_bytes <= accumulator


# ---------------------------------------------------------------------------
# 1-D


@pytest.mark.parametrize("method", METHODS)
def test_conv1d_gradients(method):
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((3, 4, 29)), rng.standard_normal((6, 2, 5))
    conv = dict(stride=2, padding=(3, 1), dilation=2, groups=2)
    g = rng.standard_normal(fastconv.conv1d(x, w, **conv).shape)
    ref2d = dict(stride=(1, 2), padding=((0, 0), (3, 1)), dilation=(1, 2), groups=2)
    grad_x = fastconv.conv1d_input_grad(x.shape, w, g, method=method, **conv)
    grad_w = fastconv.conv1d_weight_grad(x, w.shape, g, method=method, **conv)
    assert grad_x.shape == x.shape and grad_w.shape == w.shape
    assert_close(grad_x, conv2d_input_grad_reference(
        (3, 4, 1, 29), w[:, :, None], g[:, :, None], **ref2d)[:, :, 0], np.float64)
    assert_close(grad_w, conv2d_weight_grad_reference(
        x[:, :, None], (6, 2, 1, 5), g[:, :, None], **ref2d)[:, :, 0], np.float64)
    y = rng.standard_normal((3, 6, 10))
    out = fastconv.conv_transpose1d(y, rng.standard_normal((6, 2, 3)), stride=3, padding=1,
                                    output_padding=2, groups=2, method=method)
    assert out.shape == (3, 4, (10 - 1) * 3 - 2 + 2 + 2 + 1)


# ---------------------------------------------------------------------------
# transposed convolution


@st.composite
def transpose_cases(draw):
    groups = draw(st.integers(1, 3))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(2))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(2))
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    # output_padding below stride or dilation; padding that leaves an output
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    pads = []
    for size, s, d, k, op in zip((H, W), stride, dilation, kernel, output_padding):
        full = (size - 1) * s + d * (k - 1) + 1 + op
        top = draw(st.integers(0, min(3, full - 1)))
        pads.append((top, draw(st.integers(0, min(3, full - 1 - top)))))
    return dict(x_shape=(draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)), H, W),
                c_out_group=draw(st.integers(1, 3)), kernel=kernel, groups=groups, stride=stride,
                dilation=dilation, padding=tuple(pads), output_padding=output_padding,
                bias=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)),
                method=draw(st.sampled_from(INPUT_GRAD_METHODS + ["auto"])),
                threads=draw(st.sampled_from([1, 2, 3])), seed=draw(st.integers(0, 2**31)))


def _transpose_args(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["x_shape"]).astype(case["dtype"])
    w = rng.standard_normal((case["x_shape"][1], case["c_out_group"]) + case["kernel"])
    b = rng.standard_normal(case["c_out_group"] * case["groups"]) if case["bias"] else None
    conv = {k: case[k] for k in ("stride", "padding", "output_padding", "dilation", "groups")}
    return x, w.astype(case["dtype"]), None if b is None else b.astype(case["dtype"]), conv


@settings(max_examples=400, deadline=None)
@given(transpose_cases())
def test_conv_transpose2d_matches_reference(case):
    x, w, b, conv = _transpose_args(case)
    out = fastconv.conv_transpose2d(x, w, b, method=case["method"], num_threads=case["threads"],
                                    **conv)
    assert out.dtype == case["dtype"]
    assert_close(out, conv_transpose2d_reference(x, w, b, **conv), case["dtype"])


def test_conv_transpose2d_inverts_the_shape_of_conv2d():
    """A strided conv2d and its transpose map shapes back and forth, and the
    transpose is the conv2d's input gradient."""
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((2, 3, 11, 10)), rng.standard_normal((5, 3, 3, 3))
    y = fastconv.conv2d(x, w, stride=2, padding=1)
    back = fastconv.conv_transpose2d(y, w, stride=2, padding=1, output_padding=(0, 1))
    assert back.shape == x.shape
    assert_close(back, fastconv.conv2d_input_grad(x.shape, w, y, stride=2, padding=1), np.float64)
    assert_close(back, conv2d_input_grad_reference(x.shape, w, y, stride=(2, 2),
                                                   padding=((1, 1), (1, 1))), np.float64)


@pytest.mark.parametrize("method", ["auto", "stretch", "mapped"])
def test_conv_transpose2d_output_padding_beyond_a_1x1_kernel(method):
    """1x1 kernel, dilation 2, output_padding 1: the output has a row and a
    column no input reaches; they must be zero (bias), not left unwritten."""
    rng = np.random.default_rng(12)
    x, w, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((3, 2, 1, 1)), np.ones(2)
    conv = dict(dilation=2, output_padding=1)
    out = fastconv.conv_transpose2d(x, w, b, method=method, **conv)
    assert_close(out, conv_transpose2d_reference(x, w, b, dilation=(2, 2), output_padding=(1, 1)),
                 np.float64)
    assert np.all(out[:, :, -1, :] == 1) and np.all(out[:, :, :, -1] == 1)


def test_gradients_take_any_array():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 8, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal((2, 4, 6, 7))
    expected_x = conv2d_input_grad_reference(x.shape, w, g)
    expected_w = conv2d_weight_grad_reference(x, w.shape, g)
    for view in (lambda a: a.astype(">f8"), np.asfortranarray, lambda a: a.tolist()):
        assert_close(fastconv.conv2d_input_grad(x.shape, view(w), view(g)), expected_x, np.float64)
        assert_close(fastconv.conv2d_weight_grad(view(x), w.shape, view(g)), expected_w, np.float64)
    # strided views read in place; integers count as float64
    x2 = np.repeat(x, 2, axis=3)[..., ::2]
    assert_close(fastconv.conv2d_weight_grad(x2, w.shape, g), expected_w, np.float64)
    out = fastconv.conv2d_input_grad(np.array(x.shape), w.astype(np.float32), g.astype(np.int64))
    assert out.dtype == np.float64
    assert fastconv.conv2d_weight_grad(x.astype(np.float32), w.shape, g.astype(np.float32)).dtype \
        == np.float32
    # empty batch and zero-size kernels' reduction
    assert fastconv.conv2d_input_grad((0, 3, 8, 9), w, g[:0]).shape == (0, 3, 8, 9)
    assert not fastconv.conv2d_weight_grad(x[:0], w.shape, g[:0]).any()


@pytest.mark.parametrize("call, match", [
    (lambda: fastconv.conv2d_input_grad((2, 3, 8, 9), np.ones((4, 3, 3, 3)), np.ones((2, 4, 6, 6))),
     r"grad_output must have .*\(2, 4, 6, 7\).*got shape \(2, 4, 6, 6\)"),
    (lambda: fastconv.conv2d_input_grad((2, 3, 8), np.ones((4, 3, 3, 3)), np.ones((2, 4, 6, 7))),
     "input_shape must be a tuple of 4 ints"),
    (lambda: fastconv.conv2d_input_grad((2, -3, 8, 9), np.ones((4, 3, 3, 3)), np.ones((2, 4, 6, 7))),
     "negative"),
    (lambda: fastconv.conv2d_input_grad((2, 4, 8, 9), np.ones((4, 3, 3, 3)), np.ones((2, 4, 6, 7))),
     r"weight.shape\[1\] must be C/groups"),
    (lambda: fastconv.conv2d_weight_grad(np.ones((2, 3, 8, 9)), (4, 3, 3), np.ones((2, 4, 6, 7))),
     "weight_shape must be a tuple of 4 ints"),
    (lambda: fastconv.conv2d_weight_grad(np.ones((2, 3, 8, 9)), (4, 3, 3, 3), np.ones((2, 4, 7))),
     "grad_output must have"),
    (lambda: fastconv.conv2d_weight_grad(np.ones((2, 3, 8, 9)), "abc", np.ones((2, 4, 6, 7))),
     "weight_shape"),
    (lambda: fastconv.conv_transpose2d(np.ones((1, 3, 4, 4)), np.ones((2, 3, 3, 3))),
     r"weight.shape\[0\] must be C_in = 3"),
    (lambda: fastconv.conv_transpose2d(np.ones((1, 2, 4, 4)), np.ones((2, 3, 3, 3)), stride=2,
                                       output_padding=2), "output_padding"),
    (lambda: fastconv.conv_transpose2d(np.ones((1, 2, 4, 4)), np.ones((2, 3, 3, 3)), padding="same"),
     "numeric padding"),
    (lambda: fastconv.conv_transpose2d(np.ones((1, 2, 1, 1)), np.ones((2, 3, 1, 1)), padding=1),
     "empty output"),
    (lambda: fastconv.conv_transpose2d(np.ones((1, 2, 4, 4)), np.ones((2, 3, 3, 3)), np.ones(2)),
     r"bias must have shape \(3,\)"),
    (lambda: fastconv.conv_transpose2d(np.ones((1, 3, 4, 4)), np.ones((3, 3, 3, 3)), groups=2),
     "divisible by groups=2"),
    (lambda: fastconv.conv_transpose2d(np.ones((1, 2, 4)), np.ones((2, 3, 3, 3))), "x must be 4-D"),
    (lambda: fastconv.conv2d_input_grad((1, 1, 4, 4), np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)),
                                        method="fast"), "method"),
])
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_gradients_reach_the_reference_through_conv2d_reference():
    """The reference gradients are themselves the adjoints of the reference
    convolution (so the tests above compare against an independent truth)."""
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((2, 4, 6, 7)), rng.standard_normal((6, 2, 3, 2))
    conv = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)
    y = conv2d_reference(x, w, **conv)
    g = rng.standard_normal(y.shape)
    lhs = np.vdot(y, g)
    assert abs(lhs - np.vdot(x, conv2d_input_grad_reference(x.shape, w, g, **conv))) < 1e-10 * abs(lhs)
    assert abs(lhs - np.vdot(w, conv2d_weight_grad_reference(x, w.shape, g, **conv))) < 1e-10 * abs(lhs)

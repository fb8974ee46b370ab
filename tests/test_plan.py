"""The planner: lowering choice, workspace bound, and that the bound is real."""
import dataclasses
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastconv
from fastconv._kernels import direct
from fastconv._kernels.openmp_info import openmp_enabled

# thread-count and lowering rules below assume OpenMP threads over the batch
requires_openmp = pytest.mark.skipif(not openmp_enabled(), reason="built without OpenMP")
from fastconv import _lowerings, _tuning
from reference import assert_close, conv2d_reference
from cases import blas_rules


@settings(max_examples=60, deadline=None)
@given(N=st.integers(1, 4), C=st.integers(1, 16), K=st.integers(1, 16), H=st.integers(3, 40),
       W=st.integers(3, 40), R=st.integers(1, 3), stride=st.integers(1, 2),
       limit=st.integers(20_000, 3_000_000), threads=st.integers(1, 3),
       dtype=st.sampled_from([np.float32, np.float64]), flip=st.booleans())
def test_workspace_within_limit_and_really_allocated(N, C, K, H, W, R, stride, limit, threads, dtype,
                                                     flip):
    shape, wshape = (N, C, H, W), (K, C, R, R)
    try:
        plan = fastconv.plan_conv2d(shape, wshape, dtype, stride=stride, padding=R // 2,
                                    memory_limit=limit, num_threads=threads, flip=flip)
    except fastconv.WorkspaceLimitError as exc:
        assert "needs" in str(exc)
        return
    assert plan.workspace_bytes <= limit
    g, tuning = plan.geometry, _tuning.current()
    matrix = g.rows * g.cols * plan.dtype.itemsize
    # one whole stretched matrix per thread, one image per GEMM
    table = _lowerings.buffer_bytes({"table": (_lowerings.row_table_shape(g), np.intp)})
    per_image_stretch = table + min(threads, g.N * g.groups) * matrix
    if plan.method == "mapped":
        # the planner only tiles when whole stretched matrices do not fit the
        # limit, would spill the cache, or would leave threads idle
        assert (per_image_stretch > limit or matrix > tuning.stretch_cache_bytes
                or g.N * g.groups < threads), plan
        assert plan.blocking.tile_cols <= g.cols
    elif plan.method == "stretch":
        assert matrix <= tuning.stretch_cache_bytes
        assert plan.blocking.images == 1 or g.cols < tuning.tile_min_cols
    if plan.blas_threads > 1:
        # threaded BLAS only when the limit allows a single buffer
        assert plan.kernel_threads == 1 and threads > 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(wshape).astype(dtype)
    plan.execute(x, w)  # warm-up: first-call imports are not the call's memory
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = plan.execute(x, w)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # everything beyond the output is workspace, plus a little interpreter slack
    assert peak - out.nbytes <= plan.workspace_bytes + 64 * 1024, (plan, peak)
    assert_close(out, conv2d_reference(x, w, stride=(stride, stride), flip=flip,
                                       padding=((R // 2,) * 2,) * 2), dtype)


@requires_openmp
def test_choice_rules():
    # the fused lowering outbids the BLAS ones on deep layers (5x5 here: on
    # 3x3 stride-1 ones, Winograd outbids it, see test_winograd_kernel)
    assert fastconv.plan_conv2d((16, 64, 224, 224), (64, 64, 5, 5), padding=2,
                                memory_limit="64MiB").method == "fused"
    # and gemm1x1 on 1x1 layers with enough columns in the batch
    # (Tuning.fused_pointwise_min_cols), not with few, and not on shallow 3x3
    # ones (paper_mnist)
    assert fastconv.plan_conv2d((8, 64, 56, 56), (64, 64, 1, 1)).method == "fused"
    assert fastconv.plan_conv2d((8, 512, 28, 28), (128, 512, 1, 1)).method == "fused"
    assert fastconv.plan_conv2d((8, 1024, 14, 14), (256, 1024, 1, 1)).method == "fused"
    assert fastconv.plan_conv2d((8, 2048, 7, 7), (512, 2048, 1, 1)).method == "fused"
    assert fastconv.plan_conv2d((1, 1024, 14, 14), (256, 1024, 1, 1)).method == "gemm1x1"
    assert fastconv.plan_conv2d((1, 2048, 7, 7), (512, 2048, 1, 1)).method == "gemm1x1"
    # the direct convolution where the padding is a large share of the taps
    # (5x5 on 7x7 maps: 31 %, which it skips), not where it is small (56x56:
    # 4 %); 3x3 stride-1 layers go to Winograd (test_winograd_kernel), and
    # without padding 7x7 maps to fused
    assert fastconv.plan_conv2d((8, 512, 7, 7), (512, 512, 5, 5), padding=2).method == "direct"
    assert fastconv.plan_conv2d((8, 512, 56, 56), (512, 512, 5, 5), padding=2).method != "direct"
    assert fastconv.plan_conv2d((8, 512, 7, 7), (512, 512, 3, 3)).method != "direct"
    # and on strided 3x3 layers (fused's strided gather is slower), not on
    # strided 1x1 ones (ResNet-50's 3a projection)
    assert fastconv.plan_conv2d((8, 128, 56, 56), (128, 128, 3, 3), stride=2,
                                padding=1).method == "direct"
    assert fastconv.plan_conv2d((8, 256, 56, 56), (512, 256, 1, 1), stride=2).method != "direct"
    # a first layer (one channel, 32 filters: a channel multiplier of 32) runs
    # the direct kernel's blocks of filters (Tuning.direct_block_rate), over
    # gathered taps for any kernel up to PANEL_MAX_TAPS (a 3x4 one too: 194 us
    # against stretch's 253; with 4 filters 53-59 us against 107), its
    # gradients GEMMs; a 12x12 kernel (144 taps) has no blocks
    mnist = (64, 1, 28, 28), (32, 1, 3, 3)
    assert fastconv.plan_conv2d(*mnist).method == "depthwise"
    for kind in ("input_grad", "weight_grad"):
        assert fastconv.plan_conv2d(*mnist, kind=kind).method != "depthwise"
    # its weight gradient, and LeNet's 5x5, run the direct lanes kernel on
    # AVX-512 in both dtypes, by its own cost (Tuning.direct_weight_grad_lanes_rate):
    # float64 0.23 and 0.21 ms against fused's 0.41 and 0.46 (Zen 5), which
    # the panel kernel's cost standing for it chose
    if _lowerings.fused_isa(_tuning.current().isa) == "avx512":
        for layer in (mnist, ((64, 1, 28, 28), (20, 1, 5, 5))):
            for dtype in ("float32", "float64"):
                plan = fastconv.plan_conv2d(*layer, dtype, kind="weight_grad")
                assert (plan.method, plan.blocking.lanes) == ("direct", True), plan
    assert fastconv.plan_conv2d((64, 1, 28, 28), (32, 1, 3, 4)).method == "depthwise"
    assert fastconv.plan_conv2d((64, 1, 28, 28), (4, 1, 3, 4)).method == "depthwise"
    assert fastconv.plan_conv2d((64, 1, 28, 28), (32, 1, 12, 12)).method != "depthwise"
    assert fastconv.plan_conv2d((8, 144, 56, 56), (144, 1, 3, 3), groups=144,
                                padding=1).method == "depthwise"
    # grouped layers with few channels per group run its multi-plane kernels
    # where they make blocks (ResNeXt's 32 groups of 4 on 56x56: forward 0.43x
    # and input gradient 0.40x PyTorch's time, where fused/stretch took
    # 1.22x)
    resnext = (8, 128, 56, 56), (128, 4, 3, 3)
    for kind in ("forward", "input_grad"):
        assert fastconv.plan_conv2d(*resnext, groups=32, padding=1,
                                    kind=kind).method == "depthwise"
    # ... but its weight gradient takes the direct lanes kernel on AVX-512
    # (4 filters a group fill its register tile: 1.06-1.28 ms against the
    # depthwise kernel's 1.38-1.51, fused's 6.6; float64 2.52 against 3.48,
    # Zen 5), else the depthwise kernel, a correlation per pair of planes
    # (3.1 ms against stretch's 7.65 and fused's 5.45); not where the
    # planes are small and many (8 channels per group on 28x28: 3.9 ms
    # against fused's 2.1), nor at a column stride (its rows split by
    # phase: 10.2 ms, fused 4.1)
    wg = fastconv.plan_conv2d(*resnext, groups=32, padding=1, kind="weight_grad")
    isa = _lowerings.fused_isa(_tuning.current().isa)
    if direct.weight_grad_lanes(128, 128, 3, 3, 32, 1, np.float32, isa):
        assert (wg.method, wg.blocking.lanes) == ("direct", True)
    else:
        assert wg.method == "depthwise"
    assert fastconv.plan_conv2d((8, 256, 28, 28), (256, 8, 3, 3), groups=32, padding=1,
                                kind="weight_grad").method != "depthwise"
    assert fastconv.plan_conv2d((8, 256, 56, 56), (256, 8, 3, 3), groups=32, padding=1,
                                stride=2, kind="weight_grad").method != "depthwise"
    # strided grouped layers and rows narrower than a vector: blocks of
    # filters over padded bands, forward (0.50-0.98x fused's time with 4 to
    # 16 channels per group), not the input gradient on 14x14 (1.38x)
    assert fastconv.plan_conv2d(*resnext, groups=32, padding=1, stride=2).method == "depthwise"
    assert fastconv.plan_conv2d((8, 256, 56, 56), (256, 8, 3, 3), groups=32, padding=1,
                                stride=2).method == "depthwise"
    resnext_conv4 = (8, 512, 14, 14), (512, 16, 3, 3)
    assert fastconv.plan_conv2d(*resnext_conv4, groups=32, padding=1).method == "depthwise"
    assert fastconv.plan_conv2d(*resnext_conv4, groups=32, padding=1,
                                kind="input_grad").method != "depthwise"
    # nor a first layer (groups = 1) over bands: the stem ran 1.47x fused's time
    assert fastconv.plan_conv2d((8, 3, 224, 224), (64, 3, 7, 7), stride=2,
                                padding=3).method != "depthwise"
    # a first layer's input gradient (32 filter planes into 3 channels) too
    assert fastconv.plan_conv2d((32, 3, 48, 48), (32, 3, 3, 3),
                                kind="input_grad").method != "depthwise"
    # a memory limit below its panels leaves the 1x1 layer to gemm1x1 (no workspace)
    assert fastconv.plan_conv2d((8, 64, 56, 56), (64, 64, 1, 1),
                                memory_limit="4KiB").method == "gemm1x1"
    with blas_rules():
        vgg = (16, 64, 224, 224), (64, 64, 3, 3)
        assert fastconv.plan_conv2d(*vgg, padding=1, memory_limit="64MiB").method == "mapped"
        # fits 1 GiB, but a 110 MiB matrix per image spills the cache: tiles
        assert fastconv.plan_conv2d(*vgg, padding=1, memory_limit="1GiB").method == "mapped"
        # ResNet-50 conv4: a 1.7 MiB matrix per image stays in cache: stretch
        conv4 = fastconv.plan_conv2d((8, 256, 14, 14), (256, 256, 3, 3), padding=1, num_threads=2)
        assert conv4.method == "stretch" and conv4.blocking.images == 2  # 392-column GEMMs
        # ResNet-50 conv5 (7x7): 4 images per GEMM, one batch per thread
        conv5 = fastconv.plan_conv2d((8, 512, 7, 7), (512, 512, 3, 3), padding=1, num_threads=2)
        assert conv5.method == "stretch" and conv5.blocking.images == 4 and conv5.kernel_threads == 2
        assert conv5.lowering.gemm_shape(conv5) == (512, 196, 4608)
        # one image, two threads: tiles for both threads rather than threaded BLAS
        one = fastconv.plan_conv2d((1, 64, 28, 28), (64, 64, 3, 3), padding=1, num_threads=2)
        assert one.method == "mapped" and one.kernel_threads == 2 and one.blas_threads == 1
        assert fastconv.plan_conv2d((8, 256, 14, 14), (256, 256, 3, 3), padding=1,
                                    memory_limit="3MiB").method == "mapped"
        assert fastconv.plan_conv2d((8, 256, 56, 56), (64, 256, 1, 1)).method == "gemm1x1"
        assert fastconv.plan_conv2d((8, 256, 56, 56), (64, 256, 1, 1), method="mapped").method == "mapped"
        assert fastconv.plan_conv2d((8, 256, 56, 56), (512, 256, 1, 1), stride=2).method == "stretch"


def test_plan_explains_itself():
    with blas_rules():
        plan = fastconv.plan_conv2d((16, 64, 224, 224), (64, 64, 3, 3), padding=1, memory_limit="64MiB")
        text = repr(plan)
        assert "mapped" in text and "64.0 MiB" in text and "> limit" in text
        assert "GFLOP" in text and "columns x 1 image" in text
        assert plan.output_shape == (16, 64, 224, 224)
        assert plan.flops == 2 * 16 * 64 * 224 * 224 * 64 * 9
        with pytest.raises(dataclasses.FrozenInstanceError):
            plan.method = "stretch"  # immutable


@requires_openmp
def test_few_images_use_threaded_blas():
    with blas_rules():
        plan = fastconv.plan_conv2d((1, 64, 56, 56), (64, 64, 3, 3), padding=1, method="stretch",
                                    num_threads=2)
        assert plan.kernel_threads == 1 and plan.blas_threads == 2
        plan = fastconv.plan_conv2d((1, 64, 56, 56), (64, 64, 3, 3), padding=1, method="mapped",
                                    num_threads=2)
        assert plan.kernel_threads == 2 and plan.blas_threads == 1  # tiles spread over threads
        plan = fastconv.plan_conv2d((4, 64, 56, 56), (64, 64, 3, 3), padding=1, method="stretch",
                                    num_threads=2)
        assert plan.kernel_threads == 2 and plan.blas_threads == 1


@pytest.mark.parametrize("method", ["stretch", "mapped"])
def test_stretch_and_mapped_agree_on_a_real_layer(method):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 32, 28, 28)).astype(np.float32)
    w = rng.standard_normal((48, 32, 3, 3)).astype(np.float32)
    out = fastconv.conv2d(x, w, padding=1, method=method, memory_limit="300KiB" if method == "mapped" else None)
    assert_close(out, conv2d_reference(x, w, padding=((1, 1), (1, 1))), np.float32)


@requires_openmp
def test_tight_limit_uses_one_buffer_and_threaded_blas():
    with blas_rules():
        shape, wshape = (4, 64, 56, 56), (64, 64, 3, 3)
        per_col = 64 * 9 * 4
        table = _lowerings.buffer_bytes({"table": (_lowerings.row_table_shape(
            fastconv.plan_conv2d(shape, wshape, padding=1).geometry), np.intp)})
        # room for one 48-column tile, not two of the 32-column floor
        limit = table + 48 * per_col
        plan = fastconv.plan_conv2d(shape, wshape, padding=1, memory_limit=limit, num_threads=2)
        assert plan.method == "mapped" and plan.kernel_threads == 1 and plan.blas_threads == 2
        assert plan.workspace_bytes <= limit and plan.blocking.tile_cols <= 48
        # below mapped's 32-column floor only fused fits: it reads the weights
        # in place and its panels can be 16 rows deep
        tighter = fastconv.plan_conv2d(shape, wshape, padding=1, memory_limit=table + 16 * per_col)
        assert tighter.method == "fused" and tighter.blocking.weights_in_place, tighter
        assert tighter.workspace_bytes <= table + 16 * per_col
        with pytest.raises(fastconv.WorkspaceLimitError, match="needs"):
            fastconv.plan_conv2d(shape, wshape, padding=1, memory_limit=table + 1000)


@pytest.mark.parametrize("kind", ["forward", "input_grad"])
def test_direct_packs_weights_per_item_under_a_tight_limit(kind):
    """A shared panel of packed weights (direct.SHARED_PANEL_MAX_BYTES) is
    held whole; a limit below it makes each work item pack a channel block
    at a time instead (then one thread), and the result is the same."""
    shape, wshape, conv = (2, 48, 12, 12), (64, 48, 5, 5), dict(padding=2)
    shared = fastconv.plan_conv2d(shape, wshape, method="direct", num_threads=2, kind=kind,
                                  **conv)
    assert shared.blocking.pack_in_items is None   # 0.3 MB: shared at the default limit
    limit = shared.workspace_bytes - 1
    plan = fastconv.plan_conv2d(shape, wshape, method="direct", num_threads=2, kind=kind,
                                memory_limit=limit, **conv)
    assert plan.blocking.pack_in_items and plan.workspace_bytes <= limit, plan
    assert "packed by each work item" in plan.reason
    # below two threads' item workspaces: one thread
    one = fastconv.plan_conv2d(shape, wshape, method="direct", num_threads=2, kind=kind,
                               memory_limit=plan.workspace_bytes - 1, **conv)
    assert one.kernel_threads == 1 and one.blocking.pack_in_items, one
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    y = conv2d_reference(x, w, stride=(1, 1), padding=((2, 2), (2, 2)), dilation=(1, 1))
    # shared, then per item, then shared again, through one kept workspace:
    # the pixel tables (a tap's panel rows differ) are not reused across them
    with fastconv.config_context(keep_workspace=True):
        for p in (shared, plan, one, shared):
            if kind == "forward":
                assert_close(p.execute(x, w), y, np.float32)
            else:
                g = rng.standard_normal(y.shape).astype(np.float32)
                expected = fastconv.conv2d_input_grad(shape, w, g, method="stretch", **conv)
                assert_close(p.execute(w, g), expected, np.float32)


def test_plans_are_cached_and_tuning_changes_are_seen():
    args = (3, 16, 30, 30), (8, 16, 3, 3)
    first = fastconv.plan_conv2d(*args, padding=1, num_threads=2)
    assert fastconv.plan_conv2d(*args, padding=1, num_threads=2) is first
    assert fastconv.plan_conv2d(*args, padding=1, num_threads=1) is not first
    with _tuning.tuned(tile_target_bytes=1024):
        assert fastconv.plan_conv2d(*args, padding=1, num_threads=2) is not first


def test_measure_picks_a_candidate_that_fits_and_is_remembered():
    args = (8, 64, 7, 7), (64, 64, 3, 3)
    plan = fastconv.plan_conv2d(*args, padding=1, measure=True, memory_limit="8MiB")
    assert plan.reason.startswith("measured") and plan.workspace_bytes <= 8 * 2**20
    assert fastconv.plan_conv2d(*args, padding=1, measure=True, memory_limit="8MiB") is plan
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(args[0]), rng.standard_normal(args[1])
    p64 = fastconv.plan_conv2d(*args, "float64", padding=1, measure=True)
    assert_close(p64.execute(x, w), conv2d_reference(x, w, padding=((1, 1), (1, 1))), np.float64)


def test_fused_reads_a_pointwise_x_in_place_where_planned():
    def x_in_place(x_shape, w_shape, dtype="float32", kind="forward", **conv):
        plan = fastconv.plan_conv2d(x_shape, w_shape, dtype, method="fused", kind=kind, **conv)
        assert ("x in place" in repr(plan)) == plan.blocking.x_in_place
        return plan.blocking.x_in_place

    # every ISA: these layers' panels are within the byte budget
    # ResNet-50 2a 1x1, both dtypes, and its input gradient (a pointwise adjoint)
    assert x_in_place((8, 64, 56, 56), (64, 64, 1, 1))
    assert x_in_place((8, 64, 56, 56), (64, 64, 1, 1), "float64")
    assert x_in_place((8, 64, 56, 56), (64, 64, 1, 1), kind="input_grad")
    # not the weight gradient, nor a spatial kernel, a stride or padding
    assert not x_in_place((8, 64, 56, 56), (64, 64, 1, 1), kind="weight_grad")
    assert not x_in_place((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert not x_in_place((8, 64, 56, 56), (64, 64, 1, 1), stride=2)
    assert not x_in_place((8, 64, 56, 56), (64, 64, 1, 1), padding=1)
    # channel planes a multiple of 4 KiB apart (32 x 32 floats): cache sets alias
    assert not x_in_place((8, 64, 32, 32), (64, 64, 1, 1))
    assert x_in_place((8, 64, 31, 33), (64, 64, 1, 1))
    # panels past the byte budget
    with _tuning.tuned(fused_x_in_place_panel_bytes=0):
        assert not x_in_place((8, 64, 56, 56), (64, 64, 1, 1))


def test_buffer_specs_are_the_lowerings_for_each_thread_count():
    # worked out once per plan and thread count; a plan made from another
    # (dataclasses.replace, another blocking) works out its own
    plan = fastconv.plan_conv2d((2, 8, 20, 20), (16, 8, 3, 3), "float32", padding=1,
                                method="mapped", num_threads=2)
    for threads in (1, 2, 1):
        assert plan.buffer_specs(threads) == plan.lowering.buffers(
            plan.geometry, plan.dtype, plan.blocking, threads)
    other = dataclasses.replace(plan, blocking=dataclasses.replace(plan.blocking, tile_cols=64))
    assert other.buffer_specs(2) == other.lowering.buffers(other.geometry, other.dtype,
                                                           other.blocking, 2)
    assert other.buffer_specs(2) != plan.buffer_specs(2)


def test_blas_rate_from_the_kernels_vector_width(monkeypatch):
    """Tuning.blas_rate None reads the BLAS's kernel family against the own
    kernels' ISA: half where OpenBLAS runs AVX2 kernels beside AVX-512 ones,
    1 where they match or either is unknown."""
    from fastconv import _runtime

    class Lib:
        def __init__(self, architecture):
            self.architecture = architecture

    class Controller:
        def __init__(self, *names):
            self.lib_controllers = [Lib(n) for n in names]

    def rate(isa, *names):
        monkeypatch.setattr(_runtime, "_controller", Controller(*names))
        return _lowerings.blas_rate(dataclasses.replace(_tuning.current(), blas_rate=None,
                                                        isa=isa))

    from fastconv._kernels import fused
    isas = fused.supported_isas()
    if "avx512" in isas:
        assert rate("avx512", "Haswell") == 0.5
        assert rate("avx512", "SkylakeX") == 1.0
        assert rate("avx512", "SkylakeX", "Zen") == 0.5   # the narrowest loaded
        assert rate("avx512", "Neoverse", "Haswell") == 1.0   # unknown: not compared
        assert rate("avx512", None) == 1.0
    if "avx2" in isas:
        assert rate("avx2", "Haswell") == 1.0
        assert rate("avx2", "SkylakeX") == 1.0   # never above 1
        assert rate("avx2", "Nehalem") == 0.5
    assert rate("generic", "Haswell") == 1.0
    monkeypatch.undo()   # the real controller again
    # a set rate is taken as it is
    assert _lowerings.blas_rate(dataclasses.replace(_tuning.current(), blas_rate=0.7)) == 0.7


@requires_openmp
def test_choices_follow_the_blas_rate():
    """ResNet-50's 3a projection (1x1/2): stretch at the full rate, fused at
    half, as measured on Zen 5; the 1x1 weight gradients likewise (gemm1x1
    rated 0.9 of a gathering lowering there), but on threaded BLAS (fewer
    images than threads, not measured) gemm1x1 keeps its preference."""
    proj = ((8, 256, 56, 56), (512, 256, 1, 1))
    with _tuning.tuned(blas_rate=1.0):
        assert fastconv.plan_conv2d(*proj, stride=2, num_threads=2).method == "stretch"
    with _tuning.tuned(blas_rate=0.5):
        assert fastconv.plan_conv2d(*proj, stride=2, num_threads=2).method == "fused"
    pointwise = ((8, 64, 56, 56), (64, 64, 1, 1))
    with _tuning.tuned(blas_rate=1.0):
        assert fastconv.plan_conv2d(*pointwise, kind="weight_grad", num_threads=2).method \
            == "gemm1x1"
        for threads in (2, 3):
            one = fastconv.plan_conv2d((1, 64, 56, 56), (256, 64, 1, 1), kind="weight_grad",
                                       num_threads=threads)
            assert (one.method, one.blas_threads) == ("gemm1x1", threads), one
    with _tuning.tuned(blas_rate=0.5):
        assert fastconv.plan_conv2d(*pointwise, kind="weight_grad", num_threads=2).method \
            == "fused"
    # a 1x1 layer of few columns (two 7x7 images, 98): gemm1x1 at the full
    # rate, fused at half (forward 0.48-0.54x gemm1x1's time on Zen 5, input
    # gradient 0.56-0.66x; Tuning.fused_pointwise_min_cols_narrow_blas)
    last_stage = ((2, 2048, 7, 7), (512, 2048, 1, 1))
    for rate, method in ((1.0, "gemm1x1"), (0.5, "fused")):
        with _tuning.tuned(blas_rate=rate):
            assert fastconv.plan_conv2d(*last_stage, num_threads=2).method == method
            assert fastconv.plan_conv2d((2, 512, 7, 7), (2048, 512, 1, 1), kind="input_grad",
                                        num_threads=2).method == method

"""out= on every function that returns an array, and the kept workspace.

out= is NumPy's ufunc convention: the result is written into `out`, which
is returned; any strides; refused before anything is written when it cannot
take the result; an out that overlaps an input still gets the right answer.
"""
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _tuning
from fastconv._workspace import kept_bytes
from reference import (assert_close, conv2d_input_grad_reference, conv2d_reference,
                       conv2d_weight_grad_reference)

RNG = np.random.default_rng(7)
X = RNG.standard_normal((3, 4, 9, 8))
W = RNG.standard_normal((6, 4, 3, 3))
B = RNG.standard_normal(6)
G = RNG.standard_normal((3, 6, 9, 8))           # grad_output for padding 1
CONV = dict(padding=1)

# name -> (function of out, the allocating call's result)
CALLS = {
    "conv2d": lambda out=None: fastconv.conv2d(X, W, B, **CONV, out=out),
    "conv1d": lambda out=None: fastconv.conv1d(X[:, :, 0], W[:, :, 0], B, **CONV, out=out),
    "conv2d_input_grad": lambda out=None: fastconv.conv2d_input_grad(X.shape, W, G, **CONV,
                                                                     out=out),
    "conv2d_weight_grad": lambda out=None: fastconv.conv2d_weight_grad(X, W.shape, G, **CONV,
                                                                       out=out),
    "conv1d_input_grad": lambda out=None: fastconv.conv1d_input_grad(
        X[:, :, 0].shape, W[:, :, 0], G[:, :, 0], **CONV, out=out),
    "conv1d_weight_grad": lambda out=None: fastconv.conv1d_weight_grad(
        X[:, :, 0], W[:, :, 0].shape, G[:, :, 0], **CONV, out=out),
    "conv_transpose2d": lambda out=None: fastconv.conv_transpose2d(
        G, W, X[0, 0, 0, :4], **CONV, out=out),
    "conv_transpose1d": lambda out=None: fastconv.conv_transpose1d(
        G[:, :, 0], W[:, :, 0], None, **CONV, out=out),
    "im2col": lambda out=None: fastconv.im2col(X, 3, **CONV, out=out),
    "col2im": lambda out=None: fastconv.col2im(fastconv.im2col(X, 3, **CONV), X.shape, 3,
                                               **CONV, out=out),
    "plan.execute": lambda out=None: fastconv.plan_conv2d(X.shape, W.shape, "float64",
                                                          **CONV).execute(X, W, B, out=out),
}


@pytest.mark.parametrize("name", CALLS)
def test_out_contiguous_and_strided_views(name):
    call = CALLS[name]
    expected = call()
    out = np.empty_like(expected)
    assert call(out) is out
    np.testing.assert_array_equal(out, expected)
    # a strided view of a larger array: written in place, nothing outside it
    host = np.full(tuple(2 * n for n in expected.shape), 7.0)
    view = host[(slice(None, None, 2),) * expected.ndim]
    assert call(view) is view
    np.testing.assert_array_equal(view, expected)
    host[(slice(None, None, 2),) * expected.ndim] = 7.0
    assert (host == 7.0).all()
    # a reversed view and another safe dtype
    reversed_view = np.empty_like(expected)[..., ::-1]
    np.testing.assert_array_equal(call(reversed_view), expected)
    wider = np.empty(expected.shape, np.longdouble)
    np.testing.assert_array_equal(call(wider), expected)


@pytest.mark.parametrize("name", CALLS)
def test_bad_out_is_refused_before_anything_is_written(name):
    call = CALLS[name]
    shape = call().shape
    wrong_shape = np.full(shape[:-1] + (shape[-1] + 1,), 5.0)
    with pytest.raises(ValueError, match="out has shape"):
        call(wrong_shape)
    narrow = np.full(shape, 5, np.float32)   # float64 result: not a safe cast
    with pytest.raises(TypeError, match="cast"):
        call(narrow)
    read_only = np.full(shape, 5.0)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        call(read_only)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        call([[0.0]])
    assert (wrong_shape == 5).all() and (narrow == 5).all() and (read_only == 5).all()


def test_out_overlapping_an_input_gets_the_right_answer():
    x = RNG.standard_normal((2, 4, 6, 6))
    w = RNG.standard_normal((4, 4, 3, 3))
    expected = fastconv.conv2d(x, w, padding=1)
    assert fastconv.conv2d(x, w, padding=1, out=x) is x   # in place
    np.testing.assert_array_equal(x, expected)
    # the output overlapping the bias of a transposed convolution
    g = RNG.standard_normal((2, 4, 6, 6))
    bias_host = np.zeros((2, 4, 6, 6))
    bias_host[0, :, 0, 0] = [1.0, 2.0, 3.0, 4.0]
    expected = fastconv.conv_transpose2d(g, w, bias_host[0, :, 0, 0].copy(), padding=1)
    fastconv.conv_transpose2d(g, w, bias_host[0, :, 0, 0], padding=1, out=bias_host)
    np.testing.assert_array_equal(bias_host, expected)


def test_float16_result_into_float16_and_float32_out():
    x, w = X.astype(np.float16), W.astype(np.float16)
    expected = fastconv.conv2d(x, w, padding=1)
    assert expected.dtype == np.float16
    out = np.empty(expected.shape, np.float16)
    np.testing.assert_array_equal(fastconv.conv2d(x, w, padding=1, out=out), expected)
    # a float32 out receives the float32 computation, not its float16 rounding
    out = np.empty(expected.shape, np.float32)
    np.testing.assert_array_equal(fastconv.conv2d(x, w, padding=1, out=out),
                                  fastconv.conv2d(x.astype(np.float32), w.astype(np.float32),
                                                  padding=1))


# --------------------------------------------------------------------------
# the kept workspace

def test_kept_workspace_is_reused_across_shapes_and_released():
    fastconv.release_workspace()
    x = RNG.standard_normal((2, 16, 30, 30))
    w = RNG.standard_normal((16, 16, 3, 3))
    fastconv.conv2d(x, w, padding=1, method="mapped", num_threads=1)
    first = kept_bytes()
    assert first > 0
    # a smaller call fits in what is kept: nothing new is allocated
    fastconv.conv2d(x[:1, :, :20], w, padding=1, method="mapped", num_threads=1)
    assert kept_bytes() <= first
    # a limit smaller than what is kept: exact-size buffers within it
    plan = fastconv.plan_conv2d(x.shape, w.shape, "float64", padding=1, method="mapped",
                                num_threads=1, memory_limit="64KiB")
    y = fastconv.conv2d(x, w, padding=1, method="mapped", num_threads=1, memory_limit="64KiB")
    assert kept_bytes() == plan.workspace_bytes <= 64 * 1024 < first
    assert fastconv.release_workspace() == plan.workspace_bytes
    assert kept_bytes() == 0
    np.testing.assert_allclose(y, fastconv.conv2d(x, w, padding=1), rtol=1e-12, atol=1e-12)
    fastconv.release_workspace()
    with fastconv.config_context(keep_workspace=False):
        fastconv.conv2d(x, w, padding=1)
    assert kept_bytes() == 0


def test_repeated_call_reuses_its_views_with_accumulators_cleared():
    # a repeated call gets the views it was lent last time (not rebuilt);
    # the weight gradient's per-thread accumulators must still start at zero
    fastconv.release_workspace()
    x = RNG.standard_normal((3, 6, 12, 12))
    g = RNG.standard_normal((3, 5, 12, 12))
    plan = fastconv.plan_conv2d(x.shape, (5, 6, 3, 3), "float64", padding=1, method="mapped",
                                kind="weight_grad", num_threads=2)
    expected = conv2d_weight_grad_reference(x, (5, 6, 3, 3), g, padding=((1, 1), (1, 1)))
    for _ in range(3):
        assert_close(plan.execute(x, g), expected, np.float64)
    assert kept_bytes() > 0
    fastconv.release_workspace()
    assert kept_bytes() == 0
    assert_close(plan.execute(x, g), expected, np.float64)   # after a release: fresh buffers


def test_kept_tables_are_reused_only_for_the_call_they_were_built_for():
    # the direct lowering keeps its pixel tables (offsets into x) with the
    # workspace; a call of another layout of x, another shape, the input
    # gradient or a stride-2 input gradient (whose phases carve their
    # tables out of one buffer) must not read tables built for another
    fastconv.release_workspace()
    rng = np.random.default_rng(3)
    w = rng.standard_normal((9, 4, 3, 3))
    base = rng.standard_normal((2, 4, 11, 10))
    layouts = [base, base[..., ::-1].copy()[..., ::-1], np.asfortranarray(base),
               base.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2), base[:1], base]

    def make_layout(a, like):
        # a laid out in memory as `like` is (its axes' order and directions)
        order = np.argsort([-abs(s) for s in like.strides])
        out = np.ascontiguousarray(a.transpose(order)).transpose(np.argsort(order))
        flips = tuple(slice(None, None, -1 if s < 0 else 1) for s in like.strides)
        return np.ascontiguousarray(out[flips])[flips] if any(s < 0 for s in like.strides) else out
    for pad, stride, grad_method in ((1, 1, "direct"), (2, 2, "phased")):
        conv = dict(padding=pad, stride=stride, num_threads=2)
        ref = dict(padding=((pad, pad), (pad, pad)), stride=(stride, stride))
        # one kind after another: each call follows one whose tables it could reuse
        for x in layouts * 2:
            assert_close(fastconv.conv2d(x, w, method="direct", **conv),
                         conv2d_reference(x, w, **ref), np.float64)
        # (the phases' kernels made direct: their tables share one buffer)
        with _tuning.tuned(direct_conv_rate=100.0):
            plan = fastconv.plan_conv2d(base.shape, w.shape, np.float64, kind="input_grad",
                                        method=grad_method, **conv)
        assert "direct" in repr(plan)
        for x in layouts * 2:
            if x.shape == base.shape:
                y = conv2d_reference(x, w, **ref)
                g = make_layout(rng.standard_normal(y.shape), x)
                assert_close(plan.execute(w, g),
                             conv2d_input_grad_reference(x.shape, w, g, **ref), np.float64)


def test_buffers_say_what_kept_buffers_hold():
    from fastconv._workspace import lend_buffers
    fastconv.release_workspace()
    specs = {"tables": ((100,), np.intp), "workspace": ((2, 50), np.float64)}
    with lend_buffers(specs, 2**20, keep=True) as bufs:
        assert not bufs.holds("tables", "key")
        bufs.remember("tables", "key")
    with lend_buffers(specs, 2**20, keep=True) as bufs:
        assert bufs.holds("tables", "key") and not bufs.holds("tables", "other")
    # a bigger buffer is a new one: it holds nothing
    with lend_buffers({**specs, "tables": ((1000,), np.intp)}, 2**20, keep=True) as bufs:
        assert not bufs.holds("tables", "key")
        bufs.remember("tables", "key")
    fastconv.release_workspace()
    with lend_buffers(specs, 2**20, keep=True) as bufs:
        assert not bufs.holds("tables", "key")
        bufs.remember("tables", "key")
    # a limit that drops what is kept drops what it held
    with lend_buffers(specs, 900, keep=True) as bufs:
        assert not bufs.holds("tables", "key")
    # fresh buffers (keep_workspace=False) never hold anything
    with lend_buffers(specs, 2**20, keep=False) as bufs:
        bufs.remember("tables", "key")
        assert not bufs.holds("tables", "key")
    fastconv.release_workspace()


def test_many_python_threads_at_once_keep_their_own_workspace():
    x = RNG.standard_normal((4, 8, 24, 24))
    ws = [RNG.standard_normal((8, 8, 3, 3)) for _ in range(6)]
    expected = [fastconv.conv2d(x, w, padding=1) for w in ws]
    errors = []

    def worker(i):
        try:
            for _ in range(20):
                np.testing.assert_array_equal(fastconv.conv2d(x, ws[i], padding=1), expected[i])
        except AssertionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    fastconv.release_workspace()


def test_repeated_calls_with_out_fault_in_no_pages(tmp_path):
    # a fresh process, the allocator of a long-running program, then a loop
    # of calls into the same out: after the first calls, no page is faulted in
    script = textwrap.dedent('''
        import resource, numpy as np, fastconv
        block = np.ones(64 * 2**20, np.uint8); del block
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 16, 256, 256)).astype(np.float32)
        w = rng.standard_normal((64, 16, 3, 3)).astype(np.float32)
        out = np.empty((2, 64, 256, 256), np.float32)      # 32 MiB: above glibc's mmap threshold
        for method in ("mapped", "stretch"):
            for _ in range(3):
                fastconv.conv2d(x, w, padding=1, method=method, out=out)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(30):
                fastconv.conv2d(x, w, padding=1, method=method, out=out)
            print(method, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    ''')
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    faults = dict(line.split() for line in result.stdout.split("\n") if line)
    # without out= and the kept workspace each call faults in its 32 MiB
    # output and its buffers afresh: thousands of pages
    assert int(faults["mapped"]) < 30 and int(faults["stretch"]) < 30, faults

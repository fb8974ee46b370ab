"""The memory limit holds in a real process: peak RSS, measured in a fresh
interpreter, grows by no more than the output plus the limit plus a small
fixed slack, on a layer whose whole-batch im2col matrix needs 1.7 GiB."""
import json
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastconv

resource = pytest.importorskip("resource")  # POSIX only

SLACK = 16 * 2**20  # interpreter, thread stacks, allocator rounding

CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import fastconv

    def peak():  # bytes; ru_maxrss is KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    limit = sys.argv[1]
    layer = dict(padding=1, memory_limit=limit)
    w = np.random.default_rng(0).standard_normal((64, 64, 3, 3)).astype(np.float32)
    # warm-up on a smaller batch of the same layer: loads the kernels, starts
    # the OpenMP team and lets BLAS allocate its own per-thread buffers
    fastconv.conv2d(np.ones((2, 64, 224, 224), np.float32), w, **layer)
    x = np.empty((16, 64, 224, 224), np.float32)
    x[...] = 1.0  # touched: resident before the baseline
    plan = fastconv.plan_conv2d(x.shape, w.shape, "float32", **layer)
    before = peak()
    out = plan.execute(x, w)
    after = peak()
    print(json.dumps(dict(growth=after - before, out=out.nbytes, method=plan.method,
                          workspace=plan.workspace_bytes, limit=plan.memory_limit,
                          ok=bool(np.allclose(out[:, :, 1:-1, 1:-1],
                                              w.sum(axis=(1, 2, 3))[:, None, None],
                                              rtol=1e-4, atol=1e-3)))))
""")


def _run_child(limit, tmp_path):
    # run from an empty folder: from the repository root, `import fastconv`
    # would find the uncompiled sources before the installed package
    proc = subprocess.run([sys.executable, "-c", CHILD, limit], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_limit_holds_in_a_fresh_process(tmp_path):
    plan = fastconv.plan_conv2d((16, 64, 224, 224), (64, 64, 3, 3), "float32", padding=1)
    whole_batch_columns = 16 * plan.geometry.rows * plan.geometry.cols * 4
    assert whole_batch_columns > 2**30  # the layer is worth the test
    result = _run_child("64MiB", tmp_path)
    # a lowering that never holds a whole stretched matrix (the tiles or
    # panels of mapped or fused, Winograd's per-thread tiles)
    assert result["ok"] and result["method"] in ("mapped", "fused", "winograd"), result
    assert result["workspace"] <= result["limit"] == 64 * 2**20
    assert result["growth"] <= result["out"] + result["limit"] + SLACK, result
    # the plan's own bound holds too, not only the limit
    assert result["growth"] <= result["out"] + result["workspace"] + SLACK, result
    # and far below what a whole-batch im2col would hold on top of the output
    assert result["growth"] - result["out"] < whole_batch_columns / 10, result


def test_workspace_is_released_when_not_kept_and_kept_within_the_limit():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 40, 40))
    w = rng.standard_normal((8, 8, 3, 3))
    fastconv.conv2d(x, w, method="mapped")  # warm-up: caches and imports
    fastconv.conv2d(x, w, method="mapped", memory_limit="100KiB")  # its plan, cached
    with pytest.raises(ValueError):  # and this one's
        fastconv.conv2d(x, w, np.ones(3), method="stretch")
    fastconv.release_workspace()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with fastconv.config_context(keep_workspace=False):
            out = fastconv.conv2d(x, w, method="mapped", memory_limit="100KiB")
        assert tracemalloc.get_traced_memory()[0] - base <= out.nbytes + 4096
        del out
        with pytest.raises(ValueError):
            fastconv.conv2d(x, w, np.ones(3), method="stretch")
        assert tracemalloc.get_traced_memory()[0] - base <= 4096
        # kept (the default): what stays is this call's workspace, within its limit
        out = fastconv.conv2d(x, w, method="mapped", memory_limit="100KiB")
        plan = fastconv.plan_conv2d(x.shape, w.shape, x.dtype, method="mapped",
                                    memory_limit="100KiB")
        from fastconv._workspace import kept_bytes
        assert kept_bytes() == plan.workspace_bytes
        # (and no more than that is held, but bookkeeping objects)
        assert tracemalloc.get_traced_memory()[0] - base <= out.nbytes + kept_bytes() + 16384
        assert fastconv.release_workspace() == plan.workspace_bytes and kept_bytes() == 0
        assert tracemalloc.get_traced_memory()[0] - base <= out.nbytes + 16384
    finally:
        tracemalloc.stop()

"""Configuration: parsing, per-call overrides, contexts, thread-locality, environment."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastconv
from fastconv._kernels.openmp_info import openmp_enabled

# thread-count and lowering rules below assume OpenMP threads over the batch
requires_openmp = pytest.mark.skipif(not openmp_enabled(), reason="built without OpenMP")
from fastconv._config import parse_bytes


@pytest.mark.parametrize("text, expected", [
    ("512MB", 512 * 10**6), ("1.5GiB", int(1.5 * 2**30)), ("64MiB", 64 * 2**20),
    ("512k", 512_000), ("2 KiB", 2048), ("1e9", 10**9), ("100", 100), ("7b", 7),
    (" 3 gb ", 3 * 10**9), (4096, 4096), (np.int64(10), 10), (2.5e6, 2_500_000), (0, 0),
])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "1.2.3GB", "-5MB", "5 parsecs", "nan", "1e400", "inf"])
def test_parse_bytes_rejects_nonsense(text):
    with pytest.raises(ValueError, match="memory_limit"):
        parse_bytes(text)


def test_context_nests_and_restores():
    before = fastconv.get_config()
    with fastconv.config_context(memory_limit="64MiB"):
        assert fastconv.get_config()["memory_limit"] == 64 * 2**20
        with fastconv.config_context(memory_limit=1000, num_threads=1):
            assert fastconv.get_config() == {"memory_limit": 1000, "num_threads": 1,
                                             "keep_workspace": before["keep_workspace"]}
        assert fastconv.get_config()["memory_limit"] == 64 * 2**20
        assert fastconv.get_config()["num_threads"] == before["num_threads"]
    assert fastconv.get_config() == before


def test_context_restores_on_error():
    before = fastconv.get_config()
    with pytest.raises(RuntimeError):
        with fastconv.config_context(memory_limit="1MiB"):
            raise RuntimeError
    assert fastconv.get_config() == before


def test_config_reaches_the_planner():
    shape, wshape = (4, 64, 56, 56), (64, 64, 3, 3)
    from cases import blas_rules
    with fastconv.config_context(memory_limit="4MiB", num_threads=1), blas_rules():
        plan = fastconv.plan_conv2d(shape, wshape, padding=1)
        assert plan.method == "mapped" and plan.workspace_bytes <= 4 * 2**20
        assert plan.num_threads == 1
        # an explicit argument wins over the configuration
        assert fastconv.plan_conv2d(shape, wshape, padding=1, memory_limit="1GiB",
                                    method="stretch").memory_limit == 2**30


def test_set_config_is_process_wide_and_config_context_thread_local():
    # set_config before a thread pool starts applies inside it (and in Dask's
    # threaded scheduler); a config_context applies to its own thread only
    from concurrent.futures import ThreadPoolExecutor
    before = fastconv.get_config()
    try:
        fastconv.set_config(memory_limit="1KiB")
        with ThreadPoolExecutor(2) as pool:
            assert pool.submit(lambda: fastconv.get_config()["memory_limit"]).result() == 1024
            # (20 channels: more than the depthwise kernel, which needs no
            # workspace, takes in a group)
            with pytest.raises(fastconv.WorkspaceLimitError):
                pool.submit(fastconv.conv2d, np.ones((1, 20, 30, 30)),
                            np.ones((8, 20, 3, 3))).result()
    finally:
        fastconv.set_config(memory_limit=before["memory_limit"])
    seen = {}

    def worker(name, limit):
        with fastconv.config_context(memory_limit=limit):
            barrier.wait()
            seen[name] = fastconv.get_config()["memory_limit"]
            barrier.wait()

    barrier = threading.Barrier(3)
    threads = [threading.Thread(target=worker, args=(n, l)) for n, l in (("a", "1MiB"), ("b", "2MiB"))]
    for t in threads:
        t.start()
    barrier.wait()  # both contexts are open now
    seen["main"] = fastconv.get_config()["memory_limit"]
    barrier.wait()
    for t in threads:
        t.join()
    assert seen == {"a": 2**20, "b": 2 * 2**20, "main": before["memory_limit"]}


def test_keep_workspace_is_a_setting():
    with fastconv.config_context(keep_workspace=False):
        assert fastconv.get_config()["keep_workspace"] is False
    with pytest.raises(TypeError, match="keep_workspace"):
        fastconv.set_config(keep_workspace="yes")


def test_set_config_validates():
    with pytest.raises(ValueError, match="memory_limit"):
        fastconv.set_config(memory_limit="much")
    with pytest.raises(ValueError, match="num_threads"):
        fastconv.set_config(num_threads=0)


def _config_in_subprocess(env):
    code = "import fastconv, json; print(json.dumps(fastconv.get_config()))"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTCONV_", "OMP_"))}
    full_env.update(env)
    result = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                            text=True, cwd=os.path.dirname(__file__))
    return result


@requires_openmp
def test_environment_defaults():
    import json
    result = _config_in_subprocess({"FASTCONV_MEMORY_LIMIT": "300MiB", "FASTCONV_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"memory_limit": 300 * 2**20, "num_threads": 1,
                                         "keep_workspace": True}
    result = _config_in_subprocess({"OMP_NUM_THREADS": "1"})
    assert json.loads(result.stdout)["num_threads"] == 1
    result = _config_in_subprocess({})
    config = json.loads(result.stdout)
    assert 0 < config["memory_limit"] <= 2**30
    assert config["num_threads"] >= 1
    bad = _config_in_subprocess({"FASTCONV_MEMORY_LIMIT": "a lot"})
    assert bad.returncode != 0 and "FASTCONV_MEMORY_LIMIT" in bad.stderr


def test_show_config_says_which_isa_the_own_kernels_run(tmp_path):
    # FASTCONV_ISA forces the fused and direct kernels' instruction set; the
    # default is the best this CPU and build run (a fresh process: the
    # variable is read when a plan is made)
    import subprocess
    import sys
    from fastconv._kernels.fused import supported_isas
    code = ("import fastconv; fastconv.show_config(); from fastconv._lowerings import "
            "blas_rate; from fastconv._tuning import current; print('rate', blas_rate(current()))")
    for isa in [None, *supported_isas()]:
        env = {k: v for k, v in __import__("os").environ.items() if k != "FASTCONV_ISA"}
        if isa:
            env["FASTCONV_ISA"] = isa
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, cwd=tmp_path, timeout=120)
        line = [l for l in out.stdout.splitlines() if l.startswith("own kernels")]
        assert line, out.stdout + out.stderr
        assert line[0].startswith(f"own kernels (fused, direct, winograd): "
                                  f"{isa or supported_isas()[0]} ")
        # and the rate the planner gives the BLAS lowerings against them,
        # where it is not 1 (the portable kernels' width is not compared)
        rate = float(out.stdout.split("rate ")[-1])
        said = [l for l in out.stdout.splitlines() if l.startswith("BLAS lowerings planned at")]
        assert said == ([] if rate == 1 else [
            f"BLAS lowerings planned at {rate:g}x their GEMM rate: the BLAS runs narrower "
            f"vector kernels than the own {isa or supported_isas()[0]} ones"]), out.stdout
        assert isa != "generic" or rate == 1

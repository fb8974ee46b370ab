"""The report machinery on a tiny layers file (no speed is asserted)."""
import json
import platform
import pathlib
import subprocess
import sys

import pytest

from fastconv import _benchcases, report

TINY = {"layers": [
    {"name": "tiny_3x3", "N": 2, "C": 3, "H": 12, "W": 12, "K": 4, "R": 3, "S": 3, "stride": 1,
     "padding": 1, "dilation": 1, "groups": 1},
    {"name": "tiny_s2", "N": 2, "C": 4, "H": 10, "W": 10, "K": 6, "R": 3, "S": 3, "stride": 2,
     "padding": 1, "dilation": 1, "groups": 2},
]}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tiny_layers(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def _check_report(paths, expected_cases):
    data = json.loads(pathlib.Path(paths["json"]).read_text())
    results = data["results"]
    keys = {(r["layer"], r["dtype"], r["kind"], r["case"], r.get("limit")) for r in results}
    assert keys == expected_cases
    for r in results:
        if "skipped" in r or "error" in r:
            assert r.get("skipped") or r.get("error")
            continue
        assert len(r["times"]) >= 1 and r["min"] <= r["median"] <= r["max"]
        assert r["peak_growth"] >= 0 and r["output_bytes"] > 0 and "spread" in r
        if r["case"] in _benchcases.LOWERINGS or r.get("tradeoff"):
            assert r["workspace_bytes"] >= 0 and r["method"] and r["plan"].startswith("ConvPlan(")
    meta = data["meta"]
    assert meta["threads"] >= 1 and meta["versions"]["numpy"] and meta["threadpools"]
    assert any(p.get("user_api") == "blas" for p in meta["threadpools"])
    for plot in paths["plots"]:
        assert pathlib.Path(plot).read_bytes()[:8] == PNG
    markdown = pathlib.Path(paths["markdown"]).read_text()
    assert "## Summary" in markdown and all(layer["name"] in markdown for layer in data["layers"])
    assert {key[0] for key in expected_cases} == {layer["name"] for layer in data["layers"]}
    return data, markdown


def _expected(layers_path, dtypes, quick):
    layers = _benchcases.load_layers(layers_path)
    return {(c["layer"]["name"], c["dtype"], c["kind"], c["case"], c.get("limit"))
            for c in report.plan_cases(layers, dtypes, quick)}


def test_report_without_pytorch_leaves_it_out_and_says_so(tiny_layers, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    available = _benchcases.peer_available
    monkeypatch.setattr(_benchcases, "peer_available", lambda name, kind="forward": (
        "PyTorch is not installed" if name == "torch" else available(name, kind)))
    paths = report.run_report(tiny_layers, ["float32"], threads=2, out_dir=tmp_path / "out",
                              repeats=1, progress=False, min_seconds=0, passes=1, reruns=0)
    data, markdown = _check_report(paths, _expected(tiny_layers, ["float32"], False))
    torch_cases = [r for r in data["results"] if r["case"] == "torch"]
    assert torch_cases and all(r["skipped"] == "PyTorch is not installed" for r in torch_cases)
    assert "torch peer: PyTorch is not installed" in data["notes"]
    assert "PyTorch is not installed" in markdown
    summary = markdown.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert report.TORCH_HINT in summary and "download.pytorch.org/whl/cpu" in summary
    assert {p.name for p in paths["plots"]} == {"throughput.png", "memory.png", "tradeoff.png"}
    numpy_cases = [r for r in data["results"] if r["case"] == "numpy"]
    assert numpy_cases and all("times" in r for r in numpy_cases)
    forward = [row for row in data["summary"] if row["kind"] == "forward"][0]
    assert forward["auto_over_numpy"] > 0 and forward["auto_over_torch"] is None
    assert set(forward["gemm_fraction_layers"]) == {"tiny_3x3", "tiny_s2"}


def test_quick_report_with_every_installed_peer(tiny_layers, tmp_path):
    pytest.importorskip("matplotlib")
    paths = report.run_report(tiny_layers, None, threads=1, quick=True, out_dir=tmp_path / "q",
                              repeats=1, names=["tiny_3x3"], progress=False,
                              min_seconds=0, reruns=0)
    data, markdown = _check_report(paths, {key for key in _expected(tiny_layers, ["float32"], True)
                                    if key[0] == "tiny_3x3"})
    assert data["meta"]["quick"] and data["meta"]["dtypes"] == ["float32"]
    torch_ran = [r for r in data["results"] if r["case"] == "torch" and "times" in r]
    assert bool(torch_ran) == (_benchcases.peer_available("torch") is None)
    assert (report.TORCH_HINT in markdown) == (not torch_ran)
    scipy = [r for r in data["results"] if r["case"] == "scipy"]
    assert len(scipy) == 1 and "times" in scipy[0] and scipy[0]["check"]["max_relative_error"] < 1e-4
    tradeoff = [r for r in data["results"] if r.get("tradeoff")]
    assert tradeoff and all(r["over_baseline"] > 0 and len(r["baseline_runs"]) == len(r["runs"])
                            for r in tradeoff)
    # each timed process says what it got of the machine, one entry per run
    timed = [r for r in data["results"] if "runs" in r and not r.get("tradeoff")]
    assert timed and all(len(r["machine_shares"]) == len(r["runs"]) for r in timed)
    assert all(share["cpu_per_wall"] > 0 for r in timed for share in r["machine_shares"])
    assert all(len(share["probe_gflops"]) == 2 and min(share["probe_gflops"]) > 0
               for r in timed for share in r["machine_shares"])
    # GFLOP/s of the probe: no core runs 1 TFLOP/s of float32 (a count of the
    # channels twice over once gave 11852 on two threads here)
    assert 0 < data["meta"]["machine_speed"]["median_gflops"] < 1000 * data["meta"]["threads"]
    assert all(0 < r["machine_speed"] for r in timed)


@pytest.mark.parametrize("argv, message", [
    (["--layers", "missing.json"], "layers file 'missing.json' does not exist"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--names", "no_such_layer"], "layers ['no_such_layer'] are not in"),
])
def test_bad_arguments_give_clear_errors(argv, message, tiny_layers, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "--layers" not in argv:
        argv = argv + ["--layers", str(tiny_layers)]
    with pytest.raises(SystemExit) as exc:
        report.main(argv + ["--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.md").exists()


def test_bad_layers_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object with a 'layers' list"):
        _benchcases.load_layers(bad)
    bad.write_text(json.dumps({"layers": [{"name": "x", "N": 1}]}))
    with pytest.raises(ValueError, match="layer 0 lacks"):
        _benchcases.load_layers(bad)


def test_command_line_entry_points(tmp_path):
    """python -m fastconv report reaches the same parser (run from an empty folder)."""
    proc = subprocess.run([sys.executable, "-m", "fastconv", "report", "--layers", "nope.json"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_packaged_layers_are_a_valid_default():
    layers = _benchcases.load_layers(_benchcases.PACKAGED_LAYERS)
    assert {"paper_mnist", "resnet50_2a_3x3", "resnet50_4b_3x3"} <= {l["name"] for l in layers}


def _tiny_spec(tiny_layers, case, **extra):
    layer = _benchcases.load_layers(tiny_layers, ["tiny_s2"])[0]
    return dict(dict(layer=layer, dtype="float32", kind="forward", case=case, threads=1,
                     repeats=2, min_seconds=0), **extra)


glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


@glibc
def test_each_child_raises_the_mmap_threshold_first(tiny_layers):
    result = report.measure_case(_tiny_spec(tiny_layers, "numpy"))
    assert "times" in result
    allocator = result["allocator"]
    assert allocator["freed_bytes"] == report.ALLOCATOR_BLOCK > 31 * 2**20
    assert allocator["block_was_mmapped"] is True and allocator["threshold_raised"] is True


@glibc
@pytest.mark.parametrize("block, raised", [(report.ALLOCATOR_BLOCK, True), (64 * 2**20, False)])
def test_only_a_freed_block_under_32_mib_raises_the_threshold(block, raised):
    """glibc raises its mmap threshold only for freed mmapped chunks of at most
    32 MiB: a 64 MiB block does not (why the child frees just under 32 MiB)."""
    code = (f"from fastconv.report import warm_allocator as w; r = w({block}); "
            f"print(r['block_was_mmapped'], r['threshold_raised'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=report.child_environment())
    assert proc.stdout.split() == ["True", str(raised)]


def test_a_case_runs_the_batch_it_is_given(tiny_layers):
    """bench/memory_limit.py --batch: the measured call runs that many images
    (the tiny layer has 2), not the layer's own batch."""
    result = report.measure_case(_tiny_spec(tiny_layers, "mapped", batch=3))
    assert result["output_bytes"] == 3 * 6 * 5 * 5 * 4
    assert "x(3, " in result["plan"]


def test_a_case_without_threads_takes_the_setting(tiny_layers):
    """bench/memory_limit.py without --threads: threads None is fastconv's
    num_threads setting, as the report's (the child failed on None)."""
    import fastconv
    result = report.measure_case(_tiny_spec(tiny_layers, "mapped", threads=None))
    assert len(result["times"]) >= 2, result
    assert f"{fastconv.get_config()['num_threads']} OpenMP thread" in result["plan"]


def test_scipy_peer_on_a_tiny_layer(tiny_layers):
    result = report.measure_case(_tiny_spec(tiny_layers, "scipy"))
    assert len(result["times"]) >= 2 and result["output_bytes"] == 2 * 6 * 5 * 5 * 4
    assert result["check"]["formulation"] in _benchcases.SCIPY_FORMULATIONS
    assert result["check"]["max_relative_error"] <= result["check"]["tolerance"]
    assert result["scipy"]["seconds"] > 0
    slow = report.measure_case(_tiny_spec(tiny_layers, "scipy", scipy_seconds=0))
    assert "times" not in slow and slow["skipped"].startswith("estimated ")


@pytest.mark.parametrize("formulation", _benchcases.SCIPY_FORMULATIONS)
@pytest.mark.parametrize("stride, padding, dilation, groups",
                         [(1, 0, 1, 1), (2, 1, 1, 2), (1, 2, 2, 1), (3, 1, 2, 3)])
def test_scipy_conv2d_matches_fastconv(formulation, stride, padding, dilation, groups):
    import numpy as np
    import fastconv
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 13, 11))
    w = rng.standard_normal((6, 6 // groups, 3, 2))
    got = _benchcases.scipy_conv2d(x, w, stride, padding, dilation, groups, formulation)
    want = fastconv.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert got.shape == want.shape and np.allclose(got, want, rtol=1e-10, atol=1e-10)


def test_a_case_that_stays_noisy_is_measured_again_and_flagged(tiny_layers, tmp_path, monkeypatch):
    """The NumPy case always comes back with its second-best time 2.6x its
    best; every other case is steady (the children are faked)."""
    calls = []

    def fake(spec):
        calls.append(spec["case"])
        base = dict(peak_growth=4096, output_bytes=800, first_call=1e-3, allocator={})
        steady = [1e-3, 1.02e-3, 1.05e-3]
        if spec["case"] == "tradeoff":
            point = dict(base, times=steady, workspace_bytes=1024, method="mapped",
                         plan="ConvPlan(mapped)")
            return dict(points=[dict(point) for _ in range(len(spec["limits"]) + 1)])
        return dict(base, times=[2e-3, 5.2e-3, 6e-3] if spec["case"] == "numpy" else steady)
    monkeypatch.setattr(report, "measure_case", fake)
    paths = report.run_report(tiny_layers, ["float32"], threads=1, quick=True, repeats=3,
                              names=["tiny_3x3"], out_dir=tmp_path / "n", progress=False,
                              reruns=2)
    assert calls.count("numpy") == 3 and calls.count("auto") == 3  # auto: 3 kinds, once each
    data = json.loads(pathlib.Path(paths["json"]).read_text())
    numpy_case = next(r for r in data["results"] if r["case"] == "numpy")
    assert numpy_case["noisy"] and numpy_case["spread"] == pytest.approx(2.6)
    assert numpy_case["runs_measured"] == 3 and numpy_case["best"] == 2e-3
    assert [r for r in data["results"] if r.get("noisy")] == [numpy_case]
    markdown = pathlib.Path(paths["markdown"]).read_text()
    summary = markdown.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "| 0.50× (1 noisy) |" in summary  # auto / NumPy: 1e-3 / 2e-3
    assert "tiny_3x3 float32 forward NumPy: noisy: spread 2.60×" in summary
    assert "⚠ noisy: spread 2.60×" in markdown.split("## Layers", 1)[1]


def test_a_case_timed_on_a_slowed_machine_is_measured_again(tiny_layers, tmp_path, monkeypatch):
    """Whole processes of a virtual machine sometimes run at half speed with
    no spread to show it: the children's machine-speed probes do. Faked: every
    process of the mapped case probes at half the others' speed; stretch's
    first process does too, with times twice as long, and its rerun does not."""
    calls = []

    def fake(spec):
        calls.append(spec["case"])
        base = dict(peak_growth=4096, output_bytes=800, first_call=1e-3, allocator={})
        steady = [1e-3, 1.02e-3, 1.05e-3]
        if spec["case"] == "tradeoff":
            point = dict(base, times=steady, workspace_bytes=1024, method="mapped",
                         plan="ConvPlan(mapped)")
            return dict(points=[dict(point) for _ in range(len(spec["limits"]) + 1)])
        slowed = spec["case"] == "mapped" or (spec["case"] == "stretch"
                                               and calls.count("stretch") == 1)
        times = [2 * t for t in steady] if spec["case"] == "stretch" and slowed else steady
        return dict(base, times=times, machine_share=dict(
            cpu_per_wall=1.0, load_average=0.1, probe_gflops=[50.0, 52.0] if slowed else [101.0, 100.0]))
    monkeypatch.setattr(report, "measure_case", fake)
    paths = report.run_report(tiny_layers, ["float32"], threads=1, quick=True, repeats=3,
                              names=["tiny_3x3"], out_dir=tmp_path / "s", progress=False,
                              reruns=2)
    # stretch: again for its slowed best, then for the spread its slowed process leaves
    assert calls.count("mapped") == 3 and calls.count("stretch") == 3 and calls.count("direct") == 1
    data = json.loads(pathlib.Path(paths["json"]).read_text())
    by_case = {r["case"]: r for r in data["results"] if r["kind"] == "forward" and not r.get("tradeoff")}
    assert by_case["mapped"]["noisy"] and by_case["mapped"]["slowed"]
    assert by_case["mapped"]["machine_speed"] == pytest.approx(0.5)
    stretch = by_case["stretch"]  # its best from a fast process
    assert not stretch["noisy"] and not stretch["slowed"] and stretch["best"] == 1e-3
    assert stretch["runs_measured"] == 3 and stretch["spread"] == pytest.approx(1.02)
    assert [r["case"] for r in data["results"] if r.get("noisy")] == ["mapped"]
    speed = data["meta"]["machine_speed"]
    assert speed["median_gflops"] == 100.0 and speed["slowed_processes"] == 4
    markdown = pathlib.Path(paths["markdown"]).read_text()
    assert "its best process ran with the cores at 50 % of the run's speed" in markdown
    assert "4 of " in markdown and "processes slowed (median probe 100 GFLOP/s)" in markdown


def test_same_shape_gemm_is_blas_on_every_layer():
    # the report's GEMM ceiling: BLAS (gemm1x1) on the stretched matrix,
    # whatever auto would take for such a 1x1 layer (fused, on ResNet-50's
    # full-size layers), with the layer's FLOPs; and the product it runs
    import numpy as np
    from fastconv._benchcases import load_layers, same_shape_gemm
    for layer in load_layers(None):
        if layer["name"].startswith("resnet50"):   # full size (the others' operands are large)
            plan, _ = same_shape_gemm(layer, "float32", threads=2)
            assert plan.method == "gemm1x1", layer["name"]
    small = dict(load_layers(None)[0], N=2, H=9, W=9)
    plan, run = same_shape_gemm(small, "float64", threads=1)
    result = run()
    assert plan.method == "gemm1x1" and result.shape == plan.output_shape
    assert np.isfinite(result).all()

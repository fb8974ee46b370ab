"""fastconv.dask on a LocalCluster against fastconv.conv2d in one process.

Time: a batch of one layer (default: 64 images of ResNet-50 ``2a_3x3``) on a
``LocalCluster`` of single-threaded worker processes, against in-process
``fastconv.conv2d`` with as many threads as there are workers, interleaved
round-robin, medians. The cluster runs three ways:

* ``persist``: x already on the workers, the result left there
  (``y.persist()``; the convolution and Dask's scheduling only);
* ``gather``: x on the workers, the result sent back to the client;
* ``from client``: x sent from the client and the result sent back.

Efficiency = in-process time / cluster time (1 = as fast as one process).

Memory: each worker's peak resident memory while the batch is generated on
the workers block by block, convolved and written to disk block by block
(``to_npy_stack``), for growing batch sizes: bounded per worker, however big
the batch.

Two measurements behind fastconv.dask's warnings (run alone with
``--guidance-only``):

* ``--overhead``: Dask's cost per task, from many blocks of one tiny image
  (on the cluster: a worker thread's seconds per task; on the threaded
  scheduler: seconds per task), and one core's GFLOP/s on the layer: the
  smallest block worth a task (fastconv/dask.py, ``_TASK_OVERHEAD``);
* ``--embedded``: the time added by an input made with
  ``da.from_array(np.load(path, mmap_mode="r"))`` (the array goes into the
  graph) over ``fastconv.dask.from_npy(path)`` (the tasks read the file), for
  growing files (``_EMBEDDED_WARN_BYTES``).

    python bench/dask_cluster.py [--layer resnet50_2a_3x3] [--batch 64] [--workers 2]
                                 [--blocks 8,16,32] [--rounds 7] [--memory-batches 32,64,128,256]
                                 [--overhead] [--embedded 1,4,16,64] [--guidance-only]
                                 [--json out.json]
"""
import argparse
import json
import os
import statistics
import tempfile
import time
import warnings

import dask.array as da
import numpy as np
from dask.utils import format_bytes
from distributed import Client, LocalCluster, wait

import fastconv
import fastconv.dask
from fastconv._benchcases import conv_kwargs, layer_arrays, load_layers, shapes
from fastconv.report import _reset_peak, _rss_status


def _memory():
    """(current, peak) resident bytes of this process (Linux)."""
    return _rss_status("VmRSS"), _rss_status("VmHWM")


def _timed(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def time_cases(layer, batch, workers, blocks, rounds):
    """Median seconds of each case. Every round draws a new weight (used by
    all its cases): a repeated graph would have the same keys, and Dask could
    hand back results still held from the previous round."""
    x, w = layer_arrays(layer, np.float32, batch=batch)
    conv = conv_kwargs(layer)
    weights = np.random.default_rng(1)
    current = {"w": w}
    cases = {"in process": lambda: fastconv.conv2d(x, current["w"], num_threads=workers, **conv)}
    for block in blocks:
        on_workers = da.from_array(x, chunks=(block, -1, -1, -1)).persist()
        wait(on_workers)

        def persist(xd=on_workers):
            y = fastconv.dask.conv2d(xd, current["w"], **conv).persist()
            wait(y)
            del y

        cases[f"persist, {block}/block"] = persist
        cases[f"gather, {block}/block"] = (
            lambda xd=on_workers: fastconv.dask.conv2d(xd, current["w"], **conv).compute())
        cases[f"from client, {block}/block"] = (
            lambda b=block: fastconv.dask.conv2d(da.from_array(x, chunks=(b, -1, -1, -1)),
                                                 current["w"], **conv).compute())
    for run in cases.values():  # warm-up: plans, worker imports, first page faults
        run()
    times = {name: [] for name in cases}
    for _ in range(rounds):
        current["w"] = weights.standard_normal(w.shape, dtype=np.float32)
        for name, run in cases.items():
            times[name].append(_timed(run))
            time.sleep(0.1)
    return {name: statistics.median(t) for name, t in times.items()}, x.nbytes


def worker_peaks(client, layer, batches, block):
    """Peak memory of each worker while a batch streams from generation to disk."""
    x_shape, w_shape = shapes(layer, 1)
    w = np.random.default_rng(0).standard_normal(w_shape, dtype=np.float32)
    rows = []
    for batch in batches:
        x = da.random.default_rng(0).standard_normal((batch,) + x_shape[1:], dtype=np.float32,
                                                      chunks=(block, -1, -1, -1))
        y = fastconv.dask.conv2d(x, w, **conv_kwargs(layer))
        client.run(_reset_peak)
        before = client.run(_memory)
        with tempfile.TemporaryDirectory() as folder:
            da.to_npy_stack(folder, y, axis=0)
        after = client.run(_memory)
        rows.append({"batch": batch, "input_bytes": x.nbytes, "output_bytes": y.nbytes,
                     "worker_rss_before": [before[a][0] for a in sorted(before)],
                     "worker_peak": [after[a][1] for a in sorted(after)]})
    return rows


def _median_time(run, rounds):
    run()  # warm-up
    times = []
    for _ in range(rounds):
        times.append(_timed(run))
        time.sleep(0.05)
    return statistics.median(times)


def task_overhead(client, layer, tasks=256, rounds=5):
    """Seconds per task of Dask (cluster: per worker thread; threaded
    scheduler: wall), and one core's GFLOP/s on ``layer``."""
    threads = sum(w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values())
    w = np.ones((1, 1, 1, 1), np.float32)
    on_workers = da.zeros((tasks, 1, 2, 2), np.float32, chunks=(1, -1, -1, -1)).persist()
    wait(on_workers)
    counter = iter(range(10**9))

    def on_cluster():  # a new weight each time: new keys
        y = fastconv.dask.conv2d(on_workers, w * next(counter), num_threads=1).persist()
        wait(y)

    local = da.zeros((tasks, 1, 2, 2), np.float32, chunks=(1, -1, -1, -1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = _median_time(on_cluster, rounds) * threads / tasks
        threaded = _median_time(
            lambda: fastconv.dask.conv2d(local, w).compute(scheduler="threads"), rounds) / tasks
    x, wl = layer_arrays(layer, np.float32, batch=8)
    conv = conv_kwargs(layer)
    seconds = _median_time(lambda: fastconv.conv2d(x, wl, num_threads=1, **conv), rounds)
    flops = fastconv.plan_conv2d(x.shape, wl.shape, **conv).flops
    return {"distributed_s_per_task": cluster, "threads_s_per_task": threaded,
            "core_gflops": flops / seconds / 1e9, "layer_gflop_per_image": flops / 8 / 1e9,
            "tasks": tasks, "worker_threads": threads}


def embedded_cost(client, layer, sizes_mib, block=16, rounds=3):
    """Seconds of fastconv.dask.conv2d(...).persist() with the input from
    ``from_array(np.load(mmap_mode="r"))`` and from ``fastconv.dask.from_npy``."""
    x_shape, w_shape = shapes(layer, 1)
    w = np.random.default_rng(0).standard_normal(w_shape, dtype=np.float32)
    conv = conv_kwargs(layer)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for mib in sizes_mib:
            image_bytes = int(np.prod(x_shape[1:])) * 4
            images = max(1, int(mib * 2**20) // image_bytes)
            path = os.path.join(folder, f"x{mib}.npy")
            np.save(path, np.ones((images,) + x_shape[1:], np.float32))
            counter = iter(range(10**9))

            def run(make):
                y = fastconv.dask.conv2d(make(), w + next(counter), **conv).persist()
                wait(y)
                del y

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = _median_time(lambda: run(lambda: da.from_array(
                    np.load(path, mmap_mode="r"), chunks=(block, -1, -1, -1))), rounds)
                tasks = _median_time(lambda: run(
                    lambda: fastconv.dask.from_npy(path, images_per_block=block)), rounds)
            rows.append({"mib": images * image_bytes / 2**20, "images": images,
                         "from_array_memmap_s": graph, "from_npy_s": tasks,
                         "extra_s": graph - tasks})
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default=None)
    parser.add_argument("--layer", default="resnet50_2a_3x3")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--blocks", default="8,16,32")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--memory-batches", default="32,64,128,256")
    parser.add_argument("--memory-block", type=int, default=8)
    parser.add_argument("--overhead", action="store_true",
                        help="measure Dask's per-task cost and one core's GFLOP/s")
    parser.add_argument("--embedded", default=None,
                        help="sizes in MiB: cost of an input array inside the graph")
    parser.add_argument("--guidance-only", action="store_true",
                        help="only --overhead / --embedded, not the timings and memory")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    (layer,) = load_layers(args.layers, [args.layer])
    blocks = [int(b) for b in args.blocks.split(",")]

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        guidance = {}
        if args.overhead:
            guidance["overhead"] = o = task_overhead(client, layer)
            print(f"Dask's cost per task: {o['distributed_s_per_task'] * 1e3:.2f} ms of a worker "
                  f"thread on the cluster ({o['worker_threads']} worker threads, {o['tasks']} "
                  f"tasks), {o['threads_s_per_task'] * 1e3:.3f} ms on the threaded scheduler; "
                  f"one core: {o['core_gflops']:.1f} GFLOP/s on {args.layer} "
                  f"({o['layer_gflop_per_image']:.3f} GFLOP per image)")
        if args.embedded:
            guidance["embedded"] = rows = embedded_cost(
                client, layer, [float(m) for m in args.embedded.split(",")])
            print(f"{'input MiB':>10} {'from_array(memmap) s':>21} {'from_npy s':>11} {'extra s':>8}")
            for r in rows:
                print(f"{r['mib']:10.1f} {r['from_array_memmap_s']:21.3f} {r['from_npy_s']:11.3f} "
                      f"{r['extra_s']:8.3f}")
        if args.guidance_only:
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"layer": layer, **guidance}, f, indent=1)
            return
        medians, batch_bytes = time_cases(layer, args.batch, args.workers, blocks, args.rounds)
        peaks = worker_peaks(client, layer, [int(b) for b in args.memory_batches.split(",")],
                             args.memory_block)

    base = medians["in process"]
    print(f"{args.layer}, {args.batch} images ({format_bytes(batch_bytes)}), float32; "
          f"{args.workers} single-threaded workers vs one process with {args.workers} threads; "
          f"{args.rounds} interleaved rounds, medians")
    print(f"{'case':<24} {'ms':>8} {'time / in process':>18} {'efficiency':>11}")
    for name, median in medians.items():
        print(f"{name:<24} {median * 1e3:8.1f} {median / base:18.2f} {base / median:11.2f}")
    print(f"\nworker peak memory, batch generated, convolved and written block by block "
          f"({args.memory_block} images per block):")
    print(f"{'batch':>6} {'input':>11} {'worker peak (idle before)':>44} {'max growth / input':>19}")
    for row in peaks:
        growth = max(p - b for p, b in zip(row["worker_peak"], row["worker_rss_before"]))
        pairs = ", ".join(f"{format_bytes(p)} ({format_bytes(b)})"
                          for p, b in zip(row["worker_peak"], row["worker_rss_before"]))
        print(f"{row['batch']:>6} {format_bytes(row['input_bytes']):>11} {pairs:>44} "
              f"{growth / row['input_bytes']:19.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"layer": layer, "batch": args.batch, "workers": args.workers,
                       "medians": medians, "memory": peaks, **guidance}, f, indent=1)


if __name__ == "__main__":
    main()

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

    python bench/dask_cluster.py [--layer resnet50_2a_3x3] [--batch 64] [--workers 2]
                                 [--blocks 8,16,32] [--rounds 7] [--memory-batches 32,64,128,256]
                                 [--json out.json]
"""
import argparse
import json
import statistics
import tempfile
import time

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
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    (layer,) = load_layers(args.layers, [args.layer])
    blocks = [int(b) for b in args.blocks.split(",")]

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
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
                       "medians": medians, "memory": peaks}, f, indent=1)


if __name__ == "__main__":
    main()

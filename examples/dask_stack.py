"""Convolve a stack of images larger than the memory given to the run, on a Dask cluster.

The images are one .npy file on disk (written with
``np.lib.format.open_memmap``), bigger than the memory limit of all the
workers together. A ``dask.distributed.LocalCluster`` reads it a block of
images at a time, convolves each block with ``fastconv.dask.conv2d`` (a
ResNet-50 ``2a`` 3x3 layer: 64 -> 64 channels, 56x56, padding 1) and writes
each result block back to disk as it is made (``dask.array.to_npy_stack``),
so no process ever holds the stack. The script prints the throughput, each
worker's peak memory against the stack's size, and checks two blocks against
in-memory ``fastconv.conv2d``.

    python examples/dask_stack.py [--images 1536] [--workers 2] [--threads-per-worker 1]
                                  [--worker-memory 400MB] [--block 16] [--dir DIR]

Needs the ``dask`` extra: ``python3 -m pip install ".[dask]"``. Files go to a
temporary folder (removed at the end) unless ``--dir`` is given.
"""
import argparse
import os
import pathlib
import tempfile
import time

import dask.array as da
import numpy as np
from dask.utils import format_bytes, parse_bytes
from distributed import Client, LocalCluster

import fastconv
import fastconv.dask

C, H, W, K = 64, 56, 56, 64
CONV = dict(padding=1)


def write_stack(path, images, block, seed=0):
    """A (images, C, H, W) float32 .npy file, written a block at a time."""
    stack = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(images, C, H, W))
    rng = np.random.default_rng(seed)
    for start in range(0, images, block):
        stop = min(images, start + block)
        stack[start:stop] = rng.standard_normal((stop - start, C, H, W), dtype=np.float32)
    stack.flush()
    del stack


def layer_parameters(seed=1):
    """Weight (K, C, 3, 3) and bias (K,) of the layer, float32."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((K, C, 3, 3), dtype=np.float32) * (C * 9) ** -0.5
    return weight, rng.standard_normal(K, dtype=np.float32)


def _reset_peak_memory():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS (VmHWM) := current RSS
    except OSError:
        pass


def _memory():
    """(current, peak) resident memory of this process, bytes (Linux)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1536)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--worker-memory", default="400MB",
                        help="memory limit of each worker (Dask's memory_limit)")
    parser.add_argument("--block", type=int, default=16, help="images per block (task)")
    parser.add_argument("--dir", help="where to put the stack and the result (default: a temporary folder)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        folder = pathlib.Path(args.dir or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        stack_path, out_path = folder / "images.npy", folder / "convolved"
        stack_bytes = args.images * C * H * W * 4
        worker_memory = parse_bytes(args.worker_memory)
        print(f"stack: {args.images} images of {C}x{H}x{W} float32 = {format_bytes(stack_bytes)} "
              f"on disk; {args.workers} workers x {format_bytes(worker_memory)} = "
              f"{format_bytes(args.workers * worker_memory)} of memory in all")
        if not stack_path.exists() or np.load(stack_path, mmap_mode="r").shape[0] != args.images:
            write_stack(stack_path, args.images, args.block)

        weight, bias = layer_parameters()

        with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                          memory_limit=worker_memory, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            # the tasks read the file: the graph holds its path, not its data
            x = fastconv.dask.from_npy(stack_path, images_per_block=args.block)
            y = fastconv.dask.conv2d(x, weight, bias, **CONV)
            print(f"graph: {x.numblocks[0]} blocks of {args.block} images -> output {y.shape}, "
                  f"{y.dtype}, blocks of {y.chunksize}")
            client.run(_reset_peak_memory)
            before = client.run(_memory)
            start = time.perf_counter()
            da.to_npy_stack(str(out_path), y, axis=0)   # computes, writing block by block
            elapsed = time.perf_counter() - start
            after = client.run(_memory)

        flops = 2 * args.images * K * H * W * C * 9
        print(f"time: {elapsed:.2f} s = {args.images / elapsed:.0f} images/s, "
              f"{2 * stack_bytes / elapsed / 1e6:.0f} MB/s read + written, "
              f"{flops / elapsed / 1e9:.1f} GFLOP/s")
        for address in sorted(after):
            rss_before, peak = before[address][0], after[address][1]
            print(f"worker {address}: peak memory {format_bytes(peak)} "
                  f"({format_bytes(rss_before)} before the run) = {peak / stack_bytes:.1%} of the "
                  f"stack, {peak / worker_memory:.0%} of its limit")

        # two blocks of the result against the in-memory convolution
        stack = np.load(stack_path, mmap_mode="r")
        files = sorted(out_path.glob("*.npy"), key=lambda p: int(p.stem))
        for index in (0, len(files) - 1):
            start = index * args.block
            got = np.load(files[index])
            expected = fastconv.conv2d(stack[start:start + got.shape[0]], weight, bias, **CONV)
            error = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
            print(f"block {index}: images {start}..{start + got.shape[0] - 1}, largest relative "
                  f"difference to fastconv.conv2d in memory: {error:.1e}")
            assert error < 1e-5, error
        if args.dir is None:
            print(f"(temporary files in {folder} removed)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:distributed")
    main()

"""A forked child's call against its parent's, side by side (issue: fastconv in
forked processes). ResNet-50 2a 3x3 by default, float32, 2 threads.

The parent warms up (its main thread then owns an OpenMP team), forks one
child and the two take turns over a pipe, so they never run at once: each
round the parent times `--calls` calls, then the child does; best of rounds.
The child's calls come from its forking thread, which fastconv routes to a
helper thread (fastconv/_runtime.py, run_kernel).

    python3 bench/fork_child.py [--rounds 8] [--calls 5] [--threads 2]
"""
import argparse
import os
import time

import numpy as np

import fastconv


def best_of(run, calls):
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    # the allocator of a long-running program (see the report): a freed
    # block above 32 MiB raises glibc's mmap threshold
    block = np.ones(64 * 2**20, np.uint8)
    del block
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)

    def run():
        return fastconv.conv2d(x, w, padding=1, num_threads=args.threads)

    expected = run()
    child_reads, parent_writes = os.pipe()
    parent_reads, child_writes = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = np.array_equal(run(), expected)  # also the child's warm-up
        for _ in range(args.rounds):
            os.read(child_reads, 1)
            os.write(child_writes, f"{best_of(run, args.calls):.9f} {int(ok)}\n".encode())
        os._exit(0)
    parent_times, child_times = [], []
    with os.fdopen(parent_reads) as replies:
        for _ in range(args.rounds):
            parent_times.append(best_of(run, args.calls))
            os.write(parent_writes, b"g")
            seconds, ok = replies.readline().split()
            child_times.append(float(seconds))
    os.waitpid(pid, 0)
    p, c = min(parent_times), min(child_times)
    print(f"ResNet-50 2a 3x3, float32, {args.threads} threads, best of {args.rounds} rounds x "
          f"{args.calls} calls")
    print(f"parent {p * 1e3:.2f} ms, forked child {c * 1e3:.2f} ms: child/parent {c / p:.2f} "
          f"(median of rounds {np.median(child_times) / np.median(parent_times):.2f}); "
          f"child's result equal to the parent's: {ok == '1'}")


if __name__ == "__main__":
    main()

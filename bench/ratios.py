"""Turn a pytest-benchmark JSON into the ratio tables quoted in closing notes.

    pytest bench/ --benchmark-json=out.json [--threads 1 ...]
    python bench/ratios.py out.json [--one-thread one.json]

Prints, per layer and dtype: each case's median time over the same-shape GEMM
(the ceiling of a GEMM lowering), mapped over stretch, and the workspace of
each; with --one-thread, the 2-thread speed-up over a 1-thread run.
"""
import argparse
import collections
import json


def load(path):
    data = json.load(open(path))
    table = collections.defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        table[(info["layer"], info["dtype"])][info["case"]] = (bench["stats"]["median"], info)
    return table


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("json")
    parser.add_argument("--one-thread", help="the same suite run with --threads 1")
    args = parser.parse_args()
    table = load(args.json)
    one = load(args.one_thread) if args.one_thread else None
    cases = ["stretch", "mapped", "mapped_4MiB", "auto"]
    header = (f"{'layer':<18} {'dtype':<7} {'gemm ms':>8} " + " ".join(f"{c + '/gemm':>12}" for c in cases)
              + f" {'map/str':>8} {'str MiB':>8} {'map MiB':>8} {'ws ratio':>8} {'GF/s str':>8}")
    if one:
        header += f" {'str 2T/1T':>9} {'map 2T/1T':>9}"
    print(header)
    for (layer, dtype), row in sorted(table.items()):
        if "gemm" not in row:
            continue
        gemm = row["gemm"][0]
        cells = [f"{row[c][0] / gemm:12.2f}" if c in row else f"{'-':>12}" for c in cases]
        line = f"{layer:<18} {dtype:<7} {gemm * 1e3:8.2f} " + " ".join(cells)
        if "stretch" in row and "mapped" in row:
            s, m = row["stretch"], row["mapped"]
            line += (f" {m[0] / s[0]:8.2f} {s[1]['workspace_bytes'] / 2**20:8.1f} "
                     f"{m[1]['workspace_bytes'] / 2**20:8.2f} "
                     f"{s[1]['workspace_bytes'] / m[1]['workspace_bytes']:8.1f} "
                     f"{s[1]['flops'] / s[0] / 1e9:8.1f}")
        if one and (layer, dtype) in one:
            o = one[(layer, dtype)]
            for c in ("stretch", "mapped"):
                line += f" {o[c][0] / row[c][0]:9.2f}" if c in o and c in row else f" {'-':>9}"
        print(line)


if __name__ == "__main__":
    main()

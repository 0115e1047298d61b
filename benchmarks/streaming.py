"""Streaming input at two sizes, side by side in one run: memory must not grow with rows, and streaming must keep
the in-memory path's speed and AUC (issue 18).

It writes two data sets with ``easyrec generate`` (2,000,000 and 8,000,000 training rows, 200,000 eval rows, 40
shards; ``--quick``: 100,000 and 400,000 rows, 20,000 eval rows, 8 shards), then trains one epoch of the default
model on each with ``data.streaming=true data.num_workers=1``, and once more on the smaller one in memory
(``data.streaming=false``). Every run is a fresh process, one at a time. For each it reports the peak RSS of the
whole process tree (the trainer and its loader workers: /proc sampled every 0.2 s, RSS summed over the tree), the
trainer's own ``ru_maxrss``, the train-loop samples/s (``train/loop_samples_per_s``), ``data/wait_fraction`` and
the eval AUC, then the ratios and whether each meets its target:

* peak RSS (tree) of the larger streaming run at most 1.15x that of the smaller one, and at most 2.5 GB;
* streaming train-loop samples/s at least 0.9x the in-memory path's on the same rows;
* eval AUC of streaming within 0.003 of in-memory on the same rows.

    python benchmarks/streaming.py --quick     # 500,000 rows trained in all: 15 minutes on a busy 2-core machine
    python benchmarks/streaming.py             # the issue's sizes: 12,000,000 rows trained in all, hours

It prints the table, the ratios, and as its last line one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")
TARGETS = {"rss_ratio": 1.15, "rss_gb": 2.5, "throughput_ratio": 0.9, "auc_difference": 0.003}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 and 400,000 rows, 20,000 eval rows, 8 shards")
    parser.add_argument("--rows", type=int, nargs=2, metavar=("SMALL", "LARGE"), help="training rows of the two sets")
    parser.add_argument("--eval-rows", type=int, help="eval rows of both sets (200,000; --quick: 20,000)")
    parser.add_argument("--files", type=int, help="training shards of each set (40; --quick: 8)")
    parser.add_argument("--num-workers", type=int, default=1, help="data.num_workers of the streaming runs (1)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(os.environ.get("BENCH_WORK", ROOT / "bench-work")) / "streaming",
        help="where the data sets and runs go (default: $BENCH_WORK/streaming or ./bench-work/streaming); a data "
        "set made by an earlier run with the same sizes and seed is reused",
    )
    parser.add_argument("--seed", type=int, default=0, help="easyrec generate --seed")
    parser.add_argument("overrides", nargs="*", help="more `easyrec train` overrides for every run")
    args = parser.parse_args()
    args.rows = args.rows or ([100_000, 400_000] if args.quick else [2_000_000, 8_000_000])
    args.eval_rows = args.eval_rows or (20_000 if args.quick else 200_000)
    args.files = args.files or (8 if args.quick else 40)
    return args


def tree_rss(root: int) -> int:
    """Bytes of resident memory of ``root`` and every process below it (its loader workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    # the command name (field 2) may hold spaces: the parent id is the 2nd field after its ")"
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a process that ended meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    tree, frontier = [root], [root]
    while frontier:
        below = children.get(frontier.pop(), [])
        tree += below
        frontier += below
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def measured(command: list[str], log: Path, every: float = 0.2) -> dict:
    """Run ``command`` to its end (output in ``log``): exit code, wall seconds, the peak RSS of its process tree
    (sampled every ``every`` s) and its own ``ru_maxrss``, in MB."""
    start = time.monotonic()
    peak = 0
    with log.open("w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(every):
                peak = max(peak, tree_rss(child.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        done.set()
        sampler.join()
    return {
        "rc": os.waitstatus_to_exitcode(status),
        "wall_s": round(time.monotonic() - start, 1),
        "tree_peak_rss_mb": round(peak / 2**20),
        "main_maxrss_mb": round(usage.ru_maxrss / 1024),
    }


def easyrec(*args: str) -> list[str]:
    return [sys.executable, "-m", "easyrec", *args]


def generated(args: argparse.Namespace, rows: int) -> tuple[Path, dict]:
    """The data set of ``rows`` training rows (made now unless an earlier run made it with the same arguments)."""
    wanted = {"rows": rows, "eval_rows": args.eval_rows, "files": args.files, "seed": args.seed}
    folder = args.work / f"data-{rows}"
    marker = folder / "generate.json"
    if marker.exists() and json.loads(marker.read_text())["arguments"] == wanted:
        print(f"=== reusing {folder}", flush=True)
        return folder, json.loads(marker.read_text())["measured"]
    print(f"=== easyrec generate --rows {rows:,}", flush=True)
    command = easyrec(
        "generate",
        *("--rows", str(rows), "--eval-rows", str(args.eval_rows), "--files", str(args.files)),
        *("--seed", str(args.seed), "--output", str(folder), "--overwrite"),
    )
    args.work.mkdir(parents=True, exist_ok=True)
    result = measured(command, args.work / f"generate-{rows}.log")
    if result["rc"] != 0:
        sys.exit(f"streaming: easyrec generate failed (rc {result['rc']}), see {args.work}/generate-{rows}.log")
    marker.write_text(json.dumps({"arguments": wanted, "measured": result}))
    return folder, result


def trained(args: argparse.Namespace, label: str, folder: Path, streaming: bool) -> dict:
    """One epoch of the default model on ``folder``'s files, streamed or in memory: measured, with its metrics."""
    run_dir = args.work / "runs" / label
    overrides = [
        "data=parquet",
        "data/features=generated",
        f"data.train_path={folder}/train/*.parquet",
        f"data.eval_path={folder}/eval",
        f"data.streaming={str(streaming).lower()}",
        f"data.num_workers={args.num_workers}",
        "data.cache_dir=null",  # cold: every run reads and encodes the files
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        *args.overrides,
    ]
    print(f"=== {label}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    result = measured(easyrec("train", *overrides), args.work / f"{label}.log")
    if result["rc"] != 0:
        print(f"  {label}: failed (rc {result['rc']}), see {args.work}/{label}.log", flush=True)
        return result
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        **result,
        "samples_per_s": metrics["train/loop_samples_per_s"],
        "wait_fraction": metrics.get("data/wait_fraction"),
        "auc": metrics["eval/auc"],
        "oracle_auc": metrics.get("eval/oracle_auc"),
        "train_rows": metrics.get("train/rows"),
    }


def table(runs: dict[str, dict]) -> str:
    head = "| run | tree peak RSS MB | main ru_maxrss MB | samples/s | wait fraction | eval AUC | oracle AUC | wall s |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for label, row in runs.items():
        if row["rc"]:
            lines.append(f"| {label} | failed (rc {row['rc']}) |  |  |  |  |  |  |")
            continue
        wait = "" if row.get("wait_fraction") is None else f"{row['wait_fraction']:.3f}"
        oracle = "" if row.get("oracle_auc") is None else f"{row['oracle_auc']:.4f}"
        samples = f"{row['samples_per_s']:,.0f}" if "samples_per_s" in row else ""
        auc = f"{row['auc']:.4f}" if "auc" in row else ""
        lines.append(
            f"| {label} | {row['tree_peak_rss_mb']:,} | {row['main_maxrss_mb']:,} | {samples} | {wait} | {auc} "
            f"| {oracle} | {row['wall_s']:.1f} |"
        )
    return "\n".join(lines)


def verdicts(small: dict, large: dict, memory: dict) -> dict:
    """The issue's ratios and whether each meets its target (None where a run failed)."""
    ok = not (small["rc"] or large["rc"] or memory["rc"])
    if not ok:
        return {"complete": False}
    rss_ratio = large["tree_peak_rss_mb"] / small["tree_peak_rss_mb"]
    throughput = small["samples_per_s"] / memory["samples_per_s"]
    auc_difference = abs(small["auc"] - memory["auc"])
    return {
        "complete": True,
        "rss_ratio_large_vs_small": round(rss_ratio, 3),
        "rss_ratio_pass": rss_ratio <= TARGETS["rss_ratio"],
        "large_rss_gb": round(large["tree_peak_rss_mb"] / 1024, 3),
        "large_rss_pass": large["tree_peak_rss_mb"] / 1024 <= TARGETS["rss_gb"],
        "throughput_streaming_vs_memory": round(throughput, 3),
        "throughput_pass": throughput >= TARGETS["throughput_ratio"],
        "auc_difference": round(auc_difference, 5),
        "auc_pass": auc_difference <= TARGETS["auc_difference"],
        "wait_fraction": small.get("wait_fraction"),
    }


def main() -> None:
    args = parse_args()
    args.work = args.work.resolve()
    started = time.monotonic()
    (small_rows, large_rows) = args.rows
    small_dir, small_generate = generated(args, small_rows)
    large_dir, large_generate = generated(args, large_rows)
    runs = {
        f"streaming {small_rows:,}": trained(args, f"streaming-{small_rows}", small_dir, streaming=True),
        f"streaming {large_rows:,}": trained(args, f"streaming-{large_rows}", large_dir, streaming=True),
        f"in memory {small_rows:,}": trained(args, f"memory-{small_rows}", small_dir, streaming=False),
    }
    small, large, memory = runs.values()
    result = verdicts(small, large, memory)
    print(
        f"\n{args.eval_rows:,} eval rows, {args.files} shards, data.num_workers={args.num_workers}, "
        f"{os.cpu_count()} CPUs; benchmark wall time {time.monotonic() - started:.0f} s\n"
    )
    print(table({f"generate {small_rows:,}": small_generate, f"generate {large_rows:,}": large_generate} | runs))
    if result["complete"]:
        print(
            f"\npeak RSS (tree) {large_rows:,} / {small_rows:,} rows: {result['rss_ratio_large_vs_small']:.3f}x "
            f"(target <= {TARGETS['rss_ratio']}x): {'pass' if result['rss_ratio_pass'] else 'FAIL'}"
        )
        print(
            f"peak RSS (tree) at {large_rows:,} rows: {result['large_rss_gb']:.2f} GB (target <= "
            f"{TARGETS['rss_gb']} GB): {'pass' if result['large_rss_pass'] else 'FAIL'}"
        )
        print(
            f"train-loop samples/s, streaming / in memory: {result['throughput_streaming_vs_memory']:.3f}x "
            f"(target >= {TARGETS['throughput_ratio']}x): {'pass' if result['throughput_pass'] else 'FAIL'}"
        )
        print(
            f"eval AUC, |streaming - in memory|: {result['auc_difference']:.5f} (target <= "
            f"{TARGETS['auc_difference']}): {'pass' if result['auc_pass'] else 'FAIL'}"
        )
    else:
        print("\na run failed: no ratios")
    print(json.dumps({"generate": {small_rows: small_generate, large_rows: large_generate}, "runs": runs, **result}))


if __name__ == "__main__":
    main()

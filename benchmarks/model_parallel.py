"""``distributed=model_parallel`` (torchrec) against ``distributed=ddp`` on 2 CPU workers of this machine, side by side
in one run (issue 19): what sharding the tables costs in samples/s, and the largest table each way trains.

Both ways train DeepFM on ``data=synthetic`` whose field C1 is hashed into ``--rows`` buckets (its embedding table has
that many rows) next to the 25 other Criteo-like fields, with ``optimizer=sparse_dense`` (Adagrad on the tables, Adam
on the rest: sparse gradients under ddp, fbgemm's fused exact Adagrad under model_parallel), 2 workers x
``data.batch_size`` rows a step:

1. throughput: ``--steps`` steps each way at ``--rows`` rows (``train/loop_samples_per_s`` of the run, evaluation
   excluded), and model_parallel / ddp. No speed-up is expected on one machine: sharding adds an all-to-all of ids
   and embeddings to every step; the point is what it costs.
2. the largest table: each way, C1's table doubles from ``--start-rows`` (a few steps each, one run at a time)
   until a run fails; a run refused by easyrec's memory check (it estimates parameters, gradients and optimizer
   state of this worker before allocating) counts as not training, as does one that fails otherwise. The peak RSS
   of every run's process tree is measured.

    python benchmarks/model_parallel.py --quick   # 1,000,000-row table, 30 steps; sizes up to 16,000,000 rows
    python benchmarks/model_parallel.py           # 2,000,000-row table, 100 steps; sizes until one fails

It prints the tables, the ratio, and as its last line one JSON object with every number. Run it alone: the sizes
it tries fill this machine's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import easyrec, measured  # noqa: E402  (one measuring helper for the benchmarks)

ROOT = Path(__file__).resolve().parents[1]
WAYS = {"ddp": ["distributed=ddp"], "model_parallel": ["distributed=model_parallel"]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000,000 rows, 30 steps, sizes up to 16,000,000")
    parser.add_argument("--rows", type=int, help="C1's table rows in the throughput runs (2,000,000)")
    parser.add_argument("--steps", type=int, help="steps of each throughput run (100; --quick: 30)")
    parser.add_argument("--start-rows", type=int, default=4_000_000, help="first size of the largest-table search")
    parser.add_argument("--max-rows", type=int, help="stop the search there (none; --quick: 16,000,000)")
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS), help="which ways (both)")
    parser.add_argument("--embedding-dim", type=int, default=16, help="model.embedding_dim (16)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(os.environ.get("BENCH_WORK", ROOT / "bench-work")) / "model_parallel",
        help="where the runs go (default: $BENCH_WORK/model_parallel or ./bench-work/model_parallel)",
    )
    parser.add_argument("overrides", nargs="*", help="more `easyrec train` overrides for every run")
    args = parser.parse_args()
    args.rows = args.rows or (1_000_000 if args.quick else 2_000_000)
    args.steps = args.steps or (30 if args.quick else 100)
    args.max_rows = args.max_rows or (16_000_000 if args.quick else None)
    return args


def trained(args: argparse.Namespace, way: str, rows: int, steps: int) -> dict:
    """``steps`` steps of 2 workers ``way`` with C1 hashed into ``rows`` buckets: measured, with its metrics."""
    label = f"{way}-{rows}-{steps}"
    run_dir = args.work / "runs" / label
    others = ",".join(f"C{i}" for i in range(2, 27))
    overrides = [
        *WAYS[way],
        "distributed.nproc_per_node=2",
        "data=synthetic",
        "data.num_rows=200000",
        f"data.features.categorical=[{{names:[C1],encoding:hash,num_buckets:{rows}}},{{names:[{others}]}}]",
        f"model.embedding_dim={args.embedding_dim}",
        "optimizer=sparse_dense",
        f"trainer.max_steps={steps}",
        f"trainer.log_every_n_steps={max(1, steps // 4)}",
        "trainer.progress_bar=false",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        *args.overrides,
    ]
    print(f"=== {label}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    result = measured(easyrec("train", *overrides), args.work / f"{label}.log")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # tens of GB at the largest sizes: the next one's disk
    if result["rc"] != 0:
        why = last_line(args.work / f"{label}.log")
        print(f"  {label}: failed (rc {result['rc']}): {why}", flush=True)
        return {**result, "error": why}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {**result, "samples_per_s": metrics["train/loop_samples_per_s"], "auc": metrics["eval/auc"]}


def last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def largest(args: argparse.Namespace, way: str) -> tuple[int | None, list[dict]]:
    """The largest C1 table (rows) that trains ``way``, doubling from ``--start-rows``; and every attempt."""
    rows, best, attempts = args.start_rows, None, []
    while args.max_rows is None or rows <= args.max_rows:
        result = {"rows": rows, **trained(args, way, rows, steps=3)}
        attempts.append(result)
        if result["rc"] != 0:
            break
        best, rows = rows, rows * 2
    return best, attempts


def main() -> None:
    args = parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    speed = {way: trained(args, way, args.rows, args.steps) for way in args.ways}
    sizes = {way: largest(args, way) for way in args.ways}
    print(f"\n2 workers, {os.cpu_count()} CPUs; benchmark wall time {time.monotonic() - started:.0f} s\n")
    print("| way | C1 rows | steps | samples/s | eval AUC | tree peak RSS MB | wall s |\n|---|---|---|---|---|---|---|")
    for way, row in speed.items():
        samples = f"{row['samples_per_s']:,.0f}" if "samples_per_s" in row else f"failed (rc {row['rc']})"
        auc = f"{row['auc']:.4f}" if "auc" in row else ""
        print(
            f"| {way} | {args.rows:,} | {args.steps} | {samples} | {auc} | {row['tree_peak_rss_mb']:,} "
            f"| {row['wall_s']} |"
        )
    ratio = None
    if len(speed) == len(WAYS) and all("samples_per_s" in row for row in speed.values()):
        ratio = speed["model_parallel"]["samples_per_s"] / speed["ddp"]["samples_per_s"]
        print(f"\nsamples/s, model_parallel / ddp: {ratio:.3f}x")
    print("\n| way | C1 rows | trains | tree peak RSS MB | wall s | why not |\n|---|---|---|---|---|---|")
    for way, (_, attempts) in sizes.items():
        for row in attempts:
            print(
                f"| {way} | {row['rows']:,} | {'yes' if row['rc'] == 0 else 'no'} | {row['tree_peak_rss_mb']:,} "
                f"| {row['wall_s']} | {row.get('error', '')} |"
            )
    for way, (best, attempts) in sizes.items():
        capped = attempts[-1]["rc"] == 0
        shown = f"{best:,} rows" if best else "none tried trained"
        print(
            f"largest C1 table that trains with {way}: {shown}{' (the search stopped at --max-rows)' if capped else ''}"
        )
    summary = {way: {"largest_rows": best, "attempts": attempts} for way, (best, attempts) in sizes.items()}
    print(json.dumps({"throughput": speed, "ratio_model_parallel_vs_ddp": ratio, "largest": summary}))


if __name__ == "__main__":
    main()

"""easyrec's train loop on one GPU: samples/s of ``easyrec train`` beside a bare PyTorch loop, in one run.

The job is the benchmark's DeepFM (embedding 16, MLP 400-400-400) on easyrec's synthetic Criteo-like data
(``data=synthetic``, 1,000,000 rows generated in memory, 90% train), batch 4096. Every easyrec job is a fresh
``python -m easyrec train`` process with MLflow logging to a local SQLite store (``logger=none`` once, to measure what
logging costs); its train-loop samples/s and eval AUC come from the run's ``metrics.json``. The bare loop trains the
same model class in the same process as this script: the split preloaded on the GPU, batches sliced from a
per-epoch ``randperm``, ``torch.optim.Adam(fused=True)``, no logging, no evaluation between epochs: the card's
limit for this model without a framework around it. Both are timed from their first step (CUDA's warm-up included),
over the same number of epochs.

    python benchmarks/on_gpu.py                   # about 3 minutes on an H100/H200
    python benchmarks/on_gpu.py --device cpu --rows 20000 --epochs 1   # a dry run of the script on a CPU

It prints one table, then as its last line one JSON object with every job's samples/s and AUC.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from vs_peers import run_logged

# (label, overrides): dense Adam is the GPU's natural choice (one fused kernel over every table), LazyAdam the
# CPU benchmark's; the batch of 16384 shows how far per-step overheads limit batch 4096
JOBS = [
    ("adam", ["optimizer=adam"]),
    ("adam-fused", ["optimizer=adam", "optimizer.fused=true"]),
    ("adam-fused-nolog", ["optimizer=adam", "optimizer.fused=true", "logger=none"]),
    ("lazy_adam", ["optimizer=lazy_adam"]),
    ("adam-fused-b16384", ["optimizer=adam", "optimizer.fused=true", "data.batch_size=16384"]),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows (train + eval)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of every job (more steps: less warm-up)")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--jobs", default=",".join(label for label, _ in JOBS), help="comma-separated labels")
    parser.add_argument("--work", type=Path, default=None, help="run directories (default: a temporary one)")
    return parser.parse_args()


def easyrec_job(label: str, overrides: list[str], args: argparse.Namespace, work: Path) -> dict:
    """One ``easyrec train`` process; its metrics.json figures, wall seconds and peak RSS."""
    run_dir = work / label
    command = [
        sys.executable,
        "-m",
        "easyrec",
        "train",
        f"data.num_rows={args.rows}",
        f"data.batch_size={args.batch}",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.device={args.device}",
        "trainer.progress_bar=false",
        "trainer.restore_best=false",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    if "logger=none" not in overrides:
        command.append(f"logger.tracking_uri=sqlite:///{work}/mlflow.db")
    rc, wall, rss = run_logged(command, work / f"{label}.log", None, work)
    if rc != 0:
        print(f"  {label}: failed (rc {rc}), see {work / label}.log", flush=True)
        return {"rc": rc}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "samples_per_s": metrics["train/loop_samples_per_s"],
        "train_loop_s": metrics["train/seconds"] - metrics["train/eval_seconds"],
        "wall_s": wall,
        "peak_rss_mb": rss,
        "auc": metrics["eval/auc"],
        "oracle_auc": metrics.get("eval/oracle_auc"),
    }


def bare_loop(args: argparse.Namespace) -> dict:
    """The same DeepFM trained by a minimal loop on preloaded device tensors (see the module docstring)."""
    import torch
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from easyrec.metrics.binary import binary_metrics

    with initialize_config_module("easyrec.conf", version_base="1.3"):
        cfg = compose("train", [f"data.num_rows={args.rows}", f"data.batch_size={args.batch}"])
    data = instantiate(cfg.data)
    data.setup()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = instantiate(cfg.model)(inputs=data.input_spec).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    dense, sparse, labels = (t.to(device) for t in (data.train.dense, data.train.sparse, data.train.labels))
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def epoch() -> int:
        order = torch.randperm(len(labels), device=device)
        for start in range(0, len(labels), args.batch):
            index = order[start : start + args.batch]
            loss = loss_fn(model(dense[index], sparse[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return len(labels)

    start = time.perf_counter()
    rows = sum(epoch() for _ in range(args.epochs))
    if device.type == "cuda":
        torch.cuda.synchronize()  # the kernels launched so far have run
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        logits = [model(b.dense.to(device), b.sparse.to(device)).float().cpu() for b in data.eval_batches()]
    auc = binary_metrics(torch.sigmoid(torch.cat(logits)), data.eval.labels)["auc"]
    return {"samples_per_s": rows / seconds, "train_loop_s": seconds, "auc": auc}


def main() -> None:
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="easyrec-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    wanted = {name.strip() for name in args.jobs.split(",")}
    started = time.monotonic()
    results = {}
    print("=== bare loop", flush=True)
    results["bare-loop"] = bare_loop(args)
    for label, overrides in JOBS:
        if label in wanted:
            print(f"=== {label}", flush=True)
            results[label] = easyrec_job(label, overrides, args, work)
    base = results["bare-loop"]["samples_per_s"]
    print(f"\n{args.rows:,} synthetic rows, batch {args.batch}, {args.epochs} epochs, device {device_name(args)}")
    print("| job | train samples/s | vs bare loop | train loop s | wall s | peak RSS MB | eval AUC |")
    print("|---|---|---|---|---|---|---|")
    for label, row in results.items():
        if row.get("rc"):
            print(f"| {label} | failed (rc {row['rc']}) | | | | | |")
            continue
        rss = f"{row['peak_rss_mb']:,}" if "peak_rss_mb" in row else ""
        wall = f"{row['wall_s']:.1f}" if "wall_s" in row else ""
        print(
            f"| {label} | {row['samples_per_s']:,.0f} | {row['samples_per_s'] / base:.2f}x | "
            f"{row['train_loop_s']:.2f} | {wall} | {rss} | {row['auc']:.4f} |"
        )
    print(f"({time.monotonic() - started:.0f} s in all; run directories in {work})")
    summary = {"device": device_name(args), "rows": args.rows, "batch": args.batch, "epochs": args.epochs}
    summary.update({label: {k: round(v, 4) for k, v in row.items() if v is not None} for label, row in results.items()})
    print(json.dumps(summary))


def device_name(args: argparse.Namespace) -> str:
    if args.device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name()
    return args.device


if __name__ == "__main__":
    main()

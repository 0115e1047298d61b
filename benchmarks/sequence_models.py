"""DIN against DeepFM on the synthetic data with a behaviour history: eval AUC, its gap to the oracle, samples/s.

``experiment=din`` draws a target ``item``, its ``tags`` and the user's ``history`` of items, whose strongest match
with the target enters the true click probability (``easyrec/data/synthetic.py``, ``Behaviour``): target attention
over the history can find it, a pooled history cannot. This script trains, one after the other in one process
with ``easyrec.run.train`` (the code path of ``easyrec train``), on the same rows, seed and epochs:

* ``din``: ``experiment=din`` (attention over the history, the item as the query);
* ``deepfm, pooled history``: ``experiment=din model=deepfm`` (the history mean-pooled, as every pooling model
  sees it);
* ``deepfm, no history``: ``experiment=din model=deepfm data.features.sequence=[]``;

reads ``eval/auc``, ``eval/oracle_auc``, ``eval/logloss`` and ``train/loop_samples_per_s`` (rows per second of
the training loop, evaluation excluded) from each run's ``metrics.json``, and prints them side by side as a
Markdown table (the gap to the oracle, DIN's lead, the samples/s relative to the pooled DeepFM's), then one JSON
object. It exits with status 1 if DIN's eval AUC is not above the pooled DeepFM's by at least ``MARGIN`` (issue 21).

Run from the repository root (the default 1M rows, 2 epochs each: tens of minutes on 2 CPU cores)::

    python benchmarks/sequence_models.py
    python benchmarks/sequence_models.py data.num_rows=200000 trainer.max_epochs=1   # extra args: overrides
    python benchmarks/sequence_models.py --runs din deepfm_pooled                      # a subset
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from easyrec.run import train

#: How far DIN's eval AUC must be above DeepFM's with the pooled history (issue 21).
MARGIN = 0.01
#: name -> (what it is, its overrides on top of experiment=din)
RUNS = {
    "din": ("DIN", []),
    "deepfm_pooled": ("DeepFM, pooled history", ["model=deepfm"]),
    "deepfm_no_history": ("DeepFM, no history", ["model=deepfm", "data.features.sequence=[]"]),
}
BASELINE = "deepfm_pooled"


def run(overrides: list[str], directory: Path) -> dict[str, float]:
    """The final metrics (``metrics.json``) and the wall seconds of one ``easyrec train`` run with ``overrides``."""
    with initialize_config_module(config_module="easyrec.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    start = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):  # the run's table of final metrics
        train(cfg, directory)
    metrics = json.loads((directory / "metrics.json").read_text())
    return {**metrics, "wall_seconds": time.monotonic() - start}


def table(results: dict[str, dict[str, float]]) -> str:
    """The runs side by side as a Markdown table."""
    din, baseline = results.get("din"), results.get(BASELINE)
    lines = [
        "| run | eval AUC | vs DIN | oracle AUC | gap to oracle | eval logloss | train samples/s | vs pooled DeepFM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, metrics in results.items():
        auc, oracle = metrics["eval/auc"], metrics["eval/oracle_auc"]
        speed = metrics["train/loop_samples_per_s"]
        lead = f"{auc - din['eval/auc']:+.4f}" if din and name != "din" else "-"
        relative = f"{speed / baseline['train/loop_samples_per_s']:.2f}x" if baseline else "-"
        lines.append(
            f"| {RUNS[name][0]} | {auc:.4f} | {lead} | {oracle:.4f} | {oracle - auc:.4f} | "
            f"{metrics['eval/logloss']:.4f} | {speed:,.0f} | {relative} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="which runs (default all)")
    parser.add_argument("overrides", nargs="*", help="easyrec train overrides for every run")
    args = parser.parse_args()
    logging.getLogger("easyrec").setLevel(logging.WARNING)
    base = ["experiment=din", "logger=none", "trainer.progress_bar=false", *args.overrides]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"every run: {' '.join(base)}", flush=True)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs:
            overrides = base + RUNS[name][1]
            results[name] = run(overrides, Path(tmp) / name)
            metrics = results[name]
            print(
                f"{RUNS[name][0]} ({' '.join(RUNS[name][1]) or 'experiment=din'}): eval AUC {metrics['eval/auc']:.4f}, "
                f"oracle {metrics['eval/oracle_auc']:.4f}, {metrics['train/loop_samples_per_s']:,.0f} samples/s, "
                f"{metrics['wall_seconds']:.0f} s",
                flush=True,
            )
    print(table(results))
    keys = ("eval/auc", "eval/oracle_auc", "eval/logloss", "train/loop_samples_per_s", "wall_seconds")
    print(json.dumps({name: {key: metrics[key] for key in keys} for name, metrics in results.items()}))
    if "din" not in results or BASELINE not in results:
        return 0
    lead = results["din"]["eval/auc"] - results[BASELINE]["eval/auc"]
    ok = lead >= MARGIN
    print(
        f"{'PASS' if ok else 'FAIL'}: DIN - DeepFM with the pooled history = {lead:+.4f} eval AUC (needs >= {MARGIN})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

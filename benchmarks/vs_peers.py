"""easyrec against its peers and a plain PyTorch loop, on the same data, in one run: one table of ratios.

The references come from the team's harness (``../shared/bench``, see its README): the same DeepFM (embedding 16,
MLP 400-400-400, no dropout, Adam-class optimizer, 2 threads) written as a plain PyTorch loop with dense and with
sparse embedding gradients, with DeepCTR-Torch and with FuxiCTR. easyrec trains it through its own CLI
(``python -m easyrec train data=csv ...``) from the same CSV files, with MLflow logging on (and once more with
``logger=none``, to measure what logging costs, and once with the training split streamed from the file by one
loader worker, ``data.streaming=true data.num_workers=1``: the easyrec-streaming rows, whose peak RSS is the
trainer's alone; benchmarks/streaming.py measures the whole process tree). Every run is a fresh process, one at a
time; the harness's ``run.sh`` measures the peers, and this script measures easyrec the same way (wall time from
start to exit, peak RSS from ``wait4``).

Datasets: the harness's synthetic Criteo-like set (1,000,000 rows, 90% train; ``--quick``: 200,000) at batch
4096 for 1 epoch, and Frappe (real, 57,722 train rows) at batch 1024 for 1 and 10 epochs (``--quick``: 1).

    python benchmarks/vs_peers.py              # about 15 minutes on 2 cores (first time: +3 min of set-up)
    python benchmarks/vs_peers.py --quick      # under 5 minutes
    python benchmarks/vs_peers.py --repeat 3   # medians of 3 runs of every job, interleaved

It prints the table, then as its last line one JSON object with the headline ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("deepctr", "fuxictr")  # the frameworks; "plain" and "plainsparse" are hand-written references


@dataclass
class Job:
    """One measured configuration: a peer script of the harness, or an easyrec command line."""

    label: str
    dataset: str  # "synth" or "frappe"
    epochs: int
    batch: int
    script: str | None = None  # a harness script, with ``args``
    args: list[str] = field(default_factory=list)
    easyrec: list[str] | None = None  # easyrec train overrides


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 synthetic rows and 1 Frappe epoch")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every job (medians are reported)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the team's shared folder")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(os.environ.get("BENCH_WORK", ROOT / "bench-work")),
        help="where the harness's venv, data and results go (default: $BENCH_WORK or ./bench-work)",
    )
    parser.add_argument("--skip", default="", help="comma-separated peers to leave out (e.g. fuxictr)")
    parser.add_argument("--datasets", default="synth,frappe", help="comma-separated: synth, frappe")
    return parser.parse_args()


def run_logged(command: list[str], log: Path, env: dict[str, str], cwd: Path) -> tuple[int, float, int]:
    """Run ``command`` to its end with its output in ``log``: (exit status, wall seconds, peak RSS in MB)."""
    start = time.monotonic()
    with log.open("w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(child.pid, 0)
    return os.waitstatus_to_exitcode(status), time.monotonic() - start, usage.ru_maxrss // 1024


def settle(idle: float = 0.9, patience_s: float = 60.0) -> None:
    """Wait (at most ``patience_s``) until the CPUs are ``idle`` for one second, so that what a run leaves behind
    (FuxiCTR's Ray processes shut down for several seconds after it exits) does not slow the next run."""

    def times() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        idle_before, total_before = times()
        time.sleep(1.0)
        idle_after, total_after = times()
        if (idle_after - idle_before) >= idle * max(total_after - total_before, 1):
            return


class Bench:
    """The harness's set-up, data and runs under ``work``, and easyrec's runs beside them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.harness = (args.shared / "bench").resolve()
        if not (self.harness / "run.sh").is_file():
            sys.exit(f"vs_peers: {self.harness}/run.sh not found: pass --shared DIR (the folder that holds bench/)")
        self.work = args.work.resolve()
        self.rows = 200_000 if args.quick else 1_000_000
        # the synthetic set's size is part of its path, so that a quick run never reuses the full data
        self.data_work = self.work / ("quick" if args.quick else "full")
        self.python = self.work / "venv" / "bin" / "python"
        self.easyrec_dir = self.data_work / "easyrec"
        self.env = {
            **os.environ,
            "BENCH_WORK": str(self.data_work),
            "BENCH_PYTHON": str(self.python),
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def prepare(self) -> None:
        """The harness's venv (once), the synthetic set at ``rows`` and Frappe, each made when missing."""
        if not self.python.exists():
            print(f"setting up the harness's venv in {self.work}/venv (a few minutes, once)", flush=True)
            subprocess.run(
                ["bash", self.harness / "setup.sh"], env={**self.env, "BENCH_WORK": str(self.work)}, check=True
            )
        synth = self.data_work / "data" / "synth"
        meta = synth / "meta.json"
        if not meta.exists() or json.loads(meta.read_text())["n"] != self.rows or not (synth / "train.csv").exists():
            subprocess.run(
                [self.python, self.harness / "gen_synth.py", "--rows", str(self.rows)], env=self.env, check=True
            )
        if not (self.data_work / "data" / "frappe" / "data.npz").exists():
            subprocess.run([self.python, self.harness / "prep_frappe.py"], env=self.env, check=True)
        self.easyrec_dir.mkdir(parents=True, exist_ok=True)
        # warm-up, as the harness does: the first process start after a while is slow, and the first run creates
        # the MLflow store (an existing store is the usual case)
        warmup = ["data.num_rows=2000", "trainer.progress_bar=false", f"hydra.run.dir={self.easyrec_dir}/warmup"]
        command = [sys.executable, "-m", "easyrec", "train", *warmup, *self.logger_args]
        rc, _, _ = run_logged(command, self.easyrec_dir / "warmup.log", self.env, self.easyrec_dir)
        if rc != 0:
            sys.exit(f"vs_peers: easyrec's warm-up run failed (rc {rc}), see {self.easyrec_dir}/warmup.log")

    @property
    def logger_args(self) -> list[str]:
        return [f"logger.tracking_uri=sqlite:///{self.easyrec_dir}/mlflow.db", "logger.experiment_name=vs_peers"]

    def meta(self, dataset: str) -> dict:
        return json.loads((self.data_work / "data" / dataset / "meta.json").read_text())

    def easyrec_data(self, dataset: str, batch: int) -> list[str]:
        """easyrec's overrides that read a dataset's CSV files (Frappe: 10 categorical fields, no dense ones)."""
        folder = self.data_work / "data" / dataset
        args = ["data=csv", f"data.train_path={folder}/train.csv", f"data.eval_path={folder}/test.csv"]
        if dataset == "frappe":
            fields = ",".join(self.meta("frappe")["fields"])
            args += ["data.features.dense=[]", f"data.features.categorical=[{{names:[{fields}]}}]"]
        return args + [f"data.batch_size={batch}"]

    def run(self, job: Job, label: str) -> dict:
        if job.script is not None:
            return self._run_peer(job, label)
        return self._run_easyrec(job, label)

    def _run_peer(self, job: Job, label: str) -> dict:
        command = ["bash", str(self.harness / "run.sh"), label, job.script, *job.args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        row = json.loads(lines[-1]) if lines else {"error": done.stderr.strip()[-500:], "rc": done.returncode}
        if row.get("rc"):
            print(f"  {label}: failed (rc {row['rc']}), see {self.data_work}/results/logs/{label}.log", flush=True)
        return row

    def _run_easyrec(self, job: Job, label: str) -> dict:
        run_dir = self.easyrec_dir / label
        command = [
            sys.executable,
            "-m",
            "easyrec",
            "train",
            *self.easyrec_data(job.dataset, job.batch),
            f"trainer.max_epochs={job.epochs}",
            "trainer.progress_bar=false",
            "trainer.restore_best=false",  # report the last epoch, as the peers do
            f"data.cache_dir={run_dir}/cache",  # cold: every run reads and encodes the CSV files
            f"hydra.run.dir={run_dir}",
            *job.easyrec,
        ]
        if "logger=none" not in job.easyrec:
            command += self.logger_args
        log = self.easyrec_dir / f"{label}.log"
        rc, wall, rss = run_logged(command, log, self.env, self.easyrec_dir)
        if rc != 0:
            print(f"  {label}: failed (rc {rc}), see {log}", flush=True)
            return {"rc": rc}
        metrics = json.loads((run_dir / "metrics.json").read_text())
        loop = metrics["train/seconds"] - metrics["train/eval_seconds"]
        return {
            "samples_per_s": metrics["train/loop_samples_per_s"],
            "train_loop_s": loop,
            "wall_s": wall,
            "peak_rss_mb": rss,
            "auc": metrics["eval/auc"],
            "logloss": metrics["eval/logloss"],
            "precision": metrics.get("precision", "fp32"),  # what it trained in: bf16 falls back without native bf16
            "rc": 0,
        }

    def cfg_job_seconds(self, runs: int = 3) -> float:
        """Median wall time of ``easyrec train --cfg job`` (print the composed config and exit)."""
        times = []
        for _ in range(runs):
            start = time.monotonic()
            subprocess.run([sys.executable, "-m", "easyrec", "train", "--cfg", "job"], capture_output=True, check=True)
            times.append(time.monotonic() - start)
        return statistics.median(times)


def jobs(quick: bool, skip: set[str], datasets: set[str]) -> list[Job]:
    """Synth at batch 4096 for 1 epoch; Frappe at batch 1024 for 1 (and 10) epochs; every peer and easyrec."""
    found: list[Job] = []
    plan = [("synth", 4096, 1), ("frappe", 1024, 1)] + ([] if quick else [("frappe", 1024, 10)])
    for dataset, batch, epochs in [entry for entry in plan if entry[0] in datasets]:
        tag = f"{dataset}_e{epochs}"
        common = ["--data", dataset, "--batch", str(batch), "--epochs", str(epochs)]
        peers = [
            Job(f"plain_{tag}", dataset, epochs, batch, "bench_plain.py", common),
            Job(f"plainsparse_{tag}", dataset, epochs, batch, "bench_plain.py", [*common, "--sparse"]),
            Job(f"deepctr_{tag}", dataset, epochs, batch, "bench_deepctr.py", common),
            Job(f"fuxictr_{tag}", dataset, epochs, batch, "bench_fuxictr.py", common),
        ]
        found += [job for job in peers if job.label.split("_")[0] not in skip]
        # synth: sparse rows (LazyAdam), MLflow on and off; Frappe: dense Adam like the peers; both also in bf16
        optimizer = "optimizer=lazy_adam" if dataset == "synth" else "optimizer=adam"
        found.append(Job(f"easyrec_{tag}", dataset, epochs, batch, easyrec=[optimizer]))
        # the same run with the training split streamed from the file by a loader worker (issue 18)
        streaming = [optimizer, "data.streaming=true", "data.num_workers=1"]
        found.append(Job(f"easyrec-streaming_{tag}", dataset, epochs, batch, easyrec=streaming))
        if dataset == "synth":
            found.append(Job(f"easyrec-nolog_{tag}", dataset, epochs, batch, easyrec=[optimizer, "logger=none"]))
        bf16 = [optimizer, "trainer.precision=bf16"]
        found.append(Job(f"easyrec-bf16_{tag}", dataset, epochs, batch, easyrec=bf16))
    return found


def names(text: str) -> set[str]:
    """``"a, b"`` -> ``{"a", "b"}``."""
    return {name.strip() for name in text.split(",") if name.strip()}


def median_row(rows: list[dict]) -> dict:
    """Medians of the numbers of repeated runs (the max of peak RSS); a failed run makes the row failed."""
    if any(row.get("rc") for row in rows):
        return {"rc": next(row["rc"] for row in rows if row.get("rc"))}
    keys = ("samples_per_s", "train_loop_s", "wall_s", "auc", "logloss")
    out = {key: statistics.median(row[key] for row in rows) for key in keys}
    out["peak_rss_mb"] = max(row["peak_rss_mb"] for row in rows)
    if "precision" in rows[0]:
        out["precision"] = rows[0]["precision"]
    return out


def table(results: dict[str, dict], reference: dict[str, str]) -> str:
    """A markdown table: one line per job, with samples/s as a ratio to the plain sparse loop of its dataset."""
    head = "| job | train samples/s | vs plain sparse | train loop s | wall s | peak RSS MB | AUC | logloss |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for label, row in results.items():
        if row.get("rc"):
            lines.append(f"| {label} | failed (rc {row['rc']}) |  |  |  |  |  |  |")
            continue
        base = results.get(reference[label], {}).get("samples_per_s")
        ratio = f"{row['samples_per_s'] / base:.2f}x" if base else ""
        if label.startswith("easyrec-bf16") and row.get("precision") == "fp32":
            label += " (no native bf16: fell back to fp32)"
        lines.append(
            f"| {label} | {row['samples_per_s']:,.0f} | {ratio} | {row['train_loop_s']:.1f} | {row['wall_s']:.1f} "
            f"| {row['peak_rss_mb']:,} | {row['auc']:.4f} | {row['logloss']:.4f} |"
        )
    return "\n".join(lines)


def summary(results: dict[str, dict], bench: Bench, cfg_job_s: float) -> dict:
    """The headline numbers: easyrec against the best peer and the plain sparse loop, on the synthetic set."""

    def get(label: str, key: str) -> float | None:
        return results.get(label, {}).get(key)

    tag = "synth_e1"
    mine, sparse = get(f"easyrec_{tag}", "samples_per_s"), get(f"plainsparse_{tag}", "samples_per_s")
    peers = [(get(f"{p}_{tag}", "samples_per_s"), p) for p in PEERS if get(f"{p}_{tag}", "samples_per_s")]
    best_speed, best_peer = max(peers) if peers else (None, None)
    oracle = bench.meta("synth")["oracle_test"]["auc"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    frappe = {}
    for epochs in (1, 10):
        auc = get(f"easyrec_frappe_e{epochs}", "auc")
        peer_aucs = [get(f"{p}_frappe_e{epochs}", "auc") for p in PEERS]
        peer_aucs = [a for a in peer_aucs if a is not None]
        if auc is not None and peer_aucs:
            frappe[f"e{epochs}"] = {
                "easyrec_auc": round(auc, 4),
                "easyrec_bf16_auc": round(get(f"easyrec-bf16_frappe_e{epochs}", "auc") or 0, 4),
                "best_peer_auc": round(max(peer_aucs), 4),
            }
    nolog = get(f"easyrec-nolog_{tag}", "samples_per_s")
    streaming = get(f"easyrec-streaming_{tag}", "samples_per_s")
    bf16 = get(f"easyrec-bf16_{tag}", "samples_per_s")
    return {
        "dataset": f"synth-{bench.rows}",
        "easyrec_samples_per_s": round(mine) if mine else None,
        "best_peer": best_peer,
        "best_peer_samples_per_s": round(best_speed) if best_speed else None,
        "plain_sparse_samples_per_s": round(sparse) if sparse else None,
        "easyrec_vs_best_peer": ratio(mine, best_speed),
        "easyrec_vs_plain_sparse": ratio(mine, sparse),
        "easyrec_auc": round(get(f"easyrec_{tag}", "auc"), 4) if mine else None,
        "easyrec_streaming_samples_per_s": round(streaming) if streaming else None,
        "easyrec_streaming_vs_in_memory": ratio(streaming, mine),
        "easyrec_streaming_auc": round(get(f"easyrec-streaming_{tag}", "auc"), 4) if streaming else None,
        "easyrec_streaming_peak_rss_mb": get(f"easyrec-streaming_{tag}", "peak_rss_mb"),
        "easyrec_bf16_samples_per_s": round(bf16) if bf16 else None,
        "easyrec_bf16_vs_plain_sparse": ratio(bf16, sparse),
        "easyrec_bf16_auc": round(get(f"easyrec-bf16_{tag}", "auc"), 4) if bf16 else None,
        "easyrec_bf16_fell_back": results.get(f"easyrec-bf16_{tag}", {}).get("precision") == "fp32",
        "best_peer_auc": round(get(f"{best_peer}_{tag}", "auc"), 4) if best_peer else None,
        "oracle_auc": round(oracle, 4),
        "easyrec_oracle_gap": round(oracle - get(f"easyrec_{tag}", "auc"), 4) if mine else None,
        "easyrec_wall_s": round(get(f"easyrec_{tag}", "wall_s"), 1) if mine else None,
        "easyrec_peak_rss_mb": get(f"easyrec_{tag}", "peak_rss_mb"),
        "best_peer_peak_rss_mb": get(f"{best_peer}_{tag}", "peak_rss_mb") if best_peer else None,
        "logging_cost": round(1 - mine / nolog, 4) if mine and nolog else None,
        "cfg_job_s": round(cfg_job_s, 2),
        "frappe": frappe,
    }


def main() -> None:
    args = parse_args()
    bench = Bench(args)
    bench.prepare()
    todo = jobs(args.quick, names(args.skip), names(args.datasets))
    runs: dict[str, list[dict]] = {job.label: [] for job in todo}
    started = time.monotonic()
    for repeat in range(args.repeat):
        for job in todo:  # interleaved: each repeat runs every job once
            label = job.label if args.repeat == 1 else f"{job.label}_r{repeat + 1}"
            settle()
            print(f"=== {label}", flush=True)
            runs[job.label].append(bench.run(job, label))
    results = {label: median_row(rows) for label, rows in runs.items()}
    reference = {job.label: f"plainsparse_{job.dataset}_e{job.epochs}" for job in todo}
    cfg_job_s = bench.cfg_job_seconds()
    print(
        f"\nsynthetic rows: {bench.rows:,} (90% train); runs per job: {args.repeat} (medians); "
        f"benchmark wall time {time.monotonic() - started:.0f} s\n"
    )
    print(table(results, reference))
    print(f"\n`easyrec train --cfg job`: {cfg_job_s:.2f} s (median of 3)")
    print(json.dumps(summary(results, bench, cfg_job_s)))


if __name__ == "__main__":
    main()

"""Step time of sparse-row optimizers against dense ones on a large embedding table, side by side in one run.

Setup: one ``FieldEmbedding`` of ``--rows`` rows (default 1,000,000) split over 26 fields whose cardinalities range
from tens to hundreds of thousands, width ``--dim``; each step looks up ``--batch`` × 26 Zipf-distributed ids (id k
of a field drawn with probability ∝ 1/(k+1), seeded, the same batches for every optimizer) and backpropagates the
sum of squares of the looked-up embeddings. With a dense gradient (``sparse=False``) the optimizer updates all rows;
with a sparse one (``sparse=True``) it updates only the rows the batch touched.

For every optimizer, after ``--warmup`` steps, it reports the median over ``--steps`` steps (``time.perf_counter``)
of forward + backward + ``optimizer.step()`` and of ``optimizer.step()`` alone, and each sparse variant's speed-up
over its dense counterpart in this same run: torch Adam vs ``easyrec.optim.LazyAdam`` and ``torch.optim.SparseAdam``,
Adagrad, SGD and ``easyrec.optim.Ftrl``, each dense vs sparse. It exits non-zero if LazyAdam is not at least
``REQUIRED_SPEEDUP`` times faster than dense Adam, step and optimizer step alike.

Run from the repository root (about a minute on 2 CPU cores)::

    python benchmarks/sparse_optimizers.py
    python benchmarks/sparse_optimizers.py --rows 10000000 --threads 8 --steps 50
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from easyrec.modules.embedding import FieldEmbedding
from easyrec.optim import Ftrl, LazyAdam

FIELDS = 26
#: How many times faster than dense Adam LazyAdam with sparse gradients must be, or the script fails.
REQUIRED_SPEEDUP = 2.0

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


@dataclass(frozen=True)
class Case:
    """One optimizer run: ``baseline`` names the dense case a sparse one is compared with."""

    name: str
    sparse: bool
    make: OptimizerFactory
    baseline: str


CASES = (
    Case("Adam", False, lambda params: torch.optim.Adam(params, lr=1e-3), "Adam"),
    Case("LazyAdam", True, lambda params: LazyAdam(params, lr=1e-3), "Adam"),
    Case("SparseAdam", True, lambda params: torch.optim.SparseAdam(params, lr=1e-3), "Adam"),
    Case("Adagrad", False, lambda params: torch.optim.Adagrad(params, lr=0.1), "Adagrad"),
    Case("Adagrad", True, lambda params: torch.optim.Adagrad(params, lr=0.1), "Adagrad"),
    Case("SGD", False, lambda params: torch.optim.SGD(params, lr=0.1), "SGD"),
    Case("SGD", True, lambda params: torch.optim.SGD(params, lr=0.1), "SGD"),
    Case("Ftrl", False, lambda params: Ftrl(params, lr=0.05), "Ftrl"),
    Case("Ftrl", True, lambda params: Ftrl(params, lr=0.05), "Ftrl"),
)


def cardinalities(rows: int) -> list[int]:
    """``FIELDS`` cardinalities growing by √2 per field (like Criteo's, tens to hundreds of thousands), summing to
    ``rows``."""
    weights = [2 ** (field / 2) for field in range(FIELDS)]
    sizes = [max(1, int(rows * weight / sum(weights))) for weight in weights]
    sizes[-1] += rows - sum(sizes)
    return sizes


def zipf_ids(sizes: list[int], batch: int, generator: torch.Generator) -> Tensor:
    """``(batch, FIELDS)`` local ids, id k of a field of n rows drawn with probability ∝ 1/(k+1) (log-uniform)."""
    rows = torch.tensor(sizes, dtype=torch.float64)
    uniform = torch.rand(batch, len(sizes), dtype=torch.float64, generator=generator)
    ids = (torch.exp(uniform * torch.log1p(rows)) - 1).long()
    return torch.minimum(ids, rows.long() - 1)


def measure(case: Case, sizes: list[int], dim: int, batches: list[Tensor], warmup: int) -> tuple[float, float]:
    """Median milliseconds of a whole training step and of ``optimizer.step()``, over the batches after warm-up."""
    torch.manual_seed(0)
    model = FieldEmbedding(sizes, dim, sparse=case.sparse)
    optimizer = case.make(list(model.parameters()))
    steps, updates = [], []
    for index, ids in enumerate(batches):
        optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(ids).square().sum().backward()
        backward_done = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        if index >= warmup:
            steps.append(end - start)
            updates.append(end - backward_done)
    return 1e3 * statistics.median(steps), 1e3 * statistics.median(updates)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the embedding table, all fields")
    parser.add_argument("--dim", type=int, default=16, help="embedding width")
    parser.add_argument("--batch", type=int, default=4096, help="examples per step, each with 26 field ids")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per optimizer (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per optimizer before the timed ones")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.rows < 100 * FIELDS:
        parser.error(f"--rows={args.rows}: needs at least {100 * FIELDS} ({FIELDS} fields)")
    if min(args.dim, args.batch, args.steps, args.threads) < 1 or args.warmup < 0:
        parser.error("--dim, --batch, --steps and --threads must be >= 1, --warmup >= 0")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    # the default, said explicitly: silences the warning sparse Adagrad raises when it is left implicit
    torch.sparse.check_sparse_tensor_invariants.disable()
    sizes = cardinalities(args.rows)
    generator = torch.Generator().manual_seed(0)
    batches = [zipf_ids(sizes, args.batch, generator) for _ in range(args.warmup + args.steps)]
    offsets = torch.tensor([0, *itertools.accumulate(sizes[:-1])])
    touched = int(statistics.median(batch.add(offsets).unique().numel() for batch in batches))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"table: {args.rows:,} rows x {args.dim} ({FIELDS} fields, {min(sizes):,} to {max(sizes):,} rows), "
        f"batch {args.batch} x {FIELDS} ids touching ~{touched:,} rows; median of {args.steps} steps "
        f"after {args.warmup} warm-up\n"
    )
    header = f"{'optimizer':<11} {'gradient':<8} {'step ms':>9} {'opt.step ms':>11} {'step speed-up':>13} "
    header += f"{'opt.step speed-up':>17}"
    print(header)
    print("-" * len(header))
    dense: dict[str, tuple[float, float]] = {}
    speedups: dict[str, tuple[float, float]] = {}
    for case in CASES:
        step_ms, update_ms = measure(case, sizes, args.dim, batches, args.warmup)
        if case.sparse:
            base_step, base_update = dense[case.baseline]
            speedups[case.name] = (base_step / step_ms, base_update / update_ms)
            ratios = f"{speedups[case.name][0]:>12.1f}x {speedups[case.name][1]:>16.1f}x"
        else:
            dense[case.name] = (step_ms, update_ms)
            ratios = f"{'(baseline)':>13} {'(baseline)':>17}"
        gradient = "sparse" if case.sparse else "dense"
        print(f"{case.name:<11} {gradient:<8} {step_ms:>9.1f} {update_ms:>11.1f} {ratios}", flush=True)
    step_speedup, update_speedup = speedups["LazyAdam"]
    if min(step_speedup, update_speedup) < REQUIRED_SPEEDUP:
        raise SystemExit(
            f"FAIL: sparse LazyAdam is not clearly faster than dense Adam: step {step_speedup:.1f}x, "
            f"optimizer.step {update_speedup:.1f}x (need >= {REQUIRED_SPEEDUP:.1f}x both)"
        )
    print(f"\nOK: sparse LazyAdam is >= {REQUIRED_SPEEDUP:.1f}x faster than dense Adam (step and optimizer.step)")


if __name__ == "__main__":
    main()

"""How much of the synthetic set's oracle AUC a model told the true structure learns from its rows.

easyrec's synthetic generator (``easyrec/data/synthetic.py``) draws clicks from a hidden model whose true
probabilities it keeps, so the oracle (Bayes-optimal) eval AUC is exact. The oracle knows every id's effect, also
for ids seen a handful of times in training; no learner does. This script fits the generator's own model family
to the training rows, told exactly which blocks exist (dense linear + one dense product, a first-order effect per
id, rank-4 factors for the 10 true field pairs, 2 dense x id effects) and nothing else, with L2 on the per-id
parameters, and reports its best eval AUC over the epochs and L2 strengths tried (chosen on the eval split
itself). It is a reference point for how much of the oracle's gap comes from the number of rows, not a strict
bound: the fit is stochastic (Adam, a few epochs, a small grid of L2 strengths), and on 10M rows DeepFM did a
little better than it (benchmarks/README.md).

    python benchmarks/synthetic_ceiling.py --rows 1000000         # a few minutes on 2 cores
    python benchmarks/synthetic_ceiling.py --rows 200000 --l2 0,1e-6

It prints one line per (L2, epoch), then one JSON object: rows, oracle AUC, the best AUC and its gap to the oracle.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import Tensor, nn

from easyrec.data.synthetic import DENSE_BY_CATEGORICAL, FIELD_PAIRS, NUM_CATEGORICAL, NUM_DENSE, generate_clicks
from easyrec.metrics.binary import binary_metrics


class WellSpecified(nn.Module):
    """The generator's logit family: ``b + w·z + c·z0·z1 + Σ_f e_f[id_f] + Σ_(f,g) <U_f[id_f], V_g[id_g]> +
    Σ_(j,f) z_j·a_f[id_f]``, on standardised ``z (B, 13)`` and ids ``(B, 26)``; returns logits ``(B,)``."""

    def __init__(self, vocab: list[int], rank: int = 4) -> None:
        super().__init__()
        self.dense = nn.Linear(NUM_DENSE, 1)
        self.product = nn.Parameter(torch.zeros(()))
        self.first = nn.ModuleList(nn.Embedding(v, 1) for v in vocab)
        self.u = nn.ModuleList(nn.Embedding(vocab[f], rank) for f, _ in FIELD_PAIRS)
        self.v = nn.ModuleList(nn.Embedding(vocab[g], rank) for _, g in FIELD_PAIRS)
        self.crossed = nn.ModuleList(nn.Embedding(vocab[f], 1) for _, f in DENSE_BY_CATEGORICAL)
        for table in self.first:
            nn.init.zeros_(table.weight)
        for table in [*self.u, *self.v]:
            nn.init.normal_(table.weight, std=0.1)  # factors start apart from 0, where their gradient vanishes
        for table in self.crossed:
            nn.init.zeros_(table.weight)

    def forward(self, z: Tensor, ids: Tensor) -> Tensor:
        logit = self.dense(z).squeeze(1) + self.product * z[:, 0] * z[:, 1]
        for f, table in enumerate(self.first):
            logit = logit + table(ids[:, f]).squeeze(1)
        for (f, g), u, v in zip(FIELD_PAIRS, self.u, self.v, strict=True):
            logit = logit + (u(ids[:, f]) * v(ids[:, g])).sum(1)
        for (j, f), table in zip(DENSE_BY_CATEGORICAL, self.crossed, strict=True):
            logit = logit + z[:, j] * table(ids[:, f]).squeeze(1)
        return logit

    def id_parameters(self) -> list[Tensor]:
        return [t.weight for t in [*self.first, *self.u, *self.v, *self.crossed]]


def load(rows: int, seed: int, eval_fraction: float) -> tuple[Tensor, ...]:
    """The generator's rows as ``z (N, 13)``, ids ``(N, 26) int64``, labels and true p, split like
    ``data=synthetic`` (the last ``eval_fraction`` of the rows are the eval split)."""
    table, probs = generate_clicks(rows, seed)
    dense = np.stack([table[f"I{j + 1}"].to_numpy() for j in range(NUM_DENSE)], axis=1).astype(np.float64)
    z = np.log1p(dense)
    z = (z - z.mean(0)) / (z.std(0) + 1e-9)  # as the generator standardises
    ids = np.stack([table[f"C{f + 1}"].to_numpy() for f in range(NUM_CATEGORICAL)], axis=1).astype(np.int64)
    labels = table["label"].to_numpy()
    num_eval = int(round(rows * eval_fraction))
    cut = rows - num_eval
    tensors = [torch.from_numpy(np.array(a)) for a in (z.astype(np.float32), ids, labels)]
    train = [t[:cut] for t in tensors]
    evaluation = [t[cut:] for t in tensors]
    return (*train, *evaluation, torch.from_numpy(probs["label"][cut:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="train + eval rows, as data.num_rows")
    parser.add_argument("--seed", type=int, default=42, help="as easyrec's seed")
    parser.add_argument("--eval-fraction", type=float, default=0.1)
    parser.add_argument("--l2", default="1e-6,3e-6,1e-5,3e-5", help="L2 strengths on the per-id parameters")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=2e-2)
    args = parser.parse_args()

    start = time.monotonic()
    z, ids, labels, eval_z, eval_ids, eval_labels, eval_p = load(args.rows, args.seed, args.eval_fraction)
    vocab = [int(c) for c in torch.maximum(ids.max(0).values, eval_ids.max(0).values) + 1]
    oracle = binary_metrics(eval_p, eval_labels)["auc"]
    print(f"{len(labels):,} train rows, {len(eval_labels):,} eval rows; oracle eval AUC {oracle:.4f}", flush=True)
    best = {"auc": 0.0}
    for l2 in (float(x) for x in args.l2.split(",")):
        torch.manual_seed(0)
        model = WellSpecified(vocab)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        for epoch in range(1, args.epochs + 1):
            model.train()
            for index in torch.randperm(len(labels)).split(args.batch):
                logits = model(z[index], ids[index])
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels[index])
                if l2:  # a Gaussian prior on the per-id effects
                    loss = loss + l2 * sum(p.square().sum() for p in model.id_parameters())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                chunks = zip(eval_z.split(65536), eval_ids.split(65536), strict=True)
                probs = torch.sigmoid(torch.cat([model(a, b) for a, b in chunks]))
            metrics = binary_metrics(probs, eval_labels)
            auc, logloss = metrics["auc"], metrics["logloss"]
            print(f"l2 {l2:g} epoch {epoch}: eval AUC {auc:.4f}, logloss {logloss:.4f}", flush=True)
            if metrics["auc"] > best["auc"]:
                best = {"auc": metrics["auc"], "logloss": metrics["logloss"], "l2": l2, "epoch": epoch}
    result = {
        "rows": args.rows,
        "oracle_auc": round(oracle, 4),
        "well_specified_auc": round(best["auc"], 4),
        "gap": round(oracle - best["auc"], 4),
        "best": best,
        "seconds": round(time.monotonic() - start, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

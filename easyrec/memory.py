"""What training a model takes in memory, and what the machine has: a run that cannot fit is refused before it
builds anything (``trainer.memory_check``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from easyrec.optim.build import Optimizer, inner_optimizers
from easyrec.optim.row_wise_adagrad import RowWiseAdagrad


def state_slots(optimizer: torch.optim.Optimizer, group: dict) -> int:
    """Tensors of a parameter's size that ``optimizer`` keeps for each parameter of ``group``."""
    if isinstance(optimizer, torch.optim.Adam | torch.optim.SparseAdam):  # AdamW is an Adam
        return 3 if group.get("amsgrad") else 2
    if isinstance(optimizer, torch.optim.Adagrad):
        return 1
    if isinstance(optimizer, torch.optim.SGD):
        return 1 if group.get("momentum") else 0
    if isinstance(optimizer, torch.optim.RMSprop):
        return 1 + bool(group.get("momentum")) + bool(group.get("centered"))
    if isinstance(optimizer, RowWiseAdagrad):
        return 0  # one value per row: a table's width-th part of one slot
    return 2  # easyrec's LazyAdam, Ftrl, Lamb and TFRMSProp keep two; another optimizer: as many as Adam


def training_bytes(model: nn.Module, optimizer: Optimizer, shares: Mapping[int, float] | None = None) -> int:
    """Bytes of ``model``'s parameters, their dense gradients (a sparse embedding's gradient holds only a batch's
    rows: not counted) and ``optimizer``'s state; activations and the data come on top. Works on a model built on
    the ``meta`` device, which allocates nothing. ``shares``: the part of a parameter (by ``id``) that this worker
    holds, with its gradient and state (a table sharded over the workers); 1 for the others."""
    shares = shares or {}
    sparse = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse}

    def size(p: torch.Tensor) -> float:
        return p.numel() * p.element_size() * shares.get(id(p), 1)

    total = sum(size(p) * (1 + (id(p) not in sparse)) for p in model.parameters())
    for inner in inner_optimizers(optimizer).values():
        for group in inner.param_groups:
            slots = state_slots(inner, group)
            total += sum(size(p) * slots for p in group["params"])
    return int(total)


def available_bytes(device: torch.device) -> int:
    """Memory free for new tensors on ``device``: the GPU's free memory; on the CPU, ``MemAvailable`` of
    /proc/meminfo (else the free pages), capped by a cgroup v2 limit (a container's)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    lines = meminfo.read_text().splitlines() if meminfo.exists() else []
    available = next((int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:")), None)
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            available = min(available, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit readable here
    return available

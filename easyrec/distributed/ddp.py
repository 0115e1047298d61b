"""Synchronous data-parallel training over torch.distributed (EasyRec's sync replicas): DDP workers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from easyrec.config.arguments import NonNegativeInt, Positive, checked
from easyrec.distributed.single import Count, SingleProcess
from easyrec.errors import ConfigError

Backend = Literal["auto", "gloo", "nccl"]


class DDP(SingleProcess):
    """Every worker holds the whole model, trains on its own shard of each batch, and the gradients are averaged
    over the workers (an all-reduce in backward) before every worker takes the same optimizer step.

    ``easyrec train distributed=ddp`` starts the workers itself with torch's elastic agent (the engine of
    ``torchrun``): :meth:`launch_config` describes them. Under an outside ``torchrun`` every worker runs
    ``easyrec train`` and joins from the environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...).

    Args:
        nproc_per_node: workers on this machine (one per GPU, or a few on a CPU machine).
        nnodes: machines in the job; each runs the same command (with the same ``rdzv_endpoint`` and ``rdzv_id``).
        backend: ``nccl`` (GPUs), ``gloo`` (CPUs), or ``auto``: nccl when torch finds CUDA, else gloo.
        rdzv_endpoint: ``host:port`` where the machines meet (c10d rendezvous); None on one machine picks a free port.
        rdzv_id: the job's id, the same on every machine (None on one machine: a fresh one).
        rdzv_timeout: seconds to wait for the rendezvous (and for a worker in a collective) before failing.
        max_restarts: times the agent restarts every worker after one fails; the restarted workers resume from
            the run's latest checkpoint.
        accumulate_steps: micro-batches per worker whose gradients are summed before each step (no all-reduce on
            the first ``accumulate_steps - 1``): a step sees ``batch_size * world_size * accumulate_steps`` rows.
        local_addr: this machine's address for the other machines (None: its host name).
    """

    @checked
    def __init__(
        self,
        nproc_per_node: Count = 2,
        nnodes: Count = 1,
        backend: Backend = "auto",
        rdzv_endpoint: str | None = None,
        rdzv_id: str | None = None,
        rdzv_timeout: Positive = 300.0,
        max_restarts: NonNegativeInt = 0,
        accumulate_steps: Count = 1,
        local_addr: str | None = None,
    ) -> None:
        super().__init__(accumulate_steps)
        if backend == "nccl" and not torch.cuda.is_available():
            raise ConfigError("distributed.backend=nccl: torch finds no CUDA device here; use backend=gloo (or auto)")
        if nnodes > 1 and not rdzv_endpoint:
            raise ConfigError(
                f"distributed.nnodes={nnodes}: give every machine the same distributed.rdzv_endpoint=HOST:PORT "
                "(a host all of them reach) and distributed.rdzv_id=JOB_ID"
            )
        self.nproc_per_node, self.nnodes, self.max_restarts = nproc_per_node, nnodes, max_restarts
        self.backend = backend if backend != "auto" else ("nccl" if torch.cuda.is_available() else "gloo")
        self.rdzv_endpoint, self.rdzv_id, self.rdzv_timeout = rdzv_endpoint, rdzv_id, rdzv_timeout
        self.local_addr = local_addr
        self.rank, self.local_rank, self.world_size = 0, 0, nproc_per_node * nnodes

    # ------------------------------------------------------------------ starting the workers

    @staticmethod
    def in_worker() -> bool:
        """Whether this process is a worker that an elastic agent (ours or ``torchrun``'s) started."""
        return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ

    @property
    def launches_workers(self) -> bool:
        """Whether ``easyrec train`` starts the workers (with :meth:`launch_config`) rather than being one."""
        return not self.in_worker()

    def launch_config(self) -> Any:
        """The elastic agent's :class:`~torch.distributed.launcher.api.LaunchConfig` for this job's workers on
        this machine: c10d rendezvous, spawned processes."""
        from torch.distributed.launcher.api import LaunchConfig

        one_machine = self.nnodes == 1 and not self.rdzv_endpoint
        timeout = int(self.rdzv_timeout)
        return LaunchConfig(
            min_nodes=self.nnodes,
            max_nodes=self.nnodes,
            nproc_per_node=self.nproc_per_node,
            run_id=self.rdzv_id or (uuid.uuid4().hex if one_machine else f"easyrec-{self.rdzv_endpoint}"),
            rdzv_backend="c10d",
            rdzv_endpoint="127.0.0.1:0" if one_machine else self.rdzv_endpoint,
            rdzv_configs={"join_timeout": timeout, "read_timeout": timeout, "last_call_timeout": 1},
            max_restarts=self.max_restarts,
            start_method="spawn",
            local_addr=self.local_addr or ("127.0.0.1" if one_machine else None),
            monitor_interval=0.5,
        )

    def start(self) -> None:
        """Join the other workers (from the environment the elastic agent set)."""
        if not self.in_worker():
            raise ConfigError(
                "distributed=ddp: this process was not started as a worker (no LOCAL_RANK/WORLD_SIZE); run "
                "`easyrec train distributed=ddp ...` or `torchrun ... -m easyrec train distributed=ddp ...`"
            )
        self.rank, self.local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        self.world_size = int(os.environ["WORLD_SIZE"])
        if "OMP_NUM_THREADS" not in os.environ:  # share the machine's cores between its workers, as torchrun does
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        if dist.is_initialized():
            return
        if self.backend == "nccl":
            torch.cuda.set_device(self.local_rank)
        timeout = timedelta(seconds=self.rdzv_timeout)
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # The agent's store outlives a restart of the workers, and torch 2.13 gives restarted workers the same
            # keys: a restarted worker could read the address of a dead one. Keep each attempt's keys apart.
            agent_store = dist.TCPStore(
                os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout
            )
            store = dist.PrefixStore(f"easyrec/attempt-{self.restart_count}", agent_store)
            dist.init_process_group(
                self.backend, store=store, rank=self.rank, world_size=self.world_size, timeout=timeout
            )
        else:
            dist.init_process_group(self.backend, timeout=timeout)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------------ what the trainer asks

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in torch's DistributedDataParallel: its weights are broadcast from rank 0 now, its gradients
        averaged over the workers in every backward (sparse embedding gradients too, with gloo)."""
        sparse = [name for name, module in model.named_modules() if getattr(module, "sparse", False) is True]
        if sparse and self.backend == "nccl":
            raise ConfigError(
                f"model.sparse_embeddings=true with distributed.backend=nccl: NCCL cannot all-reduce the sparse "
                f"gradients of {sparse[0]}; use dense embedding gradients (model.sparse_embeddings=false), or gloo"
            )
        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def no_sync(self, model: nn.Module) -> AbstractContextManager[Any]:
        return model.no_sync()

    def agree(self, stop: bool, signal_number: int) -> tuple[bool, int]:
        flags = torch.tensor([int(stop and self.is_main), signal_number], device=self._collective_device())
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0]), int(flags[1])

    def sum(self, value: Tensor) -> Tensor:
        total = value.detach().clone().to(self._collective_device())
        dist.all_reduce(total)
        return total.to(value.device)

    def gather(self, pieces: Sequence[Any]) -> list[Any]:
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, list(pieces))
        return [piece for worker in gathered for piece in worker]

    def broadcast(self, value: Any) -> Any:
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

"""Starting the workers of a distributed job, and running as one of them.

``easyrec train distributed=ddp`` is one Hydra process per job (so ``-m`` sweeps run their jobs one after another,
each with its own workers): it validates the config, opens the job's MLflow run, and starts the workers with
torch's elastic agent (the engine of ``torchrun``: c10d rendezvous, restarts). Each worker gets the resolved
config, not Hydra: Hydra runs once, so there is one run directory and one ``.hydra/`` per job.

Under an outside ``torchrun``, every worker runs ``easyrec train`` itself; :func:`torchrun_arguments` makes them
agree on one run directory, and keeps the workers other than rank 0 from writing Hydra's files.
"""

from __future__ import annotations

import atexit
import copy
import logging
import logging.config
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from easyrec.console import plural
from easyrec.errors import ConfigError, EasyrecError, Interrupted, sigterm_interrupts

log = logging.getLogger("easyrec")


class WorkerFailed(EasyrecError):
    """A worker of a distributed job failed (after the restarts allowed); the message gives its error."""


def launch_workers(
    train: Callable[..., float],
    cfg: DictConfig,
    distributed: Any,
    output_dir: Path,
    overrides: list[str],
    job_logging: dict[str, Any],
) -> float:
    """Start ``distributed``'s workers on this machine, each running :func:`worker`, which runs ``train``
    (:func:`easyrec.run.train`, a module-level function: it is pickled by name); return the job's
    ``optimized_metric`` (every worker computes the same one).

    On one machine this process opens the MLflow run and the workers log into it, so that the job stays one run
    when the agent restarts its workers. With several machines, the main worker opens it (no machine knows in
    advance which worker will be rank 0).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import elastic_launch

    from easyrec.resume import checked_resume_state

    config = OmegaConf.to_container(cfg, resolve=True)
    logger = instantiate(cfg.logger) if distributed.nnodes == 1 else None
    if logger is not None:
        # a resumed job continues its run: read the checkpoint's run id (and refuse a config that changed) now
        state = checked_resume_state(cfg.trainer.get("resume"), output_dir, config, distributed.sharded)
        logger.start(config, overrides, output_dir, run_id=state["run"]["id"] if state else None)
    launch = distributed.launch_config()
    log.info(
        "starting %s on this machine (%s, backend %s, restarts allowed: %d)",
        plural(distributed.nproc_per_node, "worker"),
        plural(distributed.nnodes, "machine"),
        distributed.backend,
        distributed.max_restarts,
    )
    run_id = getattr(logger, "run_id", None)
    status = "FAILED"
    try:
        with quiet_worker_failures():
            results = elastic_launch(launch, worker)(train, config, str(output_dir), overrides, job_logging, run_id)
        status = "FINISHED"  # the main worker ended the run itself
        return next(value for _, value in sorted(results.items()))
    except ChildFailedError as error:
        raise WorkerFailed(failure_message(error)) from None
    except RendezvousError as error:
        cause = error.__cause__ or error.__context__
        detail = f" ({str(cause).strip().splitlines()[0]})" if cause and str(cause).strip() else ""
        raise ConfigError(
            f"distributed.rdzv_endpoint={launch.rdzv_endpoint}: the workers could not meet there within "
            f"distributed.rdzv_timeout={distributed.rdzv_timeout:g} s{detail}"
        ) from None
    except SignalException as error:
        status = "KILLED"
        raise Interrupted(error.sigval, error.sigval.name) from None
    finally:
        if logger is not None and status != "FINISHED":
            logger.finish(status)


#: torch's loggers that report a failed worker: the agent's (with the worker's traceback) and spawn's (the others
#: being stopped)
AGENT_LOGGERS = ("torch.distributed.elastic.multiprocessing.api", "torch.multiprocessing.spawn")


@contextmanager
def quiet_worker_failures() -> Iterator[None]:
    """While the workers run, torch's agent does not log the traceback of a worker that failed with an easyrec error
    (a bad config or input: :func:`failure_message` says it in one line), nor that it stops the other workers then.
    Any other failure keeps its traceback."""
    quiet = UserErrorReports()
    loggers = [logging.getLogger(name) for name in AGENT_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


class UserErrorReports(logging.Filter):
    """Drops the records :func:`user_error_report` picks."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not user_error_report(record.getMessage(), str(error or ""))


def user_error_report(message: str, error: str = "") -> bool:
    """Whether ``message`` (a record of :data:`AGENT_LOGGERS`, with the text of its exception ``error``: the
    worker's traceback) reports a worker ending on an easyrec error, or the others being stopped after a worker
    failed."""
    if message.startswith("Terminating process"):
        return True
    return message.startswith("failed (exitcode") and any(
        line.startswith("easyrec.") and "Error: " in line for line in error.splitlines()
    )


def failure_message(error: Any) -> str:
    """One line for a ChildFailedError: which worker failed first, and how (its exception, or its exit)."""
    rank, failure = error.get_first_failure()
    message = failure.message
    if isinstance(message, dict):  # written by @record: {"message": "Type: text", "extraInfo": {...}}
        message = message.get("message", "")
    message = str(message).strip().splitlines()[-1] if str(message).strip() else ""
    if not message or message.startswith("To enable traceback"):
        message = f"exit code {failure.exitcode}"
    return f"worker {rank} failed: {message}"


def worker(
    train: Callable[..., float],
    config: dict[str, Any],
    output_dir: str,
    overrides: list[str],
    job_logging: dict[str, Any],
    run_id: str | None,
) -> float:
    """The entry point of one worker started by :func:`launch_workers` (a fresh, spawned process): ``train`` on
    the job's resolved config."""
    from torch.distributed.elastic.multiprocessing.errors import record

    from easyrec.run_lock import hold_run_directory

    rank = int(os.environ["RANK"])
    logging.config.dictConfig(worker_logging(job_logging, rank, output_dir))
    # on one machine the launcher holds the run directory; across machines, the rank-0 worker's
    owner = rank == 0 and config["distributed"].get("nnodes", 1) > 1
    with sigterm_interrupts(), hold_run_directory(Path(output_dir)) if owner else nullcontext():
        result = record(train)(OmegaConf.create(config), Path(output_dir), overrides, tracked_run=run_id)
    atexit.register(leave_without_teardown)  # the work is done: at exit (after the agent has the result), leave
    return result


def leave_without_teardown() -> None:
    """End a worker whose job finished, with exit code 0, without the interpreter's teardown (run first of the
    exit handlers). That teardown destroys the C++ objects of the loaded libraries, and about 1 in 14 torchrec jobs
    aborted there ("terminate called without an active exception"), which the agent took for a failed worker."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def worker_logging(job_logging: dict[str, Any], rank: int, output_dir: str) -> dict[str, Any]:
    """The job's logging config for worker ``rank``: rank 0 logs as the job does (terminal and ``train.log``);
    the others log warnings only to the terminal and everything to their own ``rank-<rank>.log``."""
    config = copy.deepcopy(job_logging)
    if rank == 0:
        return config
    handlers = config.get("handlers", {})
    for handler in handlers.values():
        if "filename" in handler:
            handler["filename"] = str(Path(output_dir) / f"rank-{rank}.log")
        else:
            handler["level"] = "WARNING"
    return config


def torchrun_arguments(args: list[str]) -> list[str]:
    """``easyrec train``'s arguments, completed for a worker of an outside ``torchrun``: one run directory for
    every worker (``outputs/torchrun/<rdzv id>``, unless ``hydra.run.dir`` is given), Hydra's files and
    ``train.log`` from rank 0 only, the other ranks' logs in ``rank-<rank>.log``. Unchanged outside torchrun."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None or "RANK" not in os.environ:
        return args
    if any(arg in ("-m", "--multirun") for arg in args):
        raise ConfigError(
            "easyrec train -m under torchrun: every worker would run the whole sweep; run the sweep without "
            "torchrun and give each job its workers with distributed=ddp distributed.nproc_per_node=N"
        )
    added = []
    if not any(arg.startswith("hydra.run.dir=") for arg in args):
        if run_id == "none":
            raise ConfigError(
                "torchrun without --standalone or --rdzv-id: give torchrun --rdzv-id=JOB_ID (it names the run "
                "directory, outputs/torchrun/JOB_ID) or easyrec train hydra.run.dir=DIR"
            )
        added.append(f"hydra.run.dir=outputs/torchrun/{run_id}")
    rank = int(os.environ["RANK"])
    if rank > 0:
        added += [
            "hydra.output_subdir=null",
            "++hydra.job_logging.handlers.console.level=WARNING",
            f"++hydra.job_logging.handlers.file.filename=${{hydra.runtime.output_dir}}/rank-{rank}.log",
        ]
    return [*args, *added]

"""Starting training processes: one here, several here (as torchrun would: nccl on GPUs, gloo on CPU),
or several on a SLURM cluster through submitit. Lives apart from `__main__` because spawned processes
must be able to import what they run."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from trainer.config import TrainConfig
from trainer.extras import require


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_process(cfg: TrainConfig, mode: str) -> dict[str, Any]:
    """One training process (rank); distributed set-up comes from the environment torchrun/SLURM give."""
    import torch
    import torch.distributed as dist

    from trainer.recipe import FineTuneRecipe

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    try:
        recipe = FineTuneRecipe(cfg)
        recipe.setup()
        try:
            if mode == "val":
                out = {s: recipe.evaluate(s).summary for s in ("valid", "test") if s in recipe.splits}
                return {"mode": "val", "base_model": recipe.loaded.description, "results": out}
            result = recipe.train()
            return {
                "status": result.status,
                "steps": result.steps,
                "base_model": recipe.loaded.description,
                "best_valid": result.best_valid,
                "test": {name: r and r["summary"] for name, r in result.test.items()},
                "model_dir": str(result.model_dir) if result.model_dir else None,
                "events": result.events,
            }
        finally:
            recipe.cleanup()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawned(rank: int, world: int, port: int, cfg_json: str, mode: str, result_path: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    result = run_process(TrainConfig.model_validate_json(cfg_json), mode)
    if rank == 0:
        Path(result_path).write_text(json.dumps(result, default=str))


def launch_local(cfg: TrainConfig, mode: str, nprocs: int) -> dict[str, Any]:
    """Several processes on this machine, as torchrun would start them (nccl on GPUs, gloo on CPU)."""
    import torch.multiprocessing as mp

    result_path = Path(cfg.output_dir) / "logs" / "result.json"
    result_path.parent.mkdir(parents=True, exist_ok=True)
    mp.spawn(
        _spawned, args=(nprocs, _free_port(), cfg.model_dump_json(), mode, str(result_path)), nprocs=nprocs
    )
    return json.loads(result_path.read_text())


T = TypeVar("T")
logger = logging.getLogger("samtune.trainer")

# How long ranks 1..N-1 get to leave once rank 0 is done. Ranks agree on stopping (a stop request, early
# stopping: Recipe._agreed), so they normally finish with it; a rank 0 that left otherwise (an error, a lost
# lease) leaves the others in a collective that its leaving fails, and NCCL may wait instead of failing.
CHILDREN_GRACE_SECONDS = 30.0


def launch_with_rank0_here(cfg: TrainConfig, nprocs: int, rank0: Callable[[], T]) -> T:
    """`nprocs` DDP processes on this machine with rank 0 in this process, running `rank0()` (the caller's
    `run(cfg, callbacks)`), and ranks 1..N-1 as child processes running the same recipe without callbacks.

    Why not `launch_local`'s spawn of every rank: a worker's callbacks hold database sessions, a heartbeat
    thread and an upload thread, which cannot cross a spawn boundary; rank 0 is the only rank that reports, so it
    stays where they are. The children are `python -m trainer.launch` processes (not multiprocessing: a
    Celery pool child may not fork daemons), joining a rendezvous on 127.0.0.1 only; nccl on CUDA (rank r on
    device r of what CUDA_VISIBLE_DEVICES shows), gloo on a CPU.

    Rank 0's outcome is the run's: when it raises (a cancel, a lost lease, an error) the children are killed;
    when it returns, the children get CHILDREN_GRACE_SECONDS to leave and are then killed, their exit status
    logged, not raised (a rank 0 that stopped early leaves them failing in their next collective)."""
    import torch
    import torch.distributed as dist

    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    backend = "nccl" if cuda else "gloo"
    port = _free_port()
    cfg_path = Path(cfg.output_dir) / "logs" / "ddp_config.json"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(cfg.model_dump_json())
    base_env = dict(os.environ, WORLD_SIZE=str(nprocs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "trainer.launch", str(cfg_path)],
            env=base_env | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
        )
        for rank in range(1, nprocs)
    ]
    finished = False
    try:
        if cuda:
            torch.cuda.set_device(0)
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=nprocs)
        try:
            result = rank0()
        finally:
            dist.destroy_process_group()
        finished = True
        return result
    finally:
        for rank, child in enumerate(children, start=1):
            try:
                child.wait(timeout=CHILDREN_GRACE_SECONDS if finished else 0.1)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if child.returncode != 0 and finished:
                logger.info("rank %d left with status %s after rank 0 finished", rank, child.returncode)


def _child_main(cfg_path: str) -> None:
    """A rank other than 0 of `launch_with_rank0_here` (its environment says which)."""
    run_process(TrainConfig.model_validate_json(Path(cfg_path).read_text()), "train")


class _ClusterJob:
    """What submitit runs on each SLURM task: it maps SLURM's variables to torch.distributed's."""

    def __init__(self, cfg_json: str, mode: str) -> None:
        self.cfg_json, self.mode = cfg_json, mode

    def __call__(self) -> dict[str, Any]:
        import submitit

        env = submitit.JobEnvironment()
        os.environ.update(RANK=str(env.global_rank), LOCAL_RANK=str(env.local_rank), WORLD_SIZE=str(env.num_tasks),
                          MASTER_ADDR=env.hostnames[0], MASTER_PORT=os.environ.get("MASTER_PORT", "29500"))  # fmt: skip
        return run_process(TrainConfig.model_validate_json(self.cfg_json), self.mode)


class ClusterUnavailable(RuntimeError):
    """--use-cluster 1 on a machine that cannot submit to SLURM."""


def submit_cluster(cfg: TrainConfig, mode: str, args: argparse.Namespace) -> str:
    require("submitit", "slurm", "--use-cluster 1 (SLURM)")
    import submitit

    # Without SLURM, submitit's AutoExecutor would fall back to running the job on this machine (and refuse
    # --num-nodes > 1 with a traceback): say plainly that there is no cluster instead.
    if submitit.SlurmExecutor.affinity() <= 0:
        raise ClusterUnavailable(
            "--use-cluster 1 submits to SLURM, and this machine has no SLURM client (`srun` is not on PATH): "
            "run it on a SLURM login node, or train here without --use-cluster (--num-gpus N for N processes)"
        )
    executor = submitit.AutoExecutor(folder=str(Path(cfg.output_dir) / "submitit"), cluster="slurm")
    params: dict[str, Any] = {
        "nodes": args.num_nodes,
        "gpus_per_node": args.num_gpus,
        "tasks_per_node": args.num_gpus,
        "timeout_min": args.timeout_min,
        "name": "samtune",
    }
    for key in ("partition", "account", "qos"):
        if getattr(args, key):
            params[f"slurm_{key}"] = getattr(args, key)
    executor.update_parameters(**params)
    job = executor.submit(_ClusterJob(cfg.model_dump_json(), mode))
    return str(job.job_id)


if __name__ == "__main__":
    _child_main(sys.argv[1])

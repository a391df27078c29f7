"""Process-group setup for runs launched by `torchrun` (DDP); a plain `python` run is world size 1."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..hardware import ENV_DEVICE, HardwareError, resolve_device


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistEnv:
    """Join the process group that torchrun's environment variables describe (gloo on CPU, nccl on GPU).

    device: train.device. auto is the GPU when there is one (under torchrun each process takes the GPU of
    its local rank), else the CPU; Apple's MPS is used only for inference, so auto trains on the CPU there."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    spec = (device or "auto").strip().lower()
    if spec == "auto":
        spec = os.environ.get(ENV_DEVICE, "").strip().lower() or "auto"
    if spec == "mps":
        raise HardwareError("training runs on cpu or cuda; mps is for inference (--device on generate, chat, "
                            "caption, transcribe, evaluate)")
    chosen = resolve_device(spec)
    if chosen.type == "mps":  # auto on a Mac
        chosen = torch.device("cpu")
    cuda = chosen.type == "cuda"
    if cuda and world > 1 and ":" not in spec:
        chosen = torch.device("cuda", local)
    device = str(chosen)
    if cuda:
        torch.cuda.set_device(chosen)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistEnv(rank, world, local, device)


def sum_across(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The sum of a tensor over all processes."""
    if env.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def agree(flag: bool, env: DistEnv) -> bool:
    """True on every process when it is true on the main process (e.g. a time budget ran out)."""
    if not env.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=env.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def shared(value: float, env: DistEnv) -> float:
    """The main process's value on every process (e.g. the share of a time budget spent)."""
    if not env.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=env.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def teardown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()

"""What a training run adds to a checkpoint to resume exactly: `trainer_state.safetensors`, the optimizer's
moments and other tensors, with the step, RNG states, data position and losses as JSON metadata."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..checkpoint import CheckpointError

FILE = "trainer_state.safetensors"


def save_trainer_state(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write the trainer state into a checkpoint folder being assembled (see `save_checkpoint`'s extra)."""
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / FILE), metadata={"json": json.dumps(meta)})


def load_trainer_state(folder: str | Path, tensors: bool = True) -> dict[str, Any]:
    """The tensors and metadata written by `save_trainer_state`; tensors=False reads the
    metadata (step, seconds, losses) without the optimizer's tensors."""
    path = Path(folder) / FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no trainer_state.safetensors: it cannot resume training")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["json"])
            loaded = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable trainer state ({exc})") from None
    return {"tensors": loaded, "meta": meta}


# ---------------------------------------------------------------------------- optimizer <-> flat tensors
def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as named tensors plus JSON-able metadata (safetensors holds no Python objects)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})

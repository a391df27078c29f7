"""What a training run adds to a checkpoint to resume exactly: `trainer_state.safetensors`, the optimizer's
moments and other tensors, with the step, RNG states, data position and losses as JSON metadata.

Reading one checks what resuming relies on, so that a damaged file raises a CheckpointError naming it and
what is wrong, never a KeyError in the middle of the trainer."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..checkpoint import CheckpointError

FILE = "trainer_state.safetensors"
TENSOR_NAMES = re.compile(r"optimizer\.[0-9]+\..+|rank[0-9]+\.rng\..+")


def save_trainer_state(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write the trainer state into a checkpoint folder being assembled (see `save_checkpoint`'s extra)."""
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / FILE), metadata={"json": json.dumps(meta)})


def load_trainer_state(folder: str | Path, tensors: bool = True) -> dict[str, Any]:
    """The tensors and metadata written by `save_trainer_state`; tensors=False reads the
    metadata (step, seconds, losses) without the optimizer's tensors. CheckpointError when the file is
    missing, unreadable, or lacks what resuming needs."""
    path = Path(folder) / FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {FILE}: it cannot resume training")
    where = f"{FILE} in {folder}"
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("json")
            dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
            loaded = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as exc:  # safetensors raises its own error type for a truncated or corrupt file
        reason = " ".join(str(exc).split()).removeprefix("Error while deserializing header: ")
        raise CheckpointError(f"{where} is not a readable safetensors file ({reason}): it may be cut short or "
                              f"damaged") from None
    if text is None:
        raise CheckpointError(f"{where} has no 'json' entry in its metadata: it cannot resume training")
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{where} is damaged: its metadata is not valid JSON ({exc})") from None
    problem = _meta_problem(meta) or _tensor_problem(dtypes, loaded)
    if problem:
        raise CheckpointError(f"{where} is damaged: {problem}")
    return {"tensors": loaded, "meta": meta}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _meta_problem(meta: Any) -> Optional[str]:
    """What is wrong with the JSON metadata of a trainer state, or None."""
    if not isinstance(meta, dict):
        return f"its metadata is a JSON {type(meta).__name__}, not an object"
    missing = [k for k in ("step", "optimizer") if k not in meta]
    if missing:
        return f"its metadata lacks {' and '.join(repr(k) for k in missing)}"
    step = meta["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"its step is {step!r}, not a whole number >= 0"
    for key in ("seconds", "val_loss", "tokens"):
        if meta.get(key) is not None and not _is_number(meta[key]):
            return f"its {key} is {meta[key]!r}, not a number"
    optimizer = meta["optimizer"]
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("param_groups"), list) \
            or not isinstance(optimizer.get("scalars"), dict):
        return "its optimizer entry lacks param_groups (a list) or scalars (an object)"
    for group in optimizer["param_groups"]:
        if not isinstance(group, dict) or not isinstance(group.get("params"), list) \
                or not all(isinstance(p, int) and not isinstance(p, bool) for p in group["params"]):
            return "a param_group of its optimizer lacks its list of parameter numbers"
    bad = [k for k in optimizer["scalars"] if not re.fullmatch(r"[0-9]+\..+", k)]
    if bad:
        return f"its optimizer scalars have a name that is not 'NUMBER.NAME': {bad[0]!r}"
    precision = meta.get("precision")
    if precision is not None and not (isinstance(precision, dict) and isinstance(precision.get("name"), str)
                                      and isinstance(precision.get("device"), str)):
        return f"its precision is {precision!r}, not {{'name': ..., 'device': ...}}"
    if meta.get("grad_scaler") is not None and not isinstance(meta["grad_scaler"], dict):
        return f"its grad_scaler is {meta['grad_scaler']!r}, not an object"
    return None


def _tensor_problem(dtypes: dict[str, str], loaded: dict[str, torch.Tensor]) -> Optional[str]:
    """What is wrong with the tensors of a trainer state (their names and types; values when loaded), or None."""
    for name, dtype in dtypes.items():
        if not TENSOR_NAMES.fullmatch(name):
            return f"it holds a tensor named {name!r}, neither 'optimizer.N.NAME' nor 'rankN.rng.NAME'"
        if ".rng." in name and dtype != "U8":
            return f"its random state {name} is {dtype}, not bytes (U8)"
    if not any(name.startswith("rank0.rng.") for name in dtypes):
        return "it holds no random state (rank0.rng.*)"
    for name, value in loaded.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"it holds non-finite values in {name}"
    return None


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
                           meta: dict[str, Any], source: Optional[str | Path] = None) -> None:
    """Load what `optimizer_to_tensors` gave into `optimizer`; CheckpointError (naming `source`, the trainer
    state file) when it belongs to other parameters."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
        raise CheckpointError(f"{source or 'the trainer state'} does not fit this model's optimizer "
                              f"({' '.join(str(exc).split())})") from None

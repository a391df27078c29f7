"""What the machine offers: the device to run on and the precision that is fast there.

Training asks `choose_precision` (train.precision: auto | fp32 | bf16 | fp16); inference asks
`resolve_device` and `resolve_dtype` (--device, --dtype). `auto` means: the GPU when there is one; bf16 where
the hardware computes it fast (a recent CUDA GPU; a CPU with AVX512-BF16 or AMX where a bf16 matmul measures
faster than fp32 and then the trainer's timing of the run's own model agrees), fp16 with a gradient scaler on
an older CUDA GPU, fp32 otherwise. On a CPU without native bf16, PyTorch emulates it, 30-100x slower than
fp32; even with AVX512-BF16 some CPUs (a Xeon without AMX) run bf16 matmuls slower than fp32. Asking for
bf16 there still works, with a warning naming the slowdown.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENV_PRECISION = "OMNIGPT_PRECISION"  # what `auto` means in this environment (a config's explicit value wins)
ENV_DEVICE = "OMNIGPT_DEVICE"  # likewise for the device (the tests set cpu: the same suite on any machine)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of x86 CPUs that compute bf16 natively
# Where the CPU's flags cannot be read, a bf16 matmul this many times slower than fp32 counts as emulated
# (native: 0.4-1.7x at 512x512; emulated: 30-100x).
EMULATED_RATIO = 3.0
BF16_PAYS = 0.8  # auto trains in bf16 on a CPU where a bf16 matmul takes under this share of fp32's time
# ... and, timed on the run's own model and first batches, a bf16 training step under this share of an fp32
# one's. A matmul alone misleads on some CPUs: on a 2-core Xeon with AMX a 512x512 bf16 matmul took 0.31-0.56x
# fp32's time, text-tiny trained 1.6x faster in bf16, but omni-tiny made 1,009 steps in bf16 where fp32 made
# 1,415 (its casts, norms, convolutions and small products gain nothing, and fp32 packs its rows).
STEP_BF16_PAYS = 0.9


class HardwareError(ValueError):
    """A device or precision that this machine does not have (or that is misspelled)."""


@dataclass(frozen=True)
class Precision:
    """A resolved training precision: `name` is fp32, bf16 or fp16; `reason` says why it was chosen.
    `to_time`: auto chose bf16 on a CPU by its matmuls; the trainer times the run's own model in both
    precisions before it trains (`STEP_BF16_PAYS`) and may take fp32 instead."""
    name: Literal["fp32", "bf16", "fp16"]
    reason: str
    to_time: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def needs_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        return self.name == "fp16"

    def autocast(self, device: str) -> contextlib.AbstractContextManager:
        """The forward pass's context: autocast to bf16/fp16 (weights and optimizer stay fp32), or nothing."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.dtype)

    def describe(self) -> str:
        return f"precision: {self.name} ({self.reason})"


# --------------------------------------------------------------------------------------------- the CPU
def _cpu_flags() -> Optional[set[str]]:
    """The CPU's feature flags from /proc/cpuinfo (Linux on x86), or None where there is no such list."""
    path = Path("/proc/cpuinfo")
    if platform.machine().lower() not in ("x86_64", "amd64", "i686") or not path.is_file():
        return None
    try:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


@functools.lru_cache(maxsize=None)
def cpu_bf16_slowdown() -> float:
    """Time of a 512x512 bf16 matmul over an fp32 one on this CPU (best of five; ~0.03 s in all where bf16 is
    native). Measured 0.42 on a Zen 4 (bf16 pays) and 1.4-1.7 on a Xeon with AVX512-BF16 but no AMX (bf16
    costs more than it saves); emulated bf16 shows 30-100 on its first product and is not timed further.
    (256-wide products are no guide: there native bf16's set-up cost alone measured 2-12x fp32's time.)"""
    def best(dtype: torch.dtype, repeats: int) -> float:
        a = torch.randn(512, 512).to(dtype)
        b = torch.randn(512, 512).to(dtype)
        a @ b  # the first call picks and prepares a kernel
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        return max(min(times), 1e-7)

    fp32 = best(torch.float32, 5)
    first = best(torch.bfloat16, 1) / fp32
    if first > 10:  # emulated: no need to time it further
        return first
    return best(torch.bfloat16, 5) / fp32


@functools.lru_cache(maxsize=None)
def cpu_bf16_pays() -> bool:
    """Whether bf16 trains faster than fp32 on this CPU: it has native bf16 (the AVX512-BF16 or AMX flag on
    Linux x86; elsewhere, macOS, Windows and ARM, it is measured) and a bf16 matmul measured faster than
    fp32 (`cpu_bf16_slowdown` below BF16_PAYS)."""
    flags = _cpu_flags()
    if flags is not None and not any(f in flags for f in CPU_FLAGS):
        return False  # emulated: no need to measure
    return cpu_bf16_slowdown() < BF16_PAYS


# ------------------------------------------------------------------------------------------ devices
def resolve_device(spec: str = "auto") -> torch.device:
    """auto | cpu | cuda | cuda:N | mps -> a device this machine has; auto is the GPU when there is one (or
    what OMNIGPT_DEVICE says)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = os.environ.get(ENV_DEVICE, "").strip().lower() or "auto"
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise HardwareError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HardwareError(f"device {spec!r}: this machine has no CUDA GPU that PyTorch can use (torch "
                                f"{torch.__version__}); use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise HardwareError(f"device {spec!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type == "mps":
        if not _mps_available():
            raise HardwareError(f"device {spec!r}: Apple's MPS backend is not available here; use --device cpu")
    elif device.type != "cpu":
        raise HardwareError(f"device {spec!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    return device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _cuda_bf16(device: torch.device) -> bool:
    """Native bf16 on this GPU: compute capability 8.0 (Ampere) or later, or ROCm. (torch.cuda.is_bf16_supported
    also says yes where bf16 is only emulated, on older cards.)"""
    if device.type != "cuda":
        return False
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """auto | fp32 | bf16 | fp16 -> the dtype to hold an inference model in. auto: bf16 on a CUDA GPU that
    supports it, else fp32 (a CPU decodes one token at a time, where fp32 kernels are the fast and exact ones)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.bfloat16 if _cuda_bf16(device) else torch.float32
    if spec not in DTYPES:
        raise HardwareError(f"unknown dtype {spec!r}: use auto, fp32, bf16 or fp16")
    return DTYPES[spec]


# ------------------------------------------------------------------------------------------- training
_warned: set[str] = set()


def choose_precision(requested: str, device: str | torch.device) -> Precision:
    """Resolve train.precision on `device` (a string such as "cpu" or "cuda:0").

    The environment variable OMNIGPT_PRECISION, when set, stands in for `auto`. Asking for bf16 where it is
    emulated (a CPU without AVX512-BF16/AMX, an old GPU) still gives bf16, with a warning (once a process)
    naming the measured slowdown."""
    if requested not in PRECISIONS:
        raise HardwareError(f"train.precision must be one of {list(PRECISIONS)}, got {requested!r}")
    reason = "asked for"
    forced = os.environ.get(ENV_PRECISION, "").strip().lower()
    if requested == "auto" and forced not in ("", "auto"):
        if forced not in DTYPES:
            raise HardwareError(f"{ENV_PRECISION}={forced!r}: use auto, fp32, bf16 or fp16")
        requested, reason = forced, f"{ENV_PRECISION}={forced}"
    device = torch.device(device)
    if device.type == "cuda":
        bf16 = _cuda_bf16(device)
        name = torch.cuda.get_device_name(device)
        if requested == "auto":
            return (Precision("bf16", f"auto: {name} computes bf16") if bf16 else
                    Precision("fp16", f"auto: {name} has no bf16; fp16 with a gradient scaler"))
        if requested == "bf16" and not bf16:
            _warn_once("cuda-bf16", f"train.precision bf16: {name} does not support bf16 natively; it will be "
                                    f"slow or fail. precision: auto picks fp16 with a gradient scaler there")
        return Precision(requested, reason)
    if device.type != "cpu":  # mps: fp32, the precision every kernel there has
        return Precision("fp32", f"auto: {device.type}") if requested == "auto" else Precision(requested, reason)
    if requested == "auto":
        if cpu_bf16_pays():
            return Precision("bf16", f"auto: a bf16 matmul measured {1 / cpu_bf16_slowdown():.1f}x as fast as "
                                     f"fp32 on this CPU", to_time=True)
        return Precision("fp32", f"auto: {_cpu_bf16_verdict()}")
    if requested == "bf16" and not cpu_bf16_pays():
        _warn_once("cpu-bf16", f"train.precision bf16: {_cpu_bf16_verdict()}. Training in bf16 will be slower "
                               f"than in fp32; precision: auto picks fp32 on this CPU")
    return Precision(requested, reason)


def _cpu_bf16_verdict() -> str:
    """Why bf16 does not pay on this CPU, with the measured slowdown."""
    slowdown = cpu_bf16_slowdown()
    flags = _cpu_flags()
    if (not any(f in flags for f in CPU_FLAGS)) if flags is not None else slowdown > EMULATED_RATIO:
        return (f"this CPU has no native bf16 (AVX512-BF16 or AMX), so PyTorch emulates it: a bf16 matmul "
                f"measured {slowdown:.0f}x slower than fp32 here")
    return f"a bf16 matmul measured {slowdown:.1f}x the time of fp32 on this CPU"


def _warn_once(key: str, message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=3)

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""What this machine runs fast: the one place that picks the default dtype and mixed precision.

CPUs differ by far more than their clock. Intel CPUs with AMX (and CPUs with AVX512-BF16) run bfloat16 matrix
products several times faster than float32; CPUs with AVX2 only (many AMD EPYC and older Intel servers) have no
bfloat16 arithmetic, so PyTorch emulates it there, 50-80x slower than float32. `dtype="auto"` (the CLI, the tour, the
recipes and the benchmarks) therefore means bfloat16 where the hardware runs it natively and float32 elsewhere:

    >>> from omni_encoders.hardware import resolve_dtype
    >>> choice = resolve_dtype("auto")  # on an AVX2 machine:
    >>> choice.dtype, choice.reason
    (torch.float32, 'auto: float32, this CPU (AVX2) has no native bfloat16 (AMX or AVX512-BF16)')

The probes read `torch.backends.cpu.get_cpu_capability()`, which follows `ATEN_CPU_CAPABILITY`: setting it to `avx2`
on an AMX machine makes every choice here (and PyTorch's own kernels) those of an AVX2 machine.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

import torch


DTYPE_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def cpu_capability() -> str:
    """The vector instruction set PyTorch's CPU kernels use here: "AVX512", "AVX2", "DEFAULT" (x86) or an ARM one.
    Follows `ATEN_CPU_CAPABILITY`."""
    return torch.backends.cpu.get_cpu_capability()


def cpu_bf16_support() -> str | None:
    """The instructions that give this CPU native bfloat16 matrix products ("AMX" or "AVX512-BF16"), or None.

    Both need PyTorch's AVX-512 kernels: with `ATEN_CPU_CAPABILITY=avx2` PyTorch does not use them, whatever the CPU.
    """
    if cpu_capability() != "AVX512":
        return None
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX512-BF16"
    return None


def cpu_kind() -> str:
    """The short name benchmark rows and logs give this CPU's kind: "AMX", "AVX512-BF16", "AVX512", "AVX2", ..."""
    return cpu_bf16_support() or cpu_capability()


@functools.cache
def cpu_model_name() -> str:
    """The CPU's model name as `lscpu` prints it (e.g. "AMD EPYC 7B13"), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_cpu() -> str:
    """One line for logs and benchmark rows: model, kind and PyTorch's intra-op threads."""
    return f"{cpu_model_name()} ({cpu_kind()}, {torch.get_num_threads()} threads)"


@dataclass(frozen=True)
class DtypeChoice:
    """A dtype and why it was chosen (printed by the CLI, the recipes and the benchmarks)."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return next(name for name, dtype in DTYPE_NAMES.items() if dtype == self.dtype)


def native_bf16(device: str | torch.device = "cpu") -> tuple[bool, str]:
    """Whether `device` runs bfloat16 matrix products natively, and the reason in words."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"the GPU ({torch.cuda.get_device_name(device)}) runs bfloat16 natively"
        return False, "the GPU has no native bfloat16"
    if device.type != "cpu":
        return False, f"no bfloat16 rule for {device.type} devices"
    support = cpu_bf16_support()
    if support is not None:
        return True, f"this CPU runs bfloat16 natively ({support})"
    return False, f"this CPU ({cpu_capability()}) has no native bfloat16 (AMX or AVX512-BF16)"


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu") -> DtypeChoice:
    """The dtype to run models in on `device`: `"auto"` is bfloat16 where the device runs it natively (a CPU with AMX
    or AVX512-BF16, a GPU with bfloat16), float32 elsewhere; `"bf16"`, `"fp16"`, `"fp32"` or a `torch.dtype` are
    taken as given.

    Raises:
        ValueError: for a name other than "auto", "bf16", "fp16" and "fp32".
    """
    if isinstance(dtype, torch.dtype):
        return DtypeChoice(dtype, "given")
    if dtype == "auto":
        native, why = native_bf16(device)
        return DtypeChoice(torch.bfloat16, f"auto: bfloat16, {why}") if native else DtypeChoice(
            torch.float32, f"auto: float32, {why}"
        )
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"Unknown dtype {dtype!r}: expected 'auto' or one of {list(DTYPE_NAMES)}.")
    return DtypeChoice(DTYPE_NAMES[dtype], "given")


def use_bf16_mixed_precision(device: str | torch.device | None = None) -> bool:
    """The default of `TrainingArguments(bf16=...)` in the recipes and the tour: bfloat16 autocast where the training
    device (by default a GPU if there is one, else the CPU) runs bfloat16 natively."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return native_bf16(device)[0]


def flex_attention_cpu_problem() -> str | None:
    """Why `attn_implementation="flex_attention"` cannot run on this CPU, or None where it can.

    PyTorch 2.13 compiles flex attention for the CPU with its vector ISA: with AVX-512 the kernels are right; with AVX2
    only, the compiled kernels give wrong values or NaN for many sequence lengths (e.g. 20 queries over 40 keys; they
    vary with the thread count), and without a vector ISA they do not compile. sdpa computes the same attention.
    """
    capability = cpu_capability()
    if capability == "AVX512":
        return None
    return (
        f"PyTorch {torch.__version__.split('+')[0]}'s CPU kernels for flex_attention give wrong results (NaN or wrong "
        f"values, depending on the sequence lengths and threads) on CPUs whose vector instructions are {capability} "
        "(they are right with AVX-512). Use attn_implementation='sdpa' (the same attention) or 'eager' on this "
        "machine, or run the model on a GPU."
    )

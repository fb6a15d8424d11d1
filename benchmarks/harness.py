# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Timing and peak-memory measurement shared by the benchmark suites.

Each suite builds our model and its nearest transformers peer at matched size, measures both in the same process on
the same inputs, and prints one table with the ratio ours / peer (below 1.0 = we are faster / smaller).

Peak memory: on CUDA, `torch.cuda.max_memory_allocated` around the call. On CPU, the process's resident-set
high-water mark (VmHWM) is reset through `/proc/self/clear_refs` after returning freed memory to the OS, and the
increase over the resident set before the call is reported: the activations and workspace of one forward pass.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--attn", default="sdpa", help="attention implementation: sdpa, eager, flash_attention_2, ...")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--scaling", action="store_true", help="also run the scaling sweep")
    return parser


def setup(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)


@dataclass
class Measurement:
    name: str
    latency_ms: float
    throughput: float  # items per second
    peak_mb: float
    note: str = ""


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def _release_cpu_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def peak_memory_mb(fn: Callable[[], object], device: str) -> float:
    """Extra memory the call needs at its peak, in MiB (see the module docstring)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    if not os.path.exists("/proc/self/clear_refs"):
        return float("nan")
    _release_cpu_memory()
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset the high-water mark
    fn()
    return _status_mb("VmHWM") - before


def measure(name: str, fn: Callable[[], object], items: int, args: argparse.Namespace, note: str = "") -> Measurement:
    """Median latency over `args.repeat` calls after `args.warmup` warm-up calls, throughput and peak memory."""
    synchronize = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        for _ in range(args.warmup):
            fn()
        times = []
        for _ in range(args.repeat):
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            times.append(time.perf_counter() - start)
        peak = peak_memory_mb(fn, args.device)
    latency = statistics.median(times)
    return Measurement(name, latency * 1000, items / latency, peak, note)


def print_table(title: str, ours: Measurement, peers: list[Measurement]) -> list[dict]:
    """Print ours and each peer with ratios ours / peer; return the rows as dicts."""
    print(f"\n## {title}")
    print(f"| model | latency (ms) | throughput (items/s) | peak memory (MiB) | time ratio ours/peer | memory ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for m in [ours, *peers]:
        time_ratio = "" if m is ours else f"{ours.latency_ms / m.latency_ms:.2f}"
        memory_ratio = "" if m is ours else f"{ours.peak_mb / m.peak_mb:.2f}" if m.peak_mb > 0 else "n/a"
        label = m.name + (f" ({m.note})" if m.note else "")
        print(f"| {label} | {m.latency_ms:.1f} | {m.throughput:.2f} | {m.peak_mb:.0f} | {time_ratio} | {memory_ratio} |")
        rows.append({**m.__dict__, "time_ratio": time_ratio, "memory_ratio": memory_ratio})
    return rows


def describe(args: argparse.Namespace) -> str:
    device = args.device
    if device.startswith("cuda"):
        device = torch.cuda.get_device_name()
    return (
        f"device={device} threads={torch.get_num_threads()} dtype={args.dtype} batch={args.batch_size} "
        f"attn={args.attn} torch={torch.__version__}"
    )

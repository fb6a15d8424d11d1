# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Timing and peak-memory measurement shared by the benchmark suites.

Each suite builds our model and its nearest transformers peers at matched size and measures them in the same process
on the same inputs with [`compare`]: after a warm-up of every model, the timed repetitions are **interleaved** (ours,
peer 1, peer 2, ours, ...), so that a load spike from other processes on a shared machine hits all of them alike; the
median of each is reported with the ratio ours / peer (below 1.0 = we are faster / smaller).

Peak memory of one call, weights and inputs excluded (they exist before the call):

- CUDA: `torch.cuda.max_memory_allocated` around the call, minus what was allocated before.
- CPU, "peak memory": the most bytes of tensors created by the call that were alive at the same time, tracked by a
  `TorchDispatchMode` (the CPU analogue of `max_memory_allocated`; buffers a kernel allocates internally are not seen).
- CPU, "RSS peak": the process's resident-set high-water mark (VmHWM), reset through `/proc/self/clear_refs` after freed
  memory has been returned to the OS, minus the resident set before the call. It includes what the C allocator holds
  on to (fragmentation), so it is the number the OS sees, but noisier.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


from omni_encoders.hardware import DTYPE_NAMES as DTYPES
from omni_encoders.hardware import cpu_kind, cpu_model_name, resolve_dtype


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every suite takes (see each suite's `--help` for its own)."""
    parser.add_argument(
        "--dtype", choices=["auto", *DTYPES], default="auto",
        help="weights and inputs dtype; auto: bf16 where the device runs it natively (AMX, AVX512-BF16, GPU), else fp32",
    )  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--attn", default="sdpa", help="attention implementation of ours and the peers: sdpa, eager, flash_attention_2"
    )
    parser.add_argument("--size", choices=["full", "small"], default="full", help="full = the default config")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions of each model (the median counts)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each model first")
    parser.add_argument(
        "--one-call", action="store_true",
        help="run each model once, timing that call and measuring its peak memory in it (for calls of hours; "
        "replaces --repeat and --warmup)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, all cores)")
    parser.add_argument("--scaling", action="store_true", help="also run the suite's scaling sweep")
    parser.add_argument(
        "--sweep", type=float, nargs="+", default=None,
        help="the sizes of the scaling sweep, replacing the suite's default (image sides, frames, seconds, characters)",
    )
    parser.add_argument("--json", default=None, help="append the result rows to this JSON-lines file")
    return parser


def setup(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    choice = resolve_dtype(args.dtype, args.device.split(":")[0])
    if args.dtype == "auto":
        print(f"dtype: {choice.name} ({choice.reason})")
    args.dtype = choice.name
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if args.device == "cpu" and busy > (os.cpu_count() or 1) and torch.get_num_threads() > 1:
        print(
            f"WARNING: load average {busy:.1f} on {os.cpu_count()} cores: other processes compete for the CPU. With "
            f"{torch.get_num_threads()} threads every parallel region waits for descheduled threads, which penalises "
            "models with many small ops; prefer --threads 1 on a shared machine (ratios stay comparable)."
        )


def sizes(args: argparse.Namespace, main: float, default_sweep: list[float]) -> list[float]:
    """The input sizes to measure: the suite's main size, then (with `--scaling`) the sweep, `--sweep` if given."""
    values = [main] + (list(args.sweep or default_sweep) if args.scaling else [])
    return list(dict.fromkeys(type(main)(value) for value in values))


def load_average() -> str:
    """The 1-minute load average over the core count: how busy the machine was (other processes included)."""
    try:
        return f"{os.getloadavg()[0]:.2f}/{os.cpu_count()}"
    except OSError:
        return "n/a"


def describe(args: argparse.Namespace) -> str:
    """One line with everything a number depends on: device, threads, dtype, batch, attention, versions, load."""
    import transformers

    if args.device.startswith("cuda"):
        device = torch.cuda.get_device_name(args.device)
    else:
        device = f"cpu ({cpu_model_name()}, {cpu_kind()})"
    return (
        f"device={device} threads={torch.get_num_threads()} dtype={args.dtype} batch={args.batch_size} "
        f"attn={args.attn} torch={torch.__version__} transformers={transformers.__version__} "
        f"load={load_average()}"
    )


@dataclass
class Case:
    """One model call to measure: `fn()` processes `items` items (images, videos, clips, seconds of audio, ...)."""

    name: str
    fn: Callable[[], object]
    items: float = 1.0
    note: str = ""


@dataclass
class Measurement:
    name: str
    latency_ms: float
    throughput: float  # items per second
    peak_mb: float
    note: str = ""
    times_ms: list[float] = field(default_factory=list)
    rss_peak_mb: float = float("nan")
    cpu_times_ms: list[float] = field(default_factory=list)  # process CPU time of each run (all threads)

    @property
    def cpu_ms(self) -> float:
        return statistics.median(self.cpu_times_ms)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _status_mb(field_name: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name):
                return int(line.split()[1]) / 1024
    return float("nan")


def _release_cpu_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of the tensors created under it that are alive, and their peak.

    A storage counts once however many views share it, from the op that created it until its last tensor is freed.
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.tensors_per_storage: dict[int, int] = {}

    def _release(self, key: int, size: int) -> None:
        self.tensors_per_storage[key] -= 1
        if self.tensors_per_storage[key] == 0:
            del self.tensors_per_storage[key]
            self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(output):
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0:
                continue
            if key not in self.tensors_per_storage:
                if key in inputs:
                    continue  # a view (or in-place result) of memory that existed before the call
                self.tensors_per_storage[key] = 0
                self.live += size
                self.peak = max(self.peak, self.live)
            self.tensors_per_storage[key] += 1
            weakref.finalize(tensor, self._release, key, size)
        return output


def peak_memory_mb(fn: Callable[[], object], device: str) -> float:
    """Extra memory one call needs at its peak, in MiB (see the module docstring)."""
    if device.startswith("cuda"):
        synchronize(device)
        gc.collect()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        synchronize(device)
        del result
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    tracker = LiveTensorBytes()
    with tracker:
        result = fn()
    del result
    return tracker.peak / 2**20


def rss_peak_mb(fn: Callable[[], object]) -> float:
    """Growth of the resident-set high-water mark over one call, in MiB (CPU; see the module docstring)."""
    if not os.path.exists("/proc/self/clear_refs"):
        return float("nan")
    _release_cpu_memory()
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset the high-water mark to the current resident set
    result = fn()
    peak = _status_mb("VmHWM") - before
    del result
    return peak


def measure_one_call(case: Case, args: argparse.Namespace) -> Measurement:
    """Time one call of `case` and measure its peak memory (tensors, and RSS on the CPU) in that same call.

    For `--one-call`, where a call takes hours and the usual warm-up + rounds + two memory calls would take a day. The
    live-tensor tracker's Python hook per op is nothing next to ops of that size, and without a warm-up the call also
    pays the one-time costs (kernel selection, first touch of the memory), seconds at most.
    """
    wall, cpu, peaks = [], [], []

    def timed_call():
        synchronize(args.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = case.fn()
        synchronize(args.device)
        wall.append(round((time.perf_counter() - start) * 1000, 2))
        cpu.append(round((time.process_time() - cpu_start) * 1000, 2))
        return result

    def tracked_call() -> None:
        peaks.append(peak_memory_mb(timed_call, args.device))

    rss_peak = float("nan")
    with torch.inference_mode():
        if args.device == "cpu":
            rss_peak = rss_peak_mb(tracked_call)
        else:
            tracked_call()
    return Measurement(case.name, wall[0], case.items / (wall[0] / 1000), peaks[0], case.note, wall, rss_peak, cpu)


def measure_cases(cases: list[Case], args: argparse.Namespace) -> list[Measurement]:
    """Warm every case up, time `args.repeat` interleaved rounds, then measure each case's peak memory once.

    With `--one-call`, each case runs once instead (see [`measure_one_call`]).
    """
    if args.one_call:
        return [measure_one_call(case, args) for case in cases]
    times: dict[str, list[float]] = {case.name: [] for case in cases}
    cpu_times: dict[str, list[float]] = {case.name: [] for case in cases}
    with torch.inference_mode():
        for case in cases:
            for _ in range(args.warmup):
                case.fn()
        for _ in range(args.repeat):
            for case in cases:
                synchronize(args.device)
                start, cpu_start = time.perf_counter(), time.process_time()
                case.fn()
                synchronize(args.device)
                times[case.name].append(time.perf_counter() - start)
                cpu_times[case.name].append(time.process_time() - cpu_start)
        nan = float("nan")
        peaks = {case.name: peak_memory_mb(case.fn, args.device) for case in cases}
        rss_peaks = {case.name: rss_peak_mb(case.fn) if args.device == "cpu" else nan for case in cases}
    results = []
    for case in cases:
        latency = statistics.median(times[case.name])
        results.append(
            Measurement(
                case.name,
                latency * 1000,
                case.items / latency,
                peaks[case.name],
                case.note,
                [round(t * 1000, 2) for t in times[case.name]],
                rss_peaks[case.name],
                [round(t * 1000, 2) for t in cpu_times[case.name]],
            )
        )
    return results


def _mib(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def paired_ratio(ours: list[float], peer: list[float]) -> float:
    """Median over the interleaved rounds of ours / peer: each pair ran back to back, under the same load."""
    return statistics.median(a / b for a, b in zip(ours, peer))


def print_table(title: str, measurements: list[Measurement], unit: str = "items/s") -> list[dict]:
    """Print the first measurement (ours) and the others (peers) with ratios ours / peer; return the rows.

    Time ratios are medians of per-round ratios (see [`paired_ratio`]), of wall-clock time and of process CPU time.
    With `--threads 1` on a shared machine the CPU time is the robust one: it does not count the time the process
    waited for a core.
    """
    ours = measurements[0]
    print(f"\n## {title}")
    print(
        f"| model | latency (ms) | CPU time (ms) | throughput ({unit}) | peak memory (MiB) | RSS peak (MiB) "
        "| time ours/peer (wall, CPU) | memory ours/peer |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for m in measurements:
        time_ratio = cpu_ratio = memory_ratio = ""
        ratios = ""
        if m is not ours:
            time_ratio = f"{paired_ratio(ours.times_ms, m.times_ms):.2f}"
            cpu_ratio = f"{paired_ratio(ours.cpu_times_ms, m.cpu_times_ms):.2f}"
            memory_ratio = f"{ours.peak_mb / m.peak_mb:.2f}" if m.peak_mb > 0 else "n/a"
            ratios = f"{time_ratio}, {cpu_ratio}"
        label = m.name + (f" ({m.note})" if m.note else "")
        print(
            f"| {label} | {m.latency_ms:.1f} | {m.cpu_ms:.1f} | {m.throughput:.3g} | {_mib(m.peak_mb)} | "
            f"{_mib(m.rss_peak_mb)} | {ratios} | {memory_ratio} |"
        )
        rows.append({
            "table": title, **asdict(m), "cpu_ms": m.cpu_ms, "time_ratio": time_ratio, "cpu_time_ratio": cpu_ratio,
            "memory_ratio": memory_ratio,
        })
    return rows


def compare(title: str, cases: list[Case], args: argparse.Namespace, unit: str = "items/s") -> list[dict]:
    """Measure `cases` (ours first) interleaved and print their table; the load is printed before and after."""
    load_before = load_average()
    rows = print_table(title, measure_cases(cases, args), unit)
    print(f"(load before/after: {load_before} / {load_average()}; per-run times in the JSON output)")
    for row in rows:
        row["load"] = f"{load_before} -> {load_average()}"
    write_json(rows, args)
    return rows


def write_json(rows: list[dict], args: argparse.Namespace) -> None:
    if not args.json:
        return
    with open(args.json, "a") as handle:
        for row in rows:
            handle.write(json.dumps({**row, **machine(args), "setup": describe(args)}) + "\n")


def machine(args: argparse.Namespace) -> dict:
    """What every JSON row records of the machine and settings, as fields of their own: the CPU (or GPU) model, its
    kind ("AMX", "AVX512-BF16", "AVX512", "AVX2": which decides whether bf16 is fast), threads and dtype."""
    on_gpu = args.device.startswith("cuda")
    return {
        "device": torch.cuda.get_device_name(args.device) if on_gpu else "cpu",
        "cpu": cpu_model_name(),
        "cpu_kind": cpu_kind(),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
    }


def count_flops(fn: Callable[[], object], module: torch.nn.Module) -> int:
    """FLOPs of one call of `module` (matmuls, convolutions, attention), counted by `torch.utils.flop_counter`.

    torch's counter has no formula for the CPU flash-attention kernel of SDPA (it would count no attention FLOPs on
    CPU): it is given the one of the CUDA kernels.
    """
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    custom = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa_flops}

    # The counter's module tracker hooks tensors that require grad: freeze the parameters instead of `no_grad`.
    requires_grad = [parameter.requires_grad for parameter in module.parameters()]
    module.requires_grad_(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=custom) as counter:
            fn()
    finally:
        for parameter, flag in zip(module.parameters(), requires_grad):
            parameter.requires_grad_(flag)
    return counter.get_total_flops()

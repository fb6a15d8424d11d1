# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""What every recipe in `examples/` shares: argument parsing with recipe defaults, logging, checkpoint detection and
the train -> save -> evaluate -> report tail. Each recipe is one script that builds its data, model and `Trainer`, then
calls `run_training`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence

import torch
import transformers
from transformers import HfArgumentParser, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint


logger = logging.getLogger(__name__)


def parse_args(dataclass_types: Sequence[type], defaults: dict, args: Sequence[str] | None = None) -> tuple:
    """Parse `args` (default: the command line) into the given dataclasses, e.g.
    `(ModelArguments, DataArguments, TrainingArguments)`.

    `defaults` replaces the dataclasses' defaults (e.g. the recipe's learning rate and epochs), so that
    `python examples/<task>.py --output_dir out` alone reproduces the documented result; any flag overrides them.
    A single `.json` argument is read as a file of arguments, as in transformers' examples (the recipe's defaults still
    apply to keys it does not set). Without a GPU, `use_cpu` defaults to true: `TrainingArguments` only accepts
    `--bf16` on the CPU (autocast) when it is set.
    """
    defaults = {"use_cpu": not (torch.cuda.is_available() or torch.xpu.is_available()), **defaults}
    parser = HfArgumentParser(dataclass_types)
    parser.set_defaults(**defaults)
    args = list(sys.argv[1:] if args is None else args)
    if len(args) == 1 and args[0].endswith(".json"):
        with open(args[0]) as handle:
            return parser.parse_dict({**defaults, **json.load(handle)})
    return parser.parse_args_into_dataclasses(args=args)


def setup_logging(training_args: TrainingArguments) -> None:
    """Log to stdout at the process's level (the main process at `--log_level`, replicas at `--log_level_replica`)."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logging.getLogger("__main__").setLevel(log_level)
    logger.setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info(
        f"process {training_args.process_index} of {training_args.world_size}, device {training_args.device}, "
        f"bf16 {training_args.bf16}, torch threads {torch.get_num_threads()}"
    )


def checkpoint_to_resume(training_args: TrainingArguments) -> str | bool | None:
    """`--resume_from_checkpoint` when given (a path, or "true" for the output folder's last checkpoint), else the
    last `checkpoint-*` in `--output_dir` (so rerunning an interrupted command continues it), else None."""
    if training_args.resume_from_checkpoint is not None:
        value = training_args.resume_from_checkpoint
        return True if str(value).lower() == "true" else value
    if os.path.isdir(training_args.output_dir):
        last = get_last_checkpoint(training_args.output_dir)
        if last is not None:
            logger.info(f"Resuming from {last} (pass another --output_dir to start afresh).")
        return last
    return None


def run_training(
    trainer: Trainer,
    *,
    recipe: str,
    held_out_split: str,
    args: Sequence[str] | None = None,
    started_at: float | None = None,
) -> dict:
    """With `--do_train`, train (resuming when there is a checkpoint) and save the model and its processor to
    `--output_dir`; with `--do_eval`, evaluate on `trainer.eval_dataset`; then write `results.json` there.

    `results.json` records what `docs/RESULTS.md` reports: the command, the wall time (from `started_at`, by default
    the start of this function; data building and model construction included when the recipe passes its own start),
    the held-out metrics, the number of processes, the device and the machine's load average.

    Returns:
        The held-out metrics (`eval_*`), plus `train_loss` and the trainer's `log_history`.
    """
    training_args = trainer.args
    started_at = time.perf_counter() if started_at is None else started_at
    load_at_start = _load_average()
    results: dict = {}
    train_runtime = None
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint_to_resume(training_args))
        trainer.save_model()  # the model, and the processor given to the Trainer as `processing_class`
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results["train_loss"] = train_result.training_loss
        train_runtime = train_result.metrics.get("train_runtime")
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    wall_seconds = time.perf_counter() - started_at
    if trainer.is_world_process_zero():
        command = ["python", *sys.argv] if args is None else ["python", f"examples/{recipe}.py", *args]
        report = {
            "recipe": recipe,
            "command": " ".join(command),
            "num_processes": training_args.world_size,
            "held_out_split": held_out_split,
            "metrics": {key: value for key, value in results.items() if key.startswith("eval_")},
            "wall_seconds": round(wall_seconds, 1),
            "train_runtime": train_runtime,
            "global_step": trainer.state.global_step,
            "device": _device_name(training_args),
            "torch_threads": torch.get_num_threads(),
            "load_average": {"start": load_at_start, "end": _load_average()},
        }
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, "results.json"), "w") as handle:
            json.dump(report, handle, indent=2)
        logger.info(f"{recipe}: {report['metrics']} in {wall_seconds:.0f} s")
    results["log_history"] = trainer.state.log_history
    return results


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _device_name(training_args: TrainingArguments) -> str:
    device = training_args.device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"

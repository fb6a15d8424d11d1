# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""What every recipe in `examples/` shares: argument parsing with recipe defaults, logging, checkpoint detection and
the train -> save -> evaluate -> report tail. Each recipe is one script that builds its data, model and `Trainer`, then
calls `run_training`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
import transformers
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from omni_encoders import OmniAudioConfig
from omni_encoders.hardware import describe_cpu, use_bf16_mixed_precision


logger = logging.getLogger(__name__)


def parse_args(dataclass_types: Sequence[type], defaults: dict, args: Sequence[str] | None = None) -> tuple:
    """Parse `args` (default: the command line) into the given dataclasses, e.g.
    `(ModelArguments, DataArguments, TrainingArguments)`.

    `defaults` replaces the dataclasses' defaults (e.g. the recipe's learning rate and epochs), so that
    `python examples/<task>.py --output_dir out` alone reproduces the documented result; any flag overrides them.
    A single `.json` argument is read as a file of arguments, as in transformers' examples (the recipe's defaults still
    apply to keys it does not set). Without a GPU, `use_cpu` defaults to true: `TrainingArguments` only accepts
    `--bf16` on the CPU (autocast) when it is set. `--bf16` defaults to the project's rule
    (`omni_encoders.hardware.use_bf16_mixed_precision`): on where the GPU or CPU (AMX, AVX512-BF16) runs bfloat16
    natively, off elsewhere (CPUs with AVX2 only emulate bfloat16, 50-80x slower than float32).
    """
    defaults = {
        "use_cpu": not (torch.cuda.is_available() or torch.xpu.is_available()),
        "bf16": use_bf16_mixed_precision(),
        **defaults,
    }
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
        f"bf16 {training_args.bf16}, CPU {describe_cpu()}"
    )


def start_recipe(
    dataclass_types: Sequence[type], defaults: dict, args: Sequence[str] | None, keep_raw_columns: bool
) -> tuple:
    """The start of every recipe: parse `args` into the dataclasses (see [`parse_args`]), log (see
    [`setup_logging`]) and seed, before the model is built, so that the same seed gives the same initial weights.

    With `keep_raw_columns`, `remove_unused_columns` is turned off: Trainer would otherwise keep only the columns the
    model's forward takes, and the recipe's collator needs the raw inputs (images, audio, text, labels).
    """
    parsed = parse_args(dataclass_types, defaults, args)
    training_args = parsed[-1]
    if keep_raw_columns:
        training_args.remove_unused_columns = False
    setup_logging(training_args)
    set_seed(training_args.seed)
    return parsed


def checkpoint_to_resume(training_args: TrainingArguments) -> str | bool | None:
    """`--resume_from_checkpoint` when given (a path, or "true" for the output folder's last checkpoint), else the
    last `checkpoint-*` in `--output_dir` (so rerunning an interrupted command continues it), else None."""
    if training_args.resume_from_checkpoint is not None:
        value = training_args.resume_from_checkpoint
        return True if str(value).lower() == "true" else value
    if os.path.isdir(training_args.output_dir):
        last = get_last_checkpoint(training_args.output_dir)
        if last is not None:
            logger.warning(f"Resuming from {last} (pass another --output_dir to start afresh).")
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


def end_distributed() -> None:
    """The last step of a recipe run by `accelerate launch` (several processes): destroy the process group while the
    interpreter is still alive. Left to interpreter shutdown, gloo's worker threads can abort a process that has
    finished its work (`terminate called without an active exception`: pytorch/pytorch#190489), failing the launch.
    Nothing to do in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _device_name(training_args: TrainingArguments) -> str:
    device = training_args.device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{describe_cpu()}, {os.cpu_count()} cores"


# ------------------------------------------------------------------------------------------------------ audio recipes


# The `OmniAudioConfig` options for long audio (README, "Long audio") that the audio recipes expose. They change what
# the model computes, not its weights, so they also apply to a checkpoint being fine-tuned.
LONG_AUDIO_OPTIONS = (
    "attention_chunk_size", "attention_left_chunks", "attention_right_context", "output_downsample_rate",
    "conv_module_causal", "tokenizer_norm_statistics",
)  # fmt: skip


@dataclass
class AudioModelArguments:
    """The encoder of the audio recipes: a saved checkpoint to fine-tune, or the size of a fresh `OmniAudioConfig`
    trained from scratch. The defaults are a small model; each recipe sets its own through its `TRAINING_DEFAULTS`.

    The long-audio options (`--attention_chunk_size`, `--attention_left_chunks`, `--attention_right_context`,
    `--output_downsample_rate`) go into a fresh model's config like the sizes; with `--model_name_or_path`, those given
    away from their defaults replace the checkpoint's values (see [`checkpoint_overrides`]), so a model trained with
    full attention can be fine-tuned in the chunked mode it will run in.
    """

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved OmniAudio checkpoint to fine-tune; default: train from scratch."}
    )
    tokenizer_channels: list[int] = field(
        default_factory=lambda: [16, 64, 64, 64, 64],
        metadata={"help": "Channels of the waveform tokenizer's strided convolutions (the last one feeds the model)."},
    )
    tokenizer_kernel_sizes: list[int] = field(
        default_factory=lambda: [20, 8, 4, 4, 4], metadata={"help": "Kernel of each tokenizer convolution."}
    )
    tokenizer_strides: list[int] = field(
        default_factory=lambda: [10, 4, 4, 2, 2],
        metadata={"help": "Stride of each tokenizer convolution; their product is the samples per frame (640: 25/s)."},
    )
    hidden_size: int = field(default=64, metadata={"help": "Width of the Conformer."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Conformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Query heads of the latent attention."})
    num_key_value_heads: int = field(default=2, metadata={"help": "Key/value heads (grouped-query attention)."})
    kv_lora_rank: int = field(default=32, metadata={"help": "Width of the attention's compressed K/V latent."})
    qk_rope_head_dim: int = field(default=8, metadata={"help": "Rotary part of each query/key head."})
    intermediate_ratio: int = field(default=4, metadata={"help": "Feed-forward width as a multiple of hidden_size."})
    conv_kernel_size: int = field(default=15, metadata={"help": "Kernel of the Conformer's depthwise convolution."})
    hidden_dropout: float = field(default=0.1, metadata={"help": "Dropout on the Conformer modules' outputs."})
    use_speaker_encoder: bool = field(default=False, metadata={"help": "Build the speaker encoder."})
    speaker_hidden_size: int = field(default=128, metadata={"help": "Width of the speaker encoder."})
    speaker_num_conv_layers: int = field(default=3, metadata={"help": "Convolutions of the speaker encoder."})
    speaker_num_lstm_layers: int = field(default=1, metadata={"help": "BiLSTM layers of the speaker encoder."})
    speaker_embedding_size: int = field(default=128, metadata={"help": "Size of the speaker embedding."})
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "eager, sdpa, flash_attention_2 or flex_attention."}
    )
    # Long audio (see the README's "Long audio"): chunked attention, a reduced output rate, streaming.
    attention_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Chunked attention: tokenizer frames per chunk (25 = 1 s at the recipes' 640 samples per frame); "
            "default: full attention."
        },
    )
    attention_left_chunks: int = field(
        default=2, metadata={"help": "With --attention_chunk_size: previous chunks a chunk's queries see."}
    )
    attention_right_context: int = field(
        default=0, metadata={"help": "With --attention_chunk_size: look-ahead frames beyond the chunk."}
    )
    output_downsample_rate: int = field(
        default=1,
        metadata={
            "help": "Mean-pool every N Conformer output frames (2: 25 -> 12.5 frames/s at 640 samples per frame); "
            "the CTC loss and the pipelines follow the reduced rate."
        },
    )
    # Streaming (`OmniAudioModel.encode_stream`): with chunked attention and no look-ahead, these two make every frame
    # depend on bounded past and no future audio.
    conv_module_causal: bool = field(
        default=False, metadata={"help": "Causal depthwise convolution in the Conformer (streaming needs it)."}
    )
    tokenizer_norm_statistics: str = field(
        default="clip",
        metadata={
            "help": "What the tokenizer's GroupNorms average over: clip, causal (each frame and the frames before it; "
            "streamable) or frame (each frame alone; streamable, learns far less)."
        },
    )

    def __post_init__(self):
        # Bad values fail here, with the config's own message, rather than when the model is built or first run.
        OmniAudioConfig(**self.long_audio_kwargs())

    def long_audio_kwargs(self) -> dict:
        """The long-audio options as `OmniAudioConfig` arguments."""
        return {name: getattr(self, name) for name in LONG_AUDIO_OPTIONS}

    def checkpoint_overrides(self) -> dict:
        """The `from_pretrained` config overrides of `--model_name_or_path`: the long-audio options given away from
        their defaults (e.g. `{"attention_chunk_size": 25}`); the others keep the checkpoint's values."""
        defaults = {option.name: option.default for option in fields(self)}
        return {name: value for name, value in self.long_audio_kwargs().items() if value != defaults[name]}

    def config_kwargs(self) -> dict:
        """The `OmniAudioConfig` arguments of a fresh model of this size."""
        tokenizer_norm_groups = math.gcd(8, *self.tokenizer_channels)
        return {
            "tokenizer_channels": list(self.tokenizer_channels),
            "tokenizer_kernel_sizes": list(self.tokenizer_kernel_sizes),
            "tokenizer_strides": list(self.tokenizer_strides),
            "tokenizer_norm_groups": tokenizer_norm_groups,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "kv_lora_rank": self.kv_lora_rank,
            "qk_rope_head_dim": self.qk_rope_head_dim,
            "intermediate_size": self.intermediate_ratio * self.hidden_size,
            "conv_kernel_size": self.conv_kernel_size,
            "hidden_dropout": self.hidden_dropout,
            "use_speaker_encoder": self.use_speaker_encoder,
            "speaker_hidden_size": self.speaker_hidden_size,
            "speaker_num_conv_layers": self.speaker_num_conv_layers,
            "speaker_num_lstm_layers": self.speaker_num_lstm_layers,
            "speaker_embedding_size": self.speaker_embedding_size,
            "attn_implementation": self.attn_implementation,
            **self.long_audio_kwargs(),
        }


@dataclass
class SpeechDataArguments:
    """Speech synthesised by espeak-ng and flite (`omni_encoders.data`): voices are speakers."""

    num_voices: int | None = field(
        default=None, metadata={"help": "How many of the default voices to use (seeded choice); default: all."}
    )
    voices: list[str] | None = field(
        default=None, metadata={"help": "Explicit voice ids instead, e.g. espeak-ng:en-us+f3 flite:slt."}
    )
    test_voices: float = field(default=0.2, metadata={"help": "Fraction of the voices held out (split `test`)."})
    test_utterances: float = field(
        default=0.2, metadata={"help": "Fraction of each training voice's utterances held out (`test_seen_voices`)."}
    )
    pitch_range: list[float] = field(
        default_factory=lambda: [0.9, 1.1], metadata={"help": "Per-utterance pitch factors (low high)."}
    )
    speed_range: list[float] = field(
        default_factory=lambda: [0.85, 1.15], metadata={"help": "Per-utterance speaking-rate factors (low high)."}
    )
    dataset_seed: int = field(
        default=0, metadata={"help": "Seed of the dataset (voices, split, texts, speeds, pitches)."}
    )
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "Where built datasets are cached (default ~/.cache/omni_encoders/datasets)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N training clips."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N held-out clips."})

    def builder_kwargs(self) -> dict:
        """The arguments the speech builders share."""
        return {
            "num_voices": self.num_voices,
            "voices": self.voices,
            "test_voices": self.test_voices,
            "test_utterances": self.test_utterances,
            "pitch_range": tuple(self.pitch_range),
            "speed_range": tuple(self.speed_range),
            "seed": self.dataset_seed,
            "cache_dir": self.dataset_cache_dir,
        }


def select_first(dataset, count: int | None):
    """The first `count` rows of `dataset` (all when `count` is None)."""
    return dataset if count is None else dataset.select(range(min(count, len(dataset))))

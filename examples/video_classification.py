#!/usr/bin/env python
# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Train `OmniVideoForVideoClassification` to tell the direction a digit moves in, with 🤗 Trainer.

The data comes from `omni_encoders.data.build_moving_digit_videos`: H.264 mp4 files of a handwritten digit sweeping a
4x4 grid of positions (`motion="scan"`) right, left, down or up. "left" is exactly "right" played backwards and "up"
is "down" backwards, and all four videos of a scene show the very same frames, so only the temporal order of the frames
tells the classes apart. `--shuffle_frames` trains and evaluates the same recipe on the control set, where each
video's frames come in a random order: a model can then do no better than chance (0.25), which shows that the
accuracy of the default run comes from frame order.

The videos go through `OmniVideoVideoProcessor` once, before training (`datasets.Dataset.map`, cached next to the
dataset): decoding the mp4 files costs more than a training step, so decoding them again every epoch would dominate
the run. Held-out accuracy comes from `omni_encoders.metrics.load("accuracy")`. By default the model is a small one
trained from scratch: a 1-layer SigLIP tower of width 64 over 8x8-pixel patches of the 32x32 frames, then 2 video
blocks (spatial attention, frame-causal temporal attention with 3D RoPE, a temporal mixture of 4 experts) and one
token per frame. The classifier reads the last frame's token (`pooling="last_frame"`): with frame-causal attention it
has seen the whole clip in order, whereas the mean over all frames would mix the order signal with what every frame
shows (the four classes of a scene show the same frames), which left this small model at chance for much longer.
`--model_name_or_path` fine-tunes a saved checkpoint instead.
The output folder holds the model and its video processor, so

    pipeline("video-classification", model=output_dir)

works on it. Run it as a script or with accelerate:

    python examples/video_classification.py --output_dir runs/video_classification
    python examples/video_classification.py --output_dir runs/video_classification_shuffled --shuffle_frames
    accelerate launch --multi_gpu --num_processes 2 examples/video_classification.py --output_dir runs/vc \\
        --per_device_train_batch_size 16

(the last keeps the global batch at 32). `docs/RESULTS.md` lists the commands, times and accuracies measured.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from transformers import AutoModelForVideoClassification, Trainer, TrainingArguments

from omni_encoders import OmniVideoConfig, OmniVideoForVideoClassification, OmniVideoVideoProcessor
from omni_encoders.data import build_moving_digit_videos
from omni_encoders.training import VideoClassificationTransform, classification_metrics
from recipe_utils import end_distributed, run_training, select_first, start_recipe


logger = logging.getLogger(__name__)

# The recipe's training settings: `python examples/video_classification.py --output_dir DIR` reaches the accuracy
# reported in docs/RESULTS.md with them. Every one can be overridden on the command line.
TRAINING_DEFAULTS = {
    "do_train": True,
    "do_eval": True,
    "learning_rate": 2e-3,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "num_train_epochs": 6,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "logging_steps": 20,
    "eval_strategy": "no",
    "save_strategy": "epoch",
    "save_total_limit": 1,
    "seed": 42,
}


@dataclass
class ModelArguments:
    """The model: a saved checkpoint to fine-tune, or the size of a fresh one trained from scratch."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved OmniVideo checkpoint to fine-tune; default: train from scratch."}
    )
    patch_size: int = field(default=8, metadata={"help": "Side of the backbone's patches in pixels."})
    hidden_size: int = field(default=64, metadata={"help": "Width of the backbone and of the video blocks."})
    backbone_layers: int = field(default=1, metadata={"help": "Layers of the per-frame SigLIP backbone."})
    dual_stream_layers: int = field(
        default=0, metadata={"help": "Dual-stream blocks of the per-frame vision encoder, after its backbone."}
    )
    num_hidden_layers: int = field(
        default=2, metadata={"help": "Video blocks (spatial attention, temporal attention, temporal MoE)."}
    )
    num_attention_heads: int = field(default=4, metadata={"help": "Heads of every attention layer."})
    num_experts: int = field(default=4, metadata={"help": "Routed experts of each temporal MoE layer."})
    num_experts_per_tok: int = field(default=2, metadata={"help": "Experts each token goes through (top-k)."})
    num_tokens_per_frame: int = field(
        default=1, metadata={"help": "Tokens each frame is compressed to (the classifier reads their mean)."}
    )
    initializer_range: float = field(
        default=0.08,
        metadata={
            "help": "Standard deviation of the initial weights of the video blocks, compressor and classifier. The "
            "config's default (0.02, for the full-size model) leaves this small model at 0.50 after the recipe's 4 "
            "epochs."
        },
    )
    pooling: str = field(
        default="last_frame",
        metadata={
            "help": "The video embedding the classifier reads: last_frame (the tokens of the last frame, which with "
            "frame-causal attention have seen the whole clip) or mean (all frames' tokens)."
        },
    )
    frame_causal: bool = field(
        default=True, metadata={"help": "Frame-causal temporal attention (a frame sees itself and earlier frames)."}
    )
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "eager, sdpa, flash_attention_2 or flex_attention."}
    )


@dataclass
class DataArguments:
    """The data: moving-digit videos from `omni_encoders.data.build_moving_digit_videos`."""

    num_videos: int = field(
        default=1600, metadata={"help": "Videos to build (4 per scene); a quarter of the scenes are held out."}
    )
    num_frames: int = field(default=16, metadata={"help": "Frames per video (a perfect square for motion='scan')."})
    frame_size: int = field(default=32, metadata={"help": "Side of the square frames in pixels (also the model's)."})
    motion: str = field(
        default="scan",
        metadata={"help": "scan: every direction shows the same frames; line: a straight crossing (see the builder)."},
    )
    shuffle_frames: bool = field(
        default=False, metadata={"help": "The control set: each video's frames in a random order (labels kept)."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the videos and of the train/test split."})
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "Where built datasets are cached (default ~/.cache/omni_encoders/datasets)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N training videos."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N held-out videos."})
    preprocessing_batch_size: int = field(default=64, metadata={"help": "Videos per batch of the decoding `map`."})


def build_model(
    model_args: ModelArguments, data_args: DataArguments, labels: list[str]
) -> OmniVideoForVideoClassification:
    label_kwargs = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: index for index, label in enumerate(labels)},
    }
    if model_args.model_name_or_path is not None:
        return AutoModelForVideoClassification.from_pretrained(
            model_args.model_name_or_path,
            attn_implementation=model_args.attn_implementation,
            ignore_mismatched_sizes=True,  # a new classifier when the label set differs
            **label_kwargs,
        )
    width, heads = model_args.hidden_size, model_args.num_attention_heads
    config = OmniVideoConfig(
        vision_config={
            "backbone_config": {
                "model_type": "siglip_vision_model",
                "hidden_size": width,
                "intermediate_size": 4 * width,
                "num_hidden_layers": model_args.backbone_layers,
                "num_attention_heads": heads,
                "image_size": data_args.frame_size,
                "patch_size": model_args.patch_size,
            },
            "num_hidden_layers": model_args.dual_stream_layers,
            "num_attention_heads": heads,
        },
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=heads,
        num_experts=model_args.num_experts,
        num_experts_per_tok=model_args.num_experts_per_tok,
        moe_intermediate_size=2 * width,
        num_tokens_per_frame=model_args.num_tokens_per_frame,
        compressor_intermediate_size=2 * width,
        frame_causal=model_args.frame_causal,
        pooling=model_args.pooling,
        initializer_range=model_args.initializer_range,
        # the frame count the video-classification pipeline samples by default
        num_frames=data_args.num_frames,
        max_frames=max(data_args.num_frames, 32),
        attn_implementation=model_args.attn_implementation,
        **label_kwargs,
    )
    return OmniVideoForVideoClassification(config)


def make_trainer(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments, callbacks=None
) -> Trainer:
    """The recipe's `Trainer`: moving-digit videos in, held-out scenes as the evaluation set."""
    with training_args.main_process_first(desc="building the moving-digit videos"):
        dataset = build_moving_digit_videos(
            num_videos=data_args.num_videos,
            num_frames=data_args.num_frames,
            frame_size=data_args.frame_size,
            motion=data_args.motion,
            shuffle_frames=data_args.shuffle_frames,
            seed=data_args.split_seed,
            cache_dir=data_args.dataset_cache_dir,
        )
    labels = dataset["train"].features["label"].names
    train_dataset, eval_dataset = dataset["train"], dataset["test"]
    train_dataset = select_first(train_dataset, data_args.max_train_samples)
    eval_dataset = select_first(eval_dataset, data_args.max_eval_samples)

    if model_args.model_name_or_path is not None:
        video_processor = OmniVideoVideoProcessor.from_pretrained(model_args.model_name_or_path)
    else:
        size = data_args.frame_size
        video_processor = OmniVideoVideoProcessor(
            size={"height": size, "width": size}, num_frames=data_args.num_frames
        )
    # Decoded and processed once, by the main process first; the result is cached next to the dataset (keyed by the
    # processor's settings), so the other processes and later runs load it instead of decoding again.
    transform = VideoClassificationTransform(video_processor, return_tensors="np")
    with training_args.main_process_first(desc="decoding the videos"):
        train_dataset, eval_dataset = (
            split.map(
                transform,
                batched=True,
                batch_size=data_args.preprocessing_batch_size,
                remove_columns=split.column_names,
                features=transform.features(),
                desc="decoding the videos",
            ).with_format("torch")
            for split in (train_dataset, eval_dataset)
        )

    model = build_model(model_args, data_args, labels=labels)
    logger.info(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=video_processor,
        compute_metrics=classification_metrics("accuracy"),
        callbacks=callbacks,
    )


def main(args: list[str] | None = None, callbacks=None) -> dict:
    """Run the recipe with command-line `args` (default: `sys.argv`) and extra `TrainerCallback`s; returns the
    held-out metrics, the training loss and the log history."""
    started_at = time.perf_counter()
    model_args, data_args, training_args = start_recipe(
        (ModelArguments, DataArguments, TrainingArguments), TRAINING_DEFAULTS, args, keep_raw_columns=False
    )
    trainer = make_trainer(model_args, data_args, training_args, callbacks=callbacks)
    return run_training(
        trainer, recipe="video_classification", held_out_split="test", args=args, started_at=started_at
    )


if __name__ == "__main__":
    main()
    end_distributed()

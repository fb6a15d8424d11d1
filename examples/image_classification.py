#!/usr/bin/env python
# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Train `OmniVisionForImageClassification` on scikit-learn's handwritten digits with 🤗 Trainer.

The data comes from `omni_encoders.data.build_digit_images` (1,437 training and 360 held-out scans, upscaled to RGB),
goes through `OmniVisionImageProcessor` on the fly (`datasets.Dataset.with_transform`), and the held-out accuracy is
computed with `omni_encoders.metrics.load("accuracy")`. By default the model is a small one trained from scratch (a
2-layer SigLIP tower of width 64 over 8x8-pixel patches of 32x32 images, one dual-stream block, 8 TiTok tokens);
`--model_name_or_path` fine-tunes a saved checkpoint instead. The output folder holds the model and its processor, so

    pipeline("image-classification", model=output_dir)

works on it. Run it as a script or with accelerate:

    python examples/image_classification.py --output_dir runs/image_classification
    accelerate launch --multi_gpu --num_processes 2 examples/image_classification.py --output_dir runs/ic \\
        --per_device_train_batch_size 16

(the second keeps the global batch at 32). `docs/RESULTS.md` lists the commands, times and accuracies measured.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from transformers import AutoModelForImageClassification, Trainer, TrainingArguments

from omni_encoders import OmniVisionConfig, OmniVisionForImageClassification, OmniVisionImageProcessor
from omni_encoders.data import build_digit_images
from omni_encoders.training import ImageClassificationTransform, classification_metrics
from recipe_utils import end_distributed, run_training, select_first, start_recipe


logger = logging.getLogger(__name__)

# The recipe's training settings: `python examples/image_classification.py --output_dir DIR` reaches the accuracy
# reported in docs/RESULTS.md with them. Every one can be overridden on the command line.
TRAINING_DEFAULTS = {
    "do_train": True,
    "do_eval": True,
    "learning_rate": 2e-3,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "num_train_epochs": 30,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
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
        default=None, metadata={"help": "A saved OmniVision checkpoint to fine-tune; default: train from scratch."}
    )
    image_size: int = field(default=32, metadata={"help": "Side of the (square) model input in pixels."})
    patch_size: int = field(default=8, metadata={"help": "Side of the backbone's patches in pixels."})
    hidden_size: int = field(default=64, metadata={"help": "Width of the backbone and the blocks on top."})
    backbone_layers: int = field(default=2, metadata={"help": "Layers of the SigLIP backbone."})
    num_hidden_layers: int = field(default=1, metadata={"help": "Dual-stream blocks on top of the backbone."})
    num_attention_heads: int = field(default=4, metadata={"help": "Heads of the backbone and of the blocks on top."})
    num_tokens: int = field(default=8, metadata={"help": "TiTok output tokens (the classifier reads their mean)."})
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "eager, sdpa, flash_attention_2 or flex_attention."}
    )


@dataclass
class DataArguments:
    """The data: scikit-learn's digits from `omni_encoders.data.build_digit_images`."""

    test_size: float = field(default=0.2, metadata={"help": "Fraction of the digits held out for evaluation."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the stratified train/test split."})
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "Where built datasets are cached (default ~/.cache/omni_encoders/datasets)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N training digits."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N held-out digits."})


def build_model(model_args: ModelArguments, labels: list[str]) -> OmniVisionForImageClassification:
    label_kwargs = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: index for index, label in enumerate(labels)},
    }
    if model_args.model_name_or_path is not None:
        return AutoModelForImageClassification.from_pretrained(
            model_args.model_name_or_path,
            attn_implementation=model_args.attn_implementation,
            ignore_mismatched_sizes=True,  # a new classifier when the label set differs
            **label_kwargs,
        )
    width, heads = model_args.hidden_size, model_args.num_attention_heads
    config = OmniVisionConfig(
        backbone_config={
            "model_type": "siglip_vision_model",
            "hidden_size": width,
            "intermediate_size": 4 * width,
            "num_hidden_layers": model_args.backbone_layers,
            "num_attention_heads": heads,
            "image_size": model_args.image_size,
            "patch_size": model_args.patch_size,
        },
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=heads,
        num_tokens=model_args.num_tokens,
        attn_implementation=model_args.attn_implementation,
        **label_kwargs,
    )
    return OmniVisionForImageClassification(config)


def make_trainer(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments, callbacks=None
) -> Trainer:
    """The recipe's `Trainer`: digits in, held-out split as the evaluation set."""
    with training_args.main_process_first(desc="building the digit images"):
        dataset = build_digit_images(
            image_size=model_args.image_size,
            test_size=data_args.test_size,
            seed=data_args.split_seed,
            cache_dir=data_args.dataset_cache_dir,
        )
    train_dataset, eval_dataset = dataset["train"], dataset["test"]
    train_dataset = select_first(train_dataset, data_args.max_train_samples)
    eval_dataset = select_first(eval_dataset, data_args.max_eval_samples)

    if model_args.model_name_or_path is not None:
        image_processor = OmniVisionImageProcessor.from_pretrained(model_args.model_name_or_path)
    else:
        size = model_args.image_size
        image_processor = OmniVisionImageProcessor(size={"height": size, "width": size})
    # Processed on the fly, batch by batch, in the DataLoader.
    transform = ImageClassificationTransform(image_processor)
    train_dataset, eval_dataset = train_dataset.with_transform(transform), eval_dataset.with_transform(transform)

    model = build_model(model_args, labels=dataset["train"].features["label"].names)
    logger.info(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=image_processor,
        compute_metrics=classification_metrics("accuracy"),
        callbacks=callbacks,
    )


def main(args: list[str] | None = None, callbacks=None) -> dict:
    """Run the recipe with command-line `args` (default: `sys.argv`) and extra `TrainerCallback`s; returns the
    held-out metrics, the training loss and the log history."""
    started_at = time.perf_counter()
    model_args, data_args, training_args = start_recipe(
        (ModelArguments, DataArguments, TrainingArguments), TRAINING_DEFAULTS, args, keep_raw_columns=True
    )
    trainer = make_trainer(model_args, data_args, training_args, callbacks=callbacks)
    return run_training(
        trainer, recipe="image_classification", held_out_split="test", args=args, started_at=started_at
    )


if __name__ == "__main__":
    main()
    end_distributed()

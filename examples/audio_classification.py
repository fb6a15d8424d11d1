#!/usr/bin/env python
# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Train `OmniAudioForAudioClassification` on spoken digits with 🤗 Trainer and test it on voices it never heard.

The data comes from `omni_encoders.data.build_spoken_digits`: "zero" .. "nine" synthesised by espeak-ng and flite,
each digit said four times by every voice with its own speed and pitch. About a fifth of the voices are held out: the
`test` split has no speaker in common with `train`, so the held-out accuracy measures speaker-independent digit
recognition. The clips are padded batch by batch by `OmniAudioFeatureExtractor` (`AudioCollator`: waveforms
normalised per clip, `attention_mask`), and batches group clips of similar length
(`--train_sampling_strategy group_by_length`). By default the model is a small one trained from scratch on the raw
waveform (a 5-layer convolutional tokenizer with 640 samples per frame, i.e. 25 frames/s, and 2 Conformer blocks of
width 64); `--model_name_or_path` fine-tunes a saved checkpoint instead. The output folder holds the model and its
feature extractor, so

    pipeline("audio-classification", model=output_dir)

works on it. Run it as a script or with accelerate:

    python examples/audio_classification.py --output_dir runs/audio_classification
    accelerate launch --multi_gpu --num_processes 2 examples/audio_classification.py --output_dir runs/ac \\
        --per_device_train_batch_size 16

`docs/RESULTS.md` lists the commands, times and accuracies measured.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, Trainer, TrainingArguments

from omni_encoders import OmniAudioConfig, OmniAudioFeatureExtractor, OmniAudioForAudioClassification
from omni_encoders.data import build_spoken_digits
from omni_encoders.training import AudioCollator, audio_lengths, classification_metrics
from recipe_utils import (
    AudioModelArguments,
    SpeechDataArguments,
    end_distributed,
    run_training,
    select_first,
    start_recipe,
)


logger = logging.getLogger(__name__)

# The recipe's settings: `python examples/audio_classification.py --output_dir DIR` reaches the accuracy reported in
# docs/RESULTS.md with them. Every one can be overridden on the command line.
TRAINING_DEFAULTS = {
    "do_train": True,
    "do_eval": True,
    "learning_rate": 2e-3,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "num_train_epochs": 20,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "train_sampling_strategy": "group_by_length",
    "logging_steps": 20,
    "eval_strategy": "no",
    "save_strategy": "epoch",
    "save_total_limit": 1,
    "seed": 42,
}


@dataclass
class DataArguments(SpeechDataArguments):
    """Spoken digits from `omni_encoders.data.build_spoken_digits`."""

    repeats: int = field(default=4, metadata={"help": "Times each voice says each digit."})
    eval_split: str = field(
        default="test", metadata={"help": "`test` (held-out voices) or `test_seen_voices` (held-out utterances)."}
    )


def build_model(model_args: AudioModelArguments, labels: list[str]) -> OmniAudioForAudioClassification:
    label_kwargs = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: index for index, label in enumerate(labels)},
    }
    if model_args.model_name_or_path is not None:
        return AutoModelForAudioClassification.from_pretrained(
            model_args.model_name_or_path,
            attn_implementation=model_args.attn_implementation,
            ignore_mismatched_sizes=True,  # a new classifier when the label set differs
            **label_kwargs,
            **model_args.checkpoint_overrides(),
        )
    return OmniAudioForAudioClassification(OmniAudioConfig(**model_args.config_kwargs(), **label_kwargs))


def make_trainer(
    model_args: AudioModelArguments, data_args: DataArguments, training_args: TrainingArguments, callbacks=None
) -> Trainer:
    """The recipe's `Trainer`: spoken digits in, the held-out voices as the evaluation set."""
    with training_args.main_process_first(desc="synthesising the spoken digits"):
        dataset = build_spoken_digits(repeats=data_args.repeats, **data_args.builder_kwargs())
    train_dataset = select_first(dataset["train"], data_args.max_train_samples)
    eval_dataset = select_first(dataset[data_args.eval_split], data_args.max_eval_samples)
    # The lengths `group_by_length` batches by (read once here instead of from every clip at each epoch).
    length = training_args.length_column_name
    train_dataset = train_dataset.add_column(length, audio_lengths(train_dataset))
    eval_dataset = eval_dataset.add_column(length, audio_lengths(eval_dataset))

    model = build_model(model_args, labels=dataset["train"].features["label"].names)
    if model_args.model_name_or_path is not None:
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_args.model_name_or_path)
    else:
        feature_extractor = OmniAudioFeatureExtractor(samples_per_frame=model.config.tokenizer_samples_per_frame)
    logger.info(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=AudioCollator(feature_extractor, label_column="label"),
        processing_class=feature_extractor,
        compute_metrics=classification_metrics("accuracy"),
        callbacks=callbacks,
    )


def main(args: list[str] | None = None, callbacks=None) -> dict:
    """Run the recipe with command-line `args` (default: `sys.argv`) and extra `TrainerCallback`s; returns the
    held-out metrics, the training loss and the log history."""
    started_at = time.perf_counter()
    model_args, data_args, training_args = start_recipe(
        (AudioModelArguments, DataArguments, TrainingArguments), TRAINING_DEFAULTS, args, keep_raw_columns=True
    )
    trainer = make_trainer(model_args, data_args, training_args, callbacks=callbacks)
    return run_training(
        trainer, recipe="audio_classification", held_out_split=data_args.eval_split, args=args, started_at=started_at
    )


if __name__ == "__main__":
    main()
    end_distributed()

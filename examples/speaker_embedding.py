#!/usr/bin/env python
# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Train the speaker encoder of `OmniAudioModel` with 🤗 Trainer and test it on speaker verification.

The data comes from `omni_encoders.data.build_spoken_digit_strings`: digit strings read by espeak-ng and flite voices
(voices = speakers), each utterance with its own speed and pitch. The speaker encoder (log-mel frames -> convolutions
-> BiLSTM -> attentive pooling -> L2-normalised embedding, `OmniAudioModel.get_speaker_embeddings`) learns to tell the
training voices apart with an additive-margin softmax (`AdditiveMarginSpeakerClassifier`, owned by the training
wrapper only). It is then tested on speaker verification over `test_seen_voices`, the held-out utterances of the
training voices: trials from `make_verification_trials` (half same-speaker, half different-speaker pairs) scored by
the cosine similarity of the two embeddings, summarised by the equal error rate (`omni_encoders.metrics.load("eer")`).

The output folder is a plain `OmniAudioModel` (plus its feature extractor, which computes the log-mel
`speaker_features`):

    model = AutoModel.from_pretrained(output_dir)
    features = AutoFeatureExtractor.from_pretrained(output_dir)(clips, return_speaker_features=True,
                                                                  sampling_rate=16000, return_tensors="pt")
    embeddings = model.get_speaker_embeddings(features.speaker_features, features.speaker_attention_mask)

Only the speaker encoder trains; the waveform encoder of a fresh model is a minimal untrained one (no Conformer
blocks) unless `--model_name_or_path` starts from a trained `OmniAudioModel` with a speaker encoder. Run it as a
script or with accelerate:

    python examples/speaker_embedding.py --output_dir runs/speaker_embedding
    accelerate launch --multi_gpu --num_processes 2 examples/speaker_embedding.py --output_dir runs/spk \\
        --per_device_train_batch_size 32

`docs/RESULTS.md` lists the commands, times and equal error rates measured.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoModel, TrainingArguments

from omni_encoders import OmniAudioConfig, OmniAudioFeatureExtractor, OmniAudioModel
from omni_encoders.data import build_spoken_digit_strings, make_verification_trials
from omni_encoders.training import (
    SPEAKER_CLASSIFIER_WEIGHTS,
    AdditiveMarginSpeakerClassifier,
    AudioCollator,
    SpeakerEmbeddingTrainer,
    audio_lengths,
    speaker_verification_metrics,
)
from recipe_utils import (
    AudioModelArguments,
    SpeechDataArguments,
    end_distributed,
    run_training,
    select_first,
    start_recipe,
)


logger = logging.getLogger(__name__)

# The recipe's settings: `python examples/speaker_embedding.py --output_dir DIR` reaches the equal error rate reported
# in docs/RESULTS.md with them. Every one can be overridden on the command line.
TRAINING_DEFAULTS = {
    "do_train": True,
    "do_eval": True,
    "use_speaker_encoder": True,
    "num_hidden_layers": 0,
    "learning_rate": 2e-3,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "num_train_epochs": 20,
    "per_device_train_batch_size": 64,
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
    """Spoken digit strings from `omni_encoders.data.build_spoken_digit_strings`; verification trials over
    `test_seen_voices`."""

    utterances_per_voice: int = field(default=20, metadata={"help": "Digit strings said by each voice."})
    min_digits: int = field(default=3, metadata={"help": "Shortest digit string."})
    max_digits: int = field(default=6, metadata={"help": "Longest digit string."})
    num_trials: int = field(default=2000, metadata={"help": "Verification trials (half same-speaker)."})
    trials_seed: int = field(default=0, metadata={"help": "Seed of the verification trials."})


@dataclass
class SpeakerArguments:
    """The additive-margin softmax (AM-softmax) that trains the speaker encoder."""

    margin: float = field(default=0.2, metadata={"help": "Cosine margin m of the additive-margin softmax."})
    scale: float = field(default=30.0, metadata={"help": "Logit scale s of the additive-margin softmax."})


def build_model(model_args: AudioModelArguments) -> OmniAudioModel:
    if model_args.model_name_or_path is not None:
        model = AutoModel.from_pretrained(
            model_args.model_name_or_path,
            attn_implementation=model_args.attn_implementation,
            **model_args.checkpoint_overrides(),
        )
        if model.speaker_encoder is None:
            raise ValueError(f"{model_args.model_name_or_path} has no speaker encoder (use_speaker_encoder=False).")
        return model
    return OmniAudioModel(OmniAudioConfig(**model_args.config_kwargs()))


def make_trainer(
    model_args: AudioModelArguments,
    data_args: DataArguments,
    speaker_args: SpeakerArguments,
    training_args: TrainingArguments,
    callbacks=None,
) -> SpeakerEmbeddingTrainer:
    """The recipe's `Trainer`: speaker classification over the training voices, verification on their held-out
    utterances."""
    with training_args.main_process_first(desc="synthesising the spoken digit strings"):
        dataset = build_spoken_digit_strings(
            utterances_per_voice=data_args.utterances_per_voice,
            min_digits=data_args.min_digits,
            max_digits=data_args.max_digits,
            **data_args.builder_kwargs(),
        )
    train_dataset = select_first(dataset["train"], data_args.max_train_samples)
    eval_dataset = select_first(dataset["test_seen_voices"], data_args.max_eval_samples)
    # The lengths `group_by_length` batches by (evaluation keeps the dataset order, which the trials index).
    train_dataset = train_dataset.add_column(training_args.length_column_name, audio_lengths(train_dataset))
    trials = make_verification_trials(
        list(eval_dataset["speaker_id"]), num_trials=data_args.num_trials, seed=data_args.trials_seed
    )
    # Training voices have the speaker ids 0 .. number of training voices - 1.
    num_speakers = int(max(dataset["train"]["speaker_id"])) + 1

    model = build_model(model_args)
    if model_args.model_name_or_path is not None:
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_args.model_name_or_path)
    else:
        feature_extractor = OmniAudioFeatureExtractor(
            samples_per_frame=math.prod(model_args.tokenizer_strides),
            speaker_num_mel_bins=model.config.speaker_num_mel_bins,
        )
    classifier = AdditiveMarginSpeakerClassifier(
        model, num_speakers=num_speakers, margin=speaker_args.margin, scale=speaker_args.scale
    )
    if model_args.model_name_or_path is not None:
        # Continue from the saved speaker directions when they are for the same speakers.
        directions_file = os.path.join(model_args.model_name_or_path, SPEAKER_CLASSIFIER_WEIGHTS)
        if os.path.isfile(directions_file):
            directions = load_file(directions_file)["speaker_directions"]
            if directions.shape == classifier.speaker_directions.shape:
                classifier.speaker_directions.data.copy_(directions)
    logger.info(
        f"speaker encoder: {sum(p.numel() for p in model.speaker_encoder.parameters()) / 1e6:.2f} M parameters, "
        f"{num_speakers} training speakers, {len(trials)} trials over {len(eval_dataset)} held-out utterances"
    )
    return SpeakerEmbeddingTrainer(
        model=classifier,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=AudioCollator(feature_extractor, label_column="speaker_id", speaker_features=True),
        processing_class=feature_extractor,
        compute_metrics=speaker_verification_metrics(trials),
        callbacks=callbacks,
    )


def main(args: list[str] | None = None, callbacks=None) -> dict:
    """Run the recipe with command-line `args` (default: `sys.argv`) and extra `TrainerCallback`s; returns the
    held-out metrics, the training loss and the log history."""
    started_at = time.perf_counter()
    model_args, data_args, speaker_args, training_args = start_recipe(
        (AudioModelArguments, DataArguments, SpeakerArguments, TrainingArguments),
        TRAINING_DEFAULTS,
        args,
        keep_raw_columns=True,
    )
    trainer = make_trainer(model_args, data_args, speaker_args, training_args, callbacks=callbacks)
    return run_training(
        trainer, recipe="speaker_embedding", held_out_split="test_seen_voices", args=args, started_at=started_at
    )


if __name__ == "__main__":
    main()
    end_distributed()

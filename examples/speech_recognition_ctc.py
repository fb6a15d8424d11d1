#!/usr/bin/env python
# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Train `OmniAudioForCTC` to transcribe spoken digit strings with 🤗 Trainer (CTC over a character vocabulary).

The data comes from `omni_encoders.data.build_spoken_digit_strings`: strings of 3 to 6 random digits read out digit by
digit ("three one four") by espeak-ng and flite voices, each utterance with its own speed and pitch. The transcript
the model learns is the `digits` column ("314"): a vocabulary of the ten digits (plus the CTC blank and the tokenizer's
special tokens, `OmniAudioProcessor.from_characters("0123456789")`), so the character error rate is the digit error
rate. The held-out set is by default the `test` split, whose voices are never heard in training (`--eval_split
test_seen_voices` scores held-out utterances of the training voices instead). Predictions are decoded greedily
(argmax per frame, `ctc_argmax`; repeats collapsed and blanks dropped by the processor) and scored with
`omni_encoders.metrics.load("cer")`.

By default the model is a small one trained from scratch on the raw waveform: a 5-layer convolutional tokenizer with
640 samples per frame (25 frames/s: a string of 6 digits lasts well over the 11 frames CTC needs for 6 labels with a
repeat) and 3 Conformer blocks of width 128. The output folder holds the model and its processor (feature extractor
+ tokenizer), so

    pipeline("automatic-speech-recognition", model=output_dir)

transcribes audio with it. Run it as a script or with accelerate:

    python examples/speech_recognition_ctc.py --output_dir runs/speech_recognition_ctc
    accelerate launch --multi_gpu --num_processes 2 examples/speech_recognition_ctc.py --output_dir runs/ctc \\
        --per_device_train_batch_size 16

Long audio (README, "Long audio"): `--attention_chunk_size 25 --attention_left_chunks 2` trains with chunked attention
(1 s chunks at 25 frames/s, each seeing the 2 s before it), the mode a model for long files runs in; and
`--output_downsample_rate 2` pools the Conformer's output to 12.5 frames/s. CTC needs at least as many frames as labels
plus repeated labels: at 12.5 frames/s the fastest string of the data (about 0.16 s per digit) still has 1.6 times
that, while at 6.25 frames/s (`4`) a few strings have fewer frames than their labels need. Use a rate of 2 at most with
640 samples per frame. `--utterances_per_clip 4` trains on clips of 4 utterances joined with 0.3 s of silence (a
model for long files should hear more than one utterance per clip), and for a streamable model add
`--conv_module_causal true --tokenizer_norm_statistics causal --normalize_audio false` (its frames then depend on
no future audio, as `OmniAudioForCTC.stream_logits` needs, and it hears raw samples as a stream gives them). Train
such models by fine-tuning an offline one (`--model_name_or_path`, e.g. 7 epochs at `--learning_rate 1e-3`): from
scratch, in this budget, CTC stays at its all-blank start with a causal model or with joined clips.

`docs/RESULTS.md` lists the commands, times and error rates measured.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from datasets import concatenate_datasets
from transformers import AutoModelForCTC, AutoProcessor, Trainer, TrainingArguments

from omni_encoders import OmniAudioConfig, OmniAudioFeatureExtractor, OmniAudioForCTC, OmniAudioProcessor
from omni_encoders.data import DIGIT_WORDS, build_spoken_digit_strings, build_spoken_digits, join_utterances
from omni_encoders.training import CTCCollator, audio_lengths, ctc_argmax, ctc_metrics
from recipe_utils import (
    AudioModelArguments,
    SpeechDataArguments,
    end_distributed,
    run_training,
    select_first,
    start_recipe,
)


logger = logging.getLogger(__name__)

# The recipe's settings: `python examples/speech_recognition_ctc.py --output_dir DIR` reaches the error rate reported
# in docs/RESULTS.md with them. Every one can be overridden on the command line.
TRAINING_DEFAULTS = {
    "do_train": True,
    "do_eval": True,
    "tokenizer_channels": [16, 64, 128, 128, 128],
    "hidden_size": 128,
    "num_hidden_layers": 3,
    "kv_lora_rank": 64,
    "qk_rope_head_dim": 16,
    # On the CPU, eager attention trains this model's short sequences (<= 100 frames) about 20 % faster than sdpa.
    "attn_implementation": "eager",
    # The model underfits the digit strings in the time budget: no dropout.
    "hidden_dropout": 0.0,
    "learning_rate": 2e-3,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.1,
    "num_train_epochs": 14,
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
    """Spoken digit strings from `omni_encoders.data.build_spoken_digit_strings`."""

    utterances_per_voice: int = field(default=40, metadata={"help": "Digit strings said by each voice."})
    min_digits: int = field(default=3, metadata={"help": "Shortest digit string."})
    max_digits: int = field(default=6, metadata={"help": "Longest digit string."})
    text_column: str = field(
        default="digits", metadata={"help": 'The transcript: `digits` ("314") or `text` ("three one four").'}
    )
    eval_splits: list[str] = field(
        default_factory=lambda: ["test_seen_voices", "test"],
        metadata={
            "help": "Held-out splits to score: `test_seen_voices` (held-out utterances of the training voices) and/or "
            "`test` (voices never heard in training); metrics `eval_<split>_cer`."
        },
    )
    spoken_digit_repeats: int = field(
        default=2,
        metadata={
            "help": "Also train on the single spoken digits of the training voices (`build_spoken_digits`, each digit "
            "said this many times per voice; the same voices and split): one-label utterances that get CTC past its "
            "all-blank start. 0: digit strings only."
        },
    )
    utterances_per_clip: int = field(
        default=1,
        metadata={
            "help": "Join this many training utterances (a seeded random order) into each training clip, with "
            "`utterance_gap_s` of silence between them and their transcripts joined: clips like a long recording, for "
            "a model meant for long files or streams. The held-out sets stay single utterances."
        },
    )
    utterance_gap_s: float = field(default=0.3, metadata={"help": "Silence between joined utterances, in seconds."})
    normalize_audio: bool | None = field(
        default=None,
        metadata={
            "help": "The feature extractor's `do_normalize` (each clip to zero mean and unit variance over its valid "
            "samples; default: true for a new model, the checkpoint's when fine-tuning). Train a model for streams "
            "with false: `stream_logits` hears the raw samples, as a stream cannot be scaled by audio not yet heard."
        },
    )


def vocabulary(text_column: str) -> str:
    """The characters of the transcripts: the digits, or the letters of the digit words."""
    if text_column == "digits":
        return "0123456789"
    return "".join(sorted(set("".join(DIGIT_WORDS))))


def make_trainer(
    model_args: AudioModelArguments, data_args: DataArguments, training_args: TrainingArguments, callbacks=None
) -> Trainer:
    """The recipe's `Trainer`: spoken digit strings in, held-out utterances as the evaluation set."""
    with training_args.main_process_first(desc="synthesising the spoken digit strings"):
        dataset = build_spoken_digit_strings(
            utterances_per_voice=data_args.utterances_per_voice,
            min_digits=data_args.min_digits,
            max_digits=data_args.max_digits,
            **data_args.builder_kwargs(),
        )
    train_dataset = dataset["train"]
    if data_args.spoken_digit_repeats > 0:
        with training_args.main_process_first(desc="synthesising the spoken digits"):
            digits = build_spoken_digits(repeats=data_args.spoken_digit_repeats, **data_args.builder_kwargs())
        # the same voices in the same split (same seed and voices): no held-out voice is trained on
        assert digits["train"].features["speaker_id"] == train_dataset.features["speaker_id"]
        train_dataset = concatenate_datasets([train_dataset, digits["train"].remove_columns("label")])
        train_dataset.set_format("numpy", columns=["audio"], output_all_columns=True)
    train_dataset = select_first(train_dataset, data_args.max_train_samples)
    if data_args.utterances_per_clip > 1:
        train_dataset = join_utterances(
            train_dataset, data_args.utterances_per_clip, data_args.utterance_gap_s, seed=training_args.seed
        )
    # The lengths `group_by_length` batches by (read once here instead of from every clip at each epoch).
    length = training_args.length_column_name
    train_dataset = train_dataset.add_column(length, audio_lengths(train_dataset))
    eval_datasets = {}
    for split in data_args.eval_splits:
        eval_dataset = select_first(dataset[split], data_args.max_eval_samples)
        eval_datasets[split] = eval_dataset.add_column(length, audio_lengths(eval_dataset))

    if model_args.model_name_or_path is not None:
        processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)
        model = AutoModelForCTC.from_pretrained(
            model_args.model_name_or_path,
            attn_implementation=model_args.attn_implementation,
            **model_args.checkpoint_overrides(),
        )
    else:
        processor = OmniAudioProcessor.from_characters(
            vocabulary(data_args.text_column),
            feature_extractor=OmniAudioFeatureExtractor(samples_per_frame=math.prod(model_args.tokenizer_strides)),
        )
        config = OmniAudioConfig(
            **model_args.config_kwargs(),
            vocab_size=len(processor.tokenizer),
            pad_token_id=processor.tokenizer.pad_token_id,  # the CTC blank
            bos_token_id=processor.tokenizer.bos_token_id,
            eos_token_id=processor.tokenizer.eos_token_id,
        )
        model = OmniAudioForCTC(config)
        if config.conv_module_causal and config.tokenizer_norm_statistics != "clip":
            logger.warning(
                "Training a causal (streamable) model from scratch: in this recipe's budget such runs stayed at CTC's "
                "all-blank start or reached a CER of 0.6 at best (docs/RESULTS.md, 'Long audio'). Train the model "
                "offline first (without --conv_module_causal and --tokenizer_norm_statistics), then fine-tune it into "
                "this configuration with --model_name_or_path."
            )
    if data_args.normalize_audio is not None:
        processor.feature_extractor.do_normalize = data_args.normalize_audio
    logger.info(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets,
        data_collator=CTCCollator(processor, text_column=data_args.text_column),
        processing_class=processor,
        compute_metrics=ctc_metrics(processor, "cer"),
        preprocess_logits_for_metrics=ctc_argmax,
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
        trainer,
        recipe="speech_recognition_ctc",
        held_out_split=",".join(data_args.eval_splits),
        args=args,
        started_at=started_at,
    )


if __name__ == "__main__":
    main()
    end_distributed()

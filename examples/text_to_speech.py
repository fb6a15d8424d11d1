#!/usr/bin/env python
# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Train `OmniAudioDecoderModel` (text to speech) on one voice with 🤗 Trainer.

The data is `omni_encoders.data.build_spoken_digit_strings` with a single voice (`flite:slt` by default,
`test_voices=0`): 400 random strings of 3 to 6 digits read out word by word ("three one four"), each at its own
speaking rate and pitch (factors 0.85-1.15 and 0.9-1.1), split into 320 training and 80 held-out utterances. The model reads
the `text` column (the words spoken) and learns the speech of `audio`; digit strings rather than single digits, so
that the alignment has several words per utterance to find. `OmniAudioDecoderCollator` turns each batch into the
model's inputs and targets (characters, log-mel, pitch, energy and, to train the vocoder, the waveforms).

Durations are learned without an external aligner (a soft alignment trained with a forward-sum loss, binarised by
Monotonic Alignment Search). The held-out evaluation (`omni_encoders.training.TextToSpeechMetrics`) reports the mel L1
of the teacher-forced decoder, the alignment check (every real character gets >= 1 frame and the durations sum to
the frame count) and the duration predictor's errors; the recipe evaluates once before training too, so
`results.json` holds the mel L1 at initialisation and after training. For flite voices it also compares the word
boundaries of the alignment with flite's own segment timings (`omni_encoders.data.word_end_times`), before training
(`init_word_boundary_*`) and after (`word_boundary_*`).

By default the model is a small one trained from scratch (hidden 128, 2 + 2 FFT blocks, 80-bin mels) together with
its 64-channel vocoder (multi-resolution STFT loss on random 8-frame segments of the target mel; `--train_vocoder
false` trains the acoustic model alone in about a quarter less time). In this budget the vocoder is still far from
a trained one: see docs/RESULTS.md. The output folder holds the model and its processor, so

    pipeline("text-to-audio", model=output_dir)

works on it. Run it as a script or with accelerate:

    OMP_NUM_THREADS=1 python examples/text_to_speech.py --output_dir runs/text_to_speech
    accelerate launch --multi_gpu --num_processes 2 examples/text_to_speech.py --output_dir runs/tts_2proc \\
        --per_device_train_batch_size 8

With `--ctc_model_path` (a folder saved by examples/speech_recognition_ctc.py) it also synthesises the held-out
digit strings and transcribes them with that model: `synthesis_cer` in results.json.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from recipe_utils import end_distributed, run_training, select_first, start_recipe
from transformers import AutoModelForTextToWaveform, AutoProcessor, Trainer, TrainingArguments

from omni_encoders import (
    OmniAudioDecoderCollator,
    OmniAudioDecoderConfig,
    OmniAudioDecoderFeatureExtractor,
    OmniAudioDecoderModel,
    OmniAudioDecoderProcessor,
    OmniAudioDecoderTokenizer,
)
from omni_encoders.data import build_spoken_digit_strings, word_end_times
from omni_encoders.training import TextToSpeechMetrics

logger = logging.getLogger(__name__)

# The recipe's training settings: `python examples/text_to_speech.py --output_dir DIR` reaches the result reported in
# docs/RESULTS.md with them. Every one can be overridden on the command line.
TRAINING_DEFAULTS = {
    "do_train": True,
    "do_eval": True,
    "learning_rate": 2e-3,
    "weight_decay": 0.01,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "num_train_epochs": 20,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 16,
    "max_grad_norm": 1.0,
    "bf16": False,
    "logging_steps": 20,
    "eval_strategy": "no",
    "save_strategy": "epoch",
    "save_total_limit": 1,
    "seed": 42,
    # The evaluation needs each utterance's frame and token masks next to the target mel (TextToSpeechMetrics).
    "label_names": list(TextToSpeechMetrics.label_names),
}


@dataclass
class ModelArguments:
    """The model: a saved checkpoint to fine-tune, or the size of a fresh one trained from scratch."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A saved OmniAudioDecoder checkpoint to fine-tune; default: train from scratch."},
    )
    hidden_size: int = field(default=128, metadata={"help": "Width of the FFT blocks."})
    encoder_layers: int = field(default=2, metadata={"help": "FFT blocks over the characters."})
    decoder_layers: int = field(default=2, metadata={"help": "FFT blocks over the mel frames."})
    num_attention_heads: int = field(default=2, metadata={"help": "Attention heads (and key/value heads)."})
    kv_lora_rank: int = field(default=64, metadata={"help": "Width of the latent attention's key/value latent."})
    intermediate_size: int = field(default=256, metadata={"help": "Channels of the convolutional feed-forward."})
    ffn_kernel_size: int = field(default=3, metadata={"help": "Kernel of the feed-forward's first convolution."})
    postnet_channels: int = field(default=64, metadata={"help": "Channels of the 5-layer postnet."})
    dropout: float = field(
        default=0.0, metadata={"help": "Dropout in the FFT blocks, the postnet and the variance predictors."}
    )
    alignment_temperature: float | None = field(
        default=None, metadata={"help": "Scale of the aligner's squared distances (default: the config's)."}
    )
    vocoder_initial_channels: int = field(
        default=64, metadata={"help": "Channels of the vocoder before its first upsampling (halved by each)."}
    )
    vocoder_initializer_range: float = field(
        default=0.06,
        metadata={"help": "Std of the vocoder's initial weights (HiFi-GAN's 0.01 starts a narrow vocoder silent)."},
    )
    train_vocoder: bool = field(
        default=True,
        metadata={
            "help": "Also train the vocoder (multi-resolution STFT loss on target segments); false: the acoustic "
            "model alone, the vocoder stays as initialised."
        },
    )
    vocoder_segment_frames: int = field(default=8, metadata={"help": "Mel frames per vocoder training segment."})
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "eager, sdpa, flash_attention_2 or flex_attention."}
    )


@dataclass
class DataArguments:
    """The data: one voice's digit strings from `omni_encoders.data.build_spoken_digit_strings`."""

    voice: str = field(
        default="flite:slt", metadata={"help": "The voice to learn, e.g. flite:slt or espeak-ng:en-us."}
    )
    utterances: int = field(default=400, metadata={"help": "Utterances of the voice (training + held out)."})
    test_utterances: float = field(default=0.2, metadata={"help": "Fraction of the utterances held out."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the texts, speeds, pitches and the split."})
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "Where built datasets are cached (default ~/.cache/omni_encoders/datasets)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N utterances."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N held-out ones."})
    check_word_boundaries: bool = field(
        default=True,
        metadata={"help": "Compare the alignment's word boundaries with flite's timings (flite voices only)."},
    )
    ctc_model_path: str | None = field(
        default=None,
        metadata={
            "help": "A CTC model (examples/speech_recognition_ctc.py) to transcribe the synthesised held-out "
            "digit strings with; reports synthesis_cer."
        },
    )


def variance_statistics(dataset, feature_extractor: OmniAudioDecoderFeatureExtractor, limit: int = 64) -> dict:
    """Mean and std of log-F0 (voiced frames) and of `log1p(energy)` over the first `limit` utterances, to
    standardise the model's pitch and energy targets (the config's defaults are generic)."""
    rows = select_first(dataset, limit)
    features = feature_extractor([audio["array"] for audio in rows["audio"]], sampling_rate=16000)
    valid = np.asarray(features["labels_attention_mask"], dtype=bool)
    pitch = np.asarray(features["pitch_labels"])[valid]
    log_f0 = np.log(pitch[pitch > 0])
    log_energy = np.log1p(np.asarray(features["energy_labels"])[valid])
    return {
        "pitch_mean": float(log_f0.mean()), "pitch_std": float(log_f0.std()),
        "energy_mean": float(log_energy.mean()), "energy_std": float(log_energy.std()),
    }  # fmt: skip


def build_model(model_args: ModelArguments, statistics: dict | None = None) -> OmniAudioDecoderModel:
    if model_args.model_name_or_path is not None:
        return AutoModelForTextToWaveform.from_pretrained(
            model_args.model_name_or_path, attn_implementation=model_args.attn_implementation
        )
    width, heads = model_args.hidden_size, model_args.num_attention_heads
    overrides = {}
    if model_args.alignment_temperature is not None:
        overrides["alignment_temperature"] = model_args.alignment_temperature
    config = OmniAudioDecoderConfig(
        hidden_size=width,
        encoder_layers=model_args.encoder_layers,
        decoder_layers=model_args.decoder_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        kv_lora_rank=model_args.kv_lora_rank,
        qk_rope_head_dim=min(32, width // heads),
        intermediate_size=model_args.intermediate_size,
        ffn_kernel_size=model_args.ffn_kernel_size,
        hidden_dropout=model_args.dropout,
        variance_predictor_dropout=model_args.dropout,
        variance_predictor_hidden_size=width,
        postnet_channels=model_args.postnet_channels,
        num_speakers=0,  # one voice: no speaker table, so the pipeline speaks it without a speaker argument
        vocoder_initial_channels=model_args.vocoder_initial_channels,
        vocoder_segment_frames=model_args.vocoder_segment_frames,
        vocoder_initializer_range=model_args.vocoder_initializer_range,
        attn_implementation=model_args.attn_implementation,
        **(statistics or {}),
        **overrides,
    )
    return OmniAudioDecoderModel(config)


def load_data(data_args: DataArguments, training_args: TrainingArguments):
    with training_args.main_process_first(desc="synthesising the digit strings"):
        dataset = build_spoken_digit_strings(
            voices=[data_args.voice],
            test_voices=0,
            utterances_per_voice=data_args.utterances,
            test_utterances=data_args.test_utterances,
            seed=data_args.split_seed,
            cache_dir=data_args.dataset_cache_dir,
        )
    train_dataset, eval_dataset = dataset["train"], dataset["test_seen_voices"]
    train_dataset = select_first(train_dataset, data_args.max_train_samples)
    eval_dataset = select_first(eval_dataset, data_args.max_eval_samples)
    return train_dataset, eval_dataset


def make_trainer(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments, callbacks=None
) -> Trainer:
    """The recipe's `Trainer`: one voice's digit strings in, its held-out utterances as the evaluation set."""
    train_dataset, eval_dataset = load_data(data_args, training_args)
    if model_args.model_name_or_path is not None:
        processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)
        model = build_model(model_args)
    else:
        # DIO at speed 4: the same pitch targets about 10x faster (they are extracted batch by batch, every epoch).
        processor = OmniAudioDecoderProcessor(
            OmniAudioDecoderFeatureExtractor(pitch_speed=4), OmniAudioDecoderTokenizer()
        )
        model = build_model(model_args, variance_statistics(train_dataset, processor.feature_extractor))
    vocoder = sum(parameter.numel() for parameter in model.vocoder.parameters())
    logger.info(f"model: {(model.num_parameters() - vocoder) / 1e6:.2f} M acoustic + {vocoder / 1e6:.2f} M vocoder")
    # Only the text and the speech: without a `speaker_id` column the collator passes no speaker (num_speakers=0).
    columns = ["text", "audio"]
    train_dataset, eval_dataset = train_dataset.select_columns(columns), eval_dataset.select_columns(columns)
    metrics = TextToSpeechMetrics()
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=OmniAudioDecoderCollator(processor, return_waveforms=model_args.train_vocoder),
        processing_class=processor,
        preprocess_logits_for_metrics=metrics.preprocess,
        compute_metrics=metrics,
        callbacks=callbacks,
    )


@torch.no_grad()
def word_boundary_errors(model, processor, dataset, voice: str, batch_size: int = 16) -> dict:
    """Where the learned alignment puts the boundaries between words, against flite's own timings: the absolute
    difference, in milliseconds, between the frame where a word's last character ends (Monotonic Alignment Search on
    the held-out utterance) and the end of the word's last phone."""
    collator = OmniAudioDecoderCollator(processor, return_pitch=False, return_waveforms=False)
    frame_ms = 1000 * model.config.hop_length / model.config.sampling_rate
    errors = []
    model.eval()
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[index] for index in range(start, min(start + batch_size, len(dataset)))]
        batch = collator([{"text": row["text"], "audio": row["audio"]} for row in rows]).to(model.device)
        durations = model(**batch).durations.cpu().numpy()
        for row, item in zip(rows, durations):
            ends = np.cumsum(item)[np.cumsum([len(word) + 1 for word in row["text"].split()]) - 2]
            truth = word_end_times(voice, row["text"], row["speed"], row["pitch"]) * 1000
            errors.extend(np.abs(ends[:-1] * frame_ms - truth[:-1]))  # between words (the last one ends the audio)
    errors = np.asarray(errors)
    return {
        "word_boundary_error_ms_mean": round(float(errors.mean()), 1),
        "word_boundary_error_ms_median": round(float(np.median(errors)), 1),
        "word_boundaries_within_2_frames": round(float((errors <= 2 * frame_ms).mean()), 3),
        "word_boundaries": int(errors.size),
    }


@torch.no_grad()
def synthesis_cer(model, processor, dataset, ctc_model_path: str, batch_size: int = 16) -> dict:
    """Synthesise the held-out texts and transcribe the speech with a CTC model; the character error rate against
    the digit strings (or the words, for a CTC model that writes words)."""
    from transformers import pipeline

    from omni_encoders import metrics

    model.eval()
    recogniser = pipeline("automatic-speech-recognition", model=ctc_model_path, device="cpu")
    speech = []
    for start in range(0, len(dataset), batch_size):
        texts = list(dataset[start : start + batch_size]["text"])
        output = model.generate(**processor(text=texts, return_tensors="pt").to(model.device))
        for waveform, length in zip(output.waveform, output.waveform_lengths):
            speech.append(waveform[: int(length)].float().cpu().numpy())
    transcripts = [result["text"] for result in recogniser(speech, batch_size=batch_size)]
    writes_digits = all(char.isdigit() or char.isspace() for text in transcripts for char in text)
    references = list(dataset["digits"]) if writes_digits else list(dataset["text"])
    predictions = [text.replace(" ", "") for text in transcripts] if writes_digits else transcripts
    cer = metrics.load("cer", keep_in_memory=True).compute(predictions=predictions, references=references)["cer"]
    logger.info(f"synthesised {references[:3]} -> transcribed {transcripts[:3]}")
    return {"synthesis_cer": round(float(cer), 4), "synthesis_examples": list(zip(references[:5], transcripts[:5]))}


def main(args: list[str] | None = None, callbacks=None) -> dict:
    """Run the recipe with command-line `args` (default: `sys.argv`) and extra `TrainerCallback`s; returns the
    held-out metrics (`eval_*`, and `init_*` before training), the training loss and the log history."""
    started_at = time.perf_counter()
    model_args, data_args, training_args = start_recipe(
        (ModelArguments, DataArguments, TrainingArguments), TRAINING_DEFAULTS, args, keep_raw_columns=True
    )
    trainer = make_trainer(model_args, data_args, training_args, callbacks=callbacks)

    model = trainer.accelerator.unwrap_model(trainer.model)
    processor = trainer.processing_class
    held_out = load_data(data_args, training_args)[1]  # with the speed and pitch columns word_end_times needs
    check_boundaries = (
        training_args.do_eval and data_args.check_word_boundaries and data_args.voice.startswith("flite:")
    )
    initial = {}
    if training_args.do_train and training_args.do_eval:
        initial = trainer.evaluate(metric_key_prefix="init")  # the model as initialised (or loaded)
        if check_boundaries:  # where the untrained aligner (mostly its diagonal prior) puts the word boundaries
            boundaries = word_boundary_errors(model, processor, held_out, data_args.voice)
            initial.update({f"init_{key}": value for key, value in boundaries.items() if key != "word_boundaries"})
    results = run_training(trainer, recipe="text_to_speech", held_out_split="test_seen_voices", args=args,
                           started_at=started_at)  # fmt: skip
    results.update(initial)

    extra = {
        key: value
        for key, value in initial.items()
        if key in ("init_mel_l1", "init_loss", "init_alignment_ok") or key.startswith("init_word_boundar")
    }
    if "init_mel_l1" in initial and "eval_mel_l1" in results:
        extra["mel_l1_ratio"] = round(results["eval_mel_l1"] / initial["init_mel_l1"], 4)
    if check_boundaries:
        extra.update(word_boundary_errors(model, processor, held_out, data_args.voice))
    if training_args.do_eval and data_args.ctc_model_path is not None:
        extra.update(synthesis_cer(model, processor, held_out, data_args.ctc_model_path))
    results.update(extra)
    if trainer.is_world_process_zero() and extra:
        path = os.path.join(training_args.output_dir, "results.json")
        with open(path) as handle:
            report = json.load(handle)
        report["metrics"].update(extra)
        report["wall_seconds_with_checks"] = round(time.perf_counter() - started_at, 1)
        with open(path, "w") as handle:
            json.dump(report, handle, indent=2)
        logger.info(f"text_to_speech: {extra}")
    return results


if __name__ == "__main__":
    main()
    end_distributed()

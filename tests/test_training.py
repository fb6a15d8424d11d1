"""Training with 🤗 Trainer: every recipe in `examples/` runs at a tiny size and learns, saves a model its pipeline
loads, resumes from a checkpoint to the very same weights, and trains the same with two `accelerate launch` processes
as with one at the same global batch size.

A new recipe plugs in with one `TINY_RECIPES` entry: its script name, command-line flags for a tiny model on a small
slice of its data, the held-out metric it reports, and a check of the pipeline on the saved folder.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, TrainerCallback, pipeline

from omni_encoders.data import build_digit_images, build_moving_digit_videos
from omni_encoders.training import ImageClassificationTransform, VideoClassificationTransform, classification_metrics

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@dataclass
class TinyRecipe:
    """How to run one recipe at a tiny size in the tests."""

    script: str  # examples/<script>.py
    args: list[str]  # tiny model, small data slice; the test adds --output_dir, --max_steps, --logging_steps
    metric: str  # the held-out metric the recipe reports
    # (output_dir, dataset cache dir, the recipe's results) -> asserts that the saved folder serves its pipeline and
    # that the pipeline scores the held-out examples as the recipe's evaluation did.
    check_saved: Callable[[str, Path, dict], None]


NUM_EVAL = 36  # not a multiple of the evaluation batch: a dropped last batch would show


def _check_image_classifier(output_dir: str, cache_dir: Path, results: dict) -> None:
    classifier = pipeline("image-classification", model=output_dir, device="cpu")
    held_out = build_digit_images(image_size=16, cache_dir=cache_dir)["test"].select(range(NUM_EVAL))
    predictions = classifier(list(held_out["image"]), top_k=10, batch_size=16)
    assert {p["label"] for p in predictions[0]} == {str(digit) for digit in range(10)}
    assert abs(sum(p["score"] for p in predictions[0]) - 1) < 1e-4
    correct = [top[0]["label"] == str(label) for top, label in zip(predictions, list(held_out["label"]), strict=True)]
    assert sum(correct) / NUM_EVAL == pytest.approx(results["eval_accuracy"], abs=1e-9)


# The audio recipes' tiny encoder: 4 strided convolutions (320 samples per frame), one Conformer block of width 16.
TINY_AUDIO_FLAGS = [
    "--tokenizer_channels", "8", "16", "16", "16", "--tokenizer_kernel_sizes", "10", "8", "4", "4",
    "--tokenizer_strides", "5", "4", "4", "4", "--hidden_size", "16", "--num_hidden_layers", "1",
    "--num_attention_heads", "2", "--num_key_value_heads", "1", "--kv_lora_rank", "8", "--qk_rope_head_dim", "4",
    "--conv_kernel_size", "5", "--hidden_dropout", "0",
]  # fmt: skip
# Four voices (two of each engine; the split holds one of each out) say few, short utterances: synthesised in seconds.
TINY_SPEECH = {"num_voices": 4, "test_voices": 0.2}
TINY_DIGITS = {**TINY_SPEECH, "repeats": 1}
TINY_STRINGS = {**TINY_SPEECH, "utterances_per_voice": 10, "max_digits": 4}

def _check_text_to_speech(output_dir: str, cache_dir: Path, results: dict) -> None:
    from omni_encoders import OmniAudioDecoderCollator
    from omni_encoders.data import build_spoken_digit_strings

    tts = pipeline("text-to-audio", model=output_dir, device="cpu")
    model, processor = tts.model, tts.processor
    held_out = build_spoken_digit_strings(voices=["flite:slt"], test_voices=0, utterances_per_voice=TTS_UTTERANCES,
                                          cache_dir=cache_dir)["test_seen_voices"]  # fmt: skip
    speech = tts(held_out[0]["text"])
    expected = model.generate(**processor(text=held_out[0]["text"], return_tensors="pt"))
    assert speech["sampling_rate"] == 16000 and speech["audio"].shape == (int(expected.waveform_lengths[0]),)
    assert np.allclose(speech["audio"], expected.waveform[0].numpy(), atol=1e-6)
    # The saved model and processor score the held-out utterances as the recipe's evaluation did.
    batch = OmniAudioDecoderCollator(processor, return_waveforms=False)(
        [{"text": row["text"], "audio": row["audio"]} for row in held_out]
    )
    with torch.no_grad():
        out = model(**batch)
    valid = batch["labels_attention_mask"].bool()[..., None]
    mel_l1 = ((out.mel - batch["labels"]).abs() * valid).sum() / (valid.sum() * out.mel.shape[-1])
    assert mel_l1.item() == pytest.approx(results["eval_mel_l1"], rel=1e-4)
    assert results["eval_alignment_ok"] == 1.0 and results["eval_alignment_min_token_frames"] >= 1
    assert results["eval_mel_l1"] < results["init_mel_l1"]
    assert results["mel_l1_ratio"] == pytest.approx(results["eval_mel_l1"] / results["init_mel_l1"], abs=1e-4)
    # The learned alignment's word boundaries are scored against flite's timings, before and after training.
    assert results["word_boundaries"] > 0
    assert np.isfinite([results["init_word_boundary_error_ms_mean"], results["word_boundary_error_ms_mean"]]).all()


TTS_UTTERANCES = 40  # 32 training and 8 held-out utterances: a few seconds of synthesis


TINY_VIDEO_DATA = {"num_videos": 48, "num_frames": 4, "frame_size": 16}  # 36 training and 12 held-out videos


def _check_video_classifier(output_dir: str, cache_dir: Path, results: dict) -> None:
    classifier = pipeline("video-classification", model=output_dir, device="cpu")
    held_out = build_moving_digit_videos(**TINY_VIDEO_DATA, cache_dir=cache_dir)["test"]
    predictions = classifier(list(held_out["video"]), top_k=4)
    assert {p["label"] for p in predictions[0]} == {"right", "left", "down", "up"}
    assert abs(sum(p["score"] for p in predictions[0]) - 1) < 1e-4
    names = held_out.features["label"].names
    correct = [top[0]["label"] == names[label] for top, label in zip(predictions, list(held_out["label"]), strict=True)]
    assert sum(correct) / len(held_out) == pytest.approx(results["eval_accuracy"], abs=1e-9)


TINY_MODEL_FLAGS = {
    "image_classification": [
        "--image_size", "16", "--patch_size", "4", "--hidden_size", "32", "--backbone_layers", "1",
        "--num_hidden_layers", "1", "--num_attention_heads", "4", "--num_tokens", "4",
    ],
    "audio_classification": TINY_AUDIO_FLAGS,
    "speech_recognition_ctc": TINY_AUDIO_FLAGS,
    "speaker_embedding": [
        *TINY_AUDIO_FLAGS, "--speaker_hidden_size", "16", "--speaker_num_conv_layers", "1",
        "--speaker_num_lstm_layers", "1", "--speaker_embedding_size", "16",
    ],
    "text_to_speech": [
        "--hidden_size", "32", "--encoder_layers", "1", "--decoder_layers", "1", "--kv_lora_rank", "16",
        "--intermediate_size", "64", "--postnet_channels", "16", "--vocoder_initial_channels", "16",
    ],
    "video_classification": [
        "--patch_size", "4", "--hidden_size", "32", "--backbone_layers", "1", "--num_hidden_layers", "1",
        "--num_attention_heads", "4", "--num_experts", "2", "--num_experts_per_tok", "1",
    ],
    "omni_llm": [
        "--text_hidden_size", "32", "--text_layers", "1", "--vision_hidden_size", "32", "--vision_backbone_layers", "1",
        "--vision_num_tokens", "4", "--video_hidden_size", "32", "--video_layers", "1", "--audio_hidden_size", "32",
        "--audio_layers", "1", "--patch_size", "4", "--image_size", "16",
    ],
}  # fmt: skip


def _speech_flags(builder_kwargs: dict) -> list[str]:
    return [item for key, value in builder_kwargs.items() for item in (f"--{key}", str(value))]


def _check_audio_classifier(output_dir: str, cache_dir: Path, results: dict) -> None:
    from omni_encoders.data import DIGIT_WORDS, build_spoken_digits

    classifier = pipeline("audio-classification", model=output_dir, device="cpu")
    held_out = build_spoken_digits(**TINY_DIGITS, cache_dir=cache_dir)["test"]
    clips = [{"raw": clip["array"], "sampling_rate": 16000} for clip in held_out["audio"]]
    predictions = classifier(clips, top_k=10)
    assert {p["label"] for p in predictions[0]} == set(DIGIT_WORDS)
    assert abs(sum(p["score"] for p in predictions[0]) - 1) < 1e-4
    labels = [DIGIT_WORDS[label] for label in held_out["label"]]
    correct = [top[0]["label"] == label for top, label in zip(predictions, labels, strict=True)]
    assert sum(correct) / len(held_out) == pytest.approx(results["eval_accuracy"], abs=1e-9)


def _check_speech_recognizer(output_dir: str, cache_dir: Path, results: dict) -> None:
    from omni_encoders import metrics
    from omni_encoders.data import build_spoken_digit_strings

    recognizer = pipeline("automatic-speech-recognition", model=output_dir, device="cpu")
    assert type(recognizer.model).__name__ == "OmniAudioForCTC"
    held_out = build_spoken_digit_strings(**TINY_STRINGS, cache_dir=cache_dir)["test"]
    clips = [{"raw": clip["array"], "sampling_rate": 16000} for clip in held_out["audio"]]
    transcripts = [output["text"] for output in recognizer(clips)]
    assert all(set(text) <= set("0123456789") for text in transcripts)
    cer = metrics.load("cer").compute(predictions=transcripts, references=list(held_out["digits"]))["cer"]
    assert cer == pytest.approx(results["eval_test_cer"], abs=1e-9)


def _check_speaker_model(output_dir: str, cache_dir: Path, results: dict) -> None:
    from transformers import AutoFeatureExtractor, AutoModel

    from omni_encoders import OmniAudioModel, metrics
    from omni_encoders.data import build_spoken_digit_strings, make_verification_trials

    model = AutoModel.from_pretrained(output_dir).eval()
    assert type(model) is OmniAudioModel  # the margin softmax's speaker directions stay out of the model
    extractor = AutoFeatureExtractor.from_pretrained(output_dir)
    dataset = build_spoken_digit_strings(**{**TINY_STRINGS, "test_voices": 0}, cache_dir=cache_dir)
    held_out = dataset["test_seen_voices"]
    features = extractor(list(held_out["audio"]), return_speaker_features=True, sampling_rate=16000,
                         return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        embeddings = model.get_speaker_embeddings(features.speaker_features, features.speaker_attention_mask).numpy()
    trials = make_verification_trials(list(held_out["speaker_id"]), num_trials=200)
    scores = (embeddings[trials["enrollment"]] * embeddings[trials["test"]]).sum(-1)
    eer = metrics.load("eer").compute(predictions=scores, references=list(trials["label"]))["eer"]
    assert eer == pytest.approx(results["eval_eer"], abs=1e-6)


def _check_omni_llm(output_dir: str, cache_dir: Path, results: dict) -> None:
    import PIL.Image

    chat = pipeline("image-text-to-text", model=output_dir, device="cpu")
    assert type(chat.model).__name__ == "OmniForConditionalGeneration"
    held_out = build_digit_images(image_size=16, cache_dir=cache_dir)["test"].select(range(12))
    digit_words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    answers = []
    for image in held_out["image"]:
        messages = [{"role": "user", "content": [{"type": "image", "image": PIL.Image.fromarray(np.asarray(image))},
                                                 {"type": "text", "text": "what digit is this ?"}]}]  # fmt: skip
        reply = chat(text=messages, max_new_tokens=8)
        answers.append(reply[0]["generated_text"][-1]["content"].strip())
    correct = [answer == digit_words[label] for answer, label in zip(answers, held_out["label"], strict=True)]
    assert sum(correct) / len(correct) == pytest.approx(results["eval_image_exact_match"], abs=1e-9)
    assert {"eval_video_exact_match", "eval_speech_cer", "eval_speech_exact_match"} <= set(results)


TINY_RECIPES = {
    "image_classification": TinyRecipe(
        script="image_classification",
        args=[
            *TINY_MODEL_FLAGS["image_classification"],
            "--max_train_samples", "16", "--max_eval_samples", str(NUM_EVAL), "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "16", "--learning_rate", "5e-3", "--lr_scheduler_type", "constant",
            "--warmup_steps", "0", "--bf16", "false",  # float32 like the pipeline: the same predictions
        ],
        metric="eval_accuracy",
        check_saved=_check_image_classifier,
    ),
    "audio_classification": TinyRecipe(
        script="audio_classification",
        args=[
            *TINY_MODEL_FLAGS["audio_classification"], *_speech_flags(TINY_DIGITS), "--per_device_train_batch_size",
            "8", "--per_device_eval_batch_size", "8", "--learning_rate", "5e-3", "--lr_scheduler_type", "constant",
            "--warmup_steps", "0", "--bf16", "false",  # float32 like the pipeline: the same predictions
        ],
        metric="eval_accuracy",
        check_saved=_check_audio_classifier,
    ),
    "speech_recognition_ctc": TinyRecipe(
        script="speech_recognition_ctc",
        args=[
            *TINY_MODEL_FLAGS["speech_recognition_ctc"], *_speech_flags(TINY_STRINGS),
            "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--learning_rate", "5e-3",
            "--lr_scheduler_type", "constant", "--warmup_steps", "0", "--bf16", "false",
        ],
        metric="eval_test_cer",  # the recipe scores each of its --eval_splits: eval_<split>_cer
        check_saved=_check_speech_recognizer,
    ),
    "speaker_embedding": TinyRecipe(
        script="speaker_embedding",
        args=[
            *TINY_MODEL_FLAGS["speaker_embedding"], *_speech_flags({**TINY_STRINGS, "test_voices": 0}),
            "--num_trials", "200", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
            # a gentler margin softmax than the recipe's: 30 steps at scale 30 collapse the tiny model's embeddings
            "--scale", "10", "--learning_rate", "2e-3", "--lr_scheduler_type", "constant", "--warmup_steps", "0",
            "--bf16", "false",
        ],
        metric="eval_eer",
        check_saved=_check_speaker_model,
    ),
    "text_to_speech": TinyRecipe(
        script="text_to_speech",
        args=[
            *TINY_MODEL_FLAGS["text_to_speech"],
            "--utterances", str(TTS_UTTERANCES), "--per_device_train_batch_size", "8", "--learning_rate", "5e-3",
            "--lr_scheduler_type", "constant", "--warmup_steps", "0", "--bf16", "false",
        ],
        metric="eval_mel_l1",
        check_saved=_check_text_to_speech,
    ),
    "omni_llm": TinyRecipe(
        script="omni_llm",
        args=[
            *TINY_MODEL_FLAGS["omni_llm"], *(f"--{key}={value}" for key, value in TINY_VIDEO_DATA.items()),
            *_speech_flags(TINY_STRINGS), "--max_train_samples", "16", "--max_eval_samples", "12",
            "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--learning_rate", "3e-3",
            "--lr_scheduler_type", "constant", "--warmup_steps", "0",
        ],
        metric="eval_image_exact_match",
        check_saved=_check_omni_llm,
    ),
    "video_classification": TinyRecipe(
        script="video_classification",
        args=[
            *TINY_MODEL_FLAGS["video_classification"],
            *(f"--{key}={value}" for key, value in TINY_VIDEO_DATA.items()),
            "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "8", "--learning_rate", "5e-3",
            "--lr_scheduler_type", "constant", "--warmup_steps", "0", "--bf16", "false",
        ],
        metric="eval_accuracy",
        check_saved=_check_video_classifier,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture
def one_thread():
    # Tiny matrices: a second thread adds synchronisation, not speed (and stalls on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_recipe(script: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(script)


@pytest.mark.parametrize("native_bf16", [True, False])
def test_recipes_default_to_bf16_autocast_only_where_the_hardware_runs_it(native_bf16, monkeypatch, tmp_path):
    from transformers import TrainingArguments

    recipe_utils = load_recipe("recipe_utils")
    monkeypatch.setattr(recipe_utils, "use_bf16_mixed_precision", lambda: native_bf16)
    (training_args,) = recipe_utils.parse_args([TrainingArguments], {}, ["--output_dir", str(tmp_path)])
    assert training_args.bf16 is native_bf16
    argv = ["--output_dir", str(tmp_path), "--bf16", "false"]
    (training_args,) = recipe_utils.parse_args([TrainingArguments], {}, argv)
    assert training_args.bf16 is False  # the flag overrides the rule


def recipe_args(recipe: TinyRecipe, output_dir, cache_dir, *extra: str) -> list[str]:
    return [
        *recipe.args, "--output_dir", str(output_dir), "--dataset_cache_dir", str(cache_dir),
        "--disable_tqdm", "true", "--report_to", "none", *extra,
    ]  # fmt: skip


def losses(log_history: list[dict]) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in log_history if "loss" in entry}


# ------------------------------------------------------------------------------------------- the building blocks


def test_image_transform_and_metrics_feed_the_trainer(cache_dir):
    from omni_encoders import OmniVisionImageProcessor

    dataset = build_digit_images(image_size=16, cache_dir=cache_dir)["test"].select(range(4))
    processor = OmniVisionImageProcessor(size={"height": 16, "width": 16})
    batch = dataset.with_transform(ImageClassificationTransform(processor))[:4]
    assert batch["pixel_values"].shape == (4, 3, 16, 16)
    assert batch["labels"].tolist() == dataset["label"]

    class Prediction:  # what Trainer passes: (logits, pooler_output) from the classification heads
        predictions = (np.eye(3)[[0, 1, 2, 2]], np.zeros((4, 8)))
        label_ids = np.array([0, 1, 1, 2])

    assert classification_metrics("accuracy")(Prediction()) == {"accuracy": 0.75}


def test_audio_collator_pads_dataset_rows_with_the_feature_extractor():
    from omni_encoders import OmniAudioFeatureExtractor
    from omni_encoders.training import AudioCollator

    rng = np.random.default_rng(0)
    # what a `datasets` row in numpy format holds: the rate is a 0-d array
    rows = [
        {"audio": {"array": rng.standard_normal(n).astype(np.float32), "sampling_rate": np.array(16000)}, "label": i}
        for i, n in enumerate([700, 1000, 640])
    ]
    extractor = OmniAudioFeatureExtractor(samples_per_frame=320)
    batch = AudioCollator(extractor)(rows)
    assert set(batch) == {"input_values", "attention_mask", "labels"}
    assert batch["input_values"].shape == batch["attention_mask"].shape == (3, 1000)
    assert batch["attention_mask"].sum(-1).tolist() == [700, 1000, 640] and batch["labels"].tolist() == [0, 1, 2]
    alone = extractor(rows[0]["audio"]["array"], sampling_rate=16000, return_tensors="pt").input_values[0]
    assert torch.allclose(batch["input_values"][0, :700], alone)

    speaker = AudioCollator(extractor, label_column=None, speaker_features=True)(rows)
    assert set(speaker) == {"speaker_features", "speaker_attention_mask"}
    assert speaker["speaker_features"].shape == (3, 1000 // 160, 80)
    assert speaker["speaker_attention_mask"].sum(-1).tolist() == [700 // 160, 1000 // 160, 640 // 160]


def test_ctc_collator_and_metrics_decode_greedy_paths_and_score_the_cer():
    from omni_encoders import OmniAudioProcessor
    from omni_encoders.training import CTCCollator, ctc_argmax, ctc_metrics

    processor = OmniAudioProcessor.from_characters("0123456789")
    rows = [{"audio": {"array": np.ones(n, np.float32), "sampling_rate": 16000}, "digits": d}
            for n, d in [(900, "3114"), (700, "27")]]  # fmt: skip
    batch = CTCCollator(processor, text_column="digits")(rows)
    ids = processor.tokenizer.convert_tokens_to_ids
    assert batch["labels"].tolist() == [ids(list("3114")), [*ids(list("27")), -100, -100]]
    assert batch["input_values"].shape == (2, 900)

    blank = processor.tokenizer.pad_token_id
    # greedy paths "3 3 _ 1 _ 1 4" -> "3114" and "2 7 7" -> "27" (the second padded by Trainer with -100)
    paths = np.array([[ids("3"), ids("3"), blank, ids("1"), blank, ids("1"), ids("4")],
                      [ids("2"), ids("7"), ids("7"), -100, -100, -100, -100]])  # fmt: skip
    logits = torch.nn.functional.one_hot(torch.as_tensor(np.where(paths < 0, blank, paths)), len(processor.tokenizer))
    assert ctc_argmax((logits.float(), None)).tolist() == np.where(paths < 0, blank, paths).tolist()

    class Prediction:
        predictions = paths
        label_ids = batch["labels"].numpy()

    assert ctc_metrics(processor, "cer")(Prediction()) == {"cer": 0.0}
    Prediction.label_ids = processor(text=["3104", "28"], return_tensors="np")["input_ids"]
    assert ctc_metrics(processor, "cer")(Prediction()) == {"cer": pytest.approx(2 / 6)}


def test_speaker_classifier_trains_only_the_speaker_encoder_and_verification_metrics_score_trials():
    from helpers import tiny_audio_config

    from omni_encoders import OmniAudioModel
    from omni_encoders.training import AdditiveMarginSpeakerClassifier, speaker_verification_metrics

    torch.manual_seed(0)
    model = OmniAudioModel(tiny_audio_config())
    classifier = AdditiveMarginSpeakerClassifier(model, num_speakers=3, margin=0.2, scale=30.0)
    trainable = {name for name, p in classifier.named_parameters() if p.requires_grad}
    assert trainable == {"speaker_directions"} | {f"model.{n}" for n, _ in model.speaker_encoder.named_parameters(
        prefix="speaker_encoder")}  # fmt: skip
    features, labels = torch.randn(4, 30, 80), torch.tensor([0, 1, 2, 1])
    output = classifier(features, torch.ones(4, 30, dtype=torch.long), labels=labels)
    output.loss.backward()
    assert output.embeddings.shape == (4, 12) and torch.allclose(output.embeddings.norm(dim=-1), torch.ones(4))
    # the margin: the loss is the cross-entropy of the scaled cosines with m subtracted from the true class
    directions = torch.nn.functional.normalize(classifier.speaker_directions.detach(), dim=-1)
    cosine = output.embeddings.detach() @ directions.T
    expected = torch.nn.functional.cross_entropy(30 * (cosine - 0.2 * torch.eye(3)[labels]), labels)
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert model.speaker_encoder.output_proj.weight.grad is not None
    with pytest.raises(ValueError, match="Speaker labels must be in"):
        classifier(features, labels=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="no speaker encoder"):
        AdditiveMarginSpeakerClassifier(OmniAudioModel(tiny_audio_config(use_speaker_encoder=False)), 3)

    class Prediction:  # utterances 0, 1 by one speaker, 2, 3 by another; 4 scores below the same-speaker pairs
        predictions = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.6, 0.6]])
        label_ids = None

    trials = {"enrollment": [0, 2, 0, 1, 4], "test": [1, 3, 2, 3, 0], "label": [1, 1, 0, 0, 0]}
    assert speaker_verification_metrics(trials)(Prediction())["eer"] == 0.0
    trials["label"] = [0, 0, 1, 1, 1]  # scored the other way round: every decision wrong
    assert speaker_verification_metrics(trials)(Prediction())["eer"] == 1.0


def test_text_to_speech_metrics_score_the_mel_and_flag_broken_alignments():
    from omni_encoders.training import TextToSpeechMetrics

    metrics = TextToSpeechMetrics()
    # Two utterances: 5 and 3 frames of 2 mel bins, 3 and 2 tokens (the second padded by one token and two frames).
    target = torch.zeros(2, 5, 2)
    frame_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    token_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    mel = torch.ones(2, 5, 2)
    mel[1, 3:] = 100.0  # padded frames: must not count
    good = torch.tensor([[2, 2, 1], [1, 2, 0]])
    log_durations = torch.log1p(good.float())

    def score(durations):
        stats = metrics.preprocess((mel, None, durations, log_durations), (target, frame_mask, token_mask))
        return metrics(type("EvalPrediction", (), {"predictions": stats.numpy()})())

    result = score(good)
    assert result["mel_l1"] == 1.0 and result["num_utterances"] == 2
    assert result["alignment_ok"] == 1.0 and result["alignment_min_token_frames"] == 1
    assert result["duration_log_mae"] == pytest.approx(0.0, abs=1e-6) and result["length_error"] == 0.0
    skipped_token = torch.tensor([[2, 3, 0], [1, 2, 0]])  # a real token without frames
    assert score(skipped_token)["alignment_ok"] == 0.5 and score(skipped_token)["alignment_min_token_frames"] == 0
    too_short = torch.tensor([[2, 2, 1], [1, 1, 0]])  # durations not summing to the frame count
    assert score(too_short)["alignment_ok"] == 0.5 and score(too_short)["alignment_frame_mismatch"] == 1
    frames_on_padding = torch.tensor([[2, 2, 1], [1, 1, 1]])
    assert score(frames_on_padding)["alignment_ok"] == 0.5
    with pytest.raises(ValueError, match="label_names"):
        metrics.preprocess((mel, None, good, log_durations), target)


def test_video_transform_processes_once_with_map_like_on_the_fly(cache_dir):
    from omni_encoders import OmniVideoVideoProcessor

    dataset = build_moving_digit_videos(**TINY_VIDEO_DATA, cache_dir=cache_dir)["test"].select(range(5))
    processor = OmniVideoVideoProcessor(size={"height": 16, "width": 16}, num_frames=4)
    on_the_fly = dataset.with_transform(VideoClassificationTransform(processor))[:5]
    assert on_the_fly["pixel_values_videos"].shape == (5, 4, 3, 16, 16)
    assert on_the_fly["frame_mask"].tolist() == [[1, 1, 1, 1]] * 5
    assert on_the_fly["labels"].tolist() == dataset["label"]

    transform = VideoClassificationTransform(processor, return_tensors="np")
    mapped = dataset.map(transform, batched=True, batch_size=2, remove_columns=dataset.column_names,
                         features=transform.features())  # fmt: skip
    stored = mapped.with_format("torch")[:5]
    for key in ("pixel_values_videos", "frame_mask", "labels"):
        assert torch.equal(stored[key], on_the_fly[key]), key

    with pytest.raises(ValueError, match="one shape for every video"):
        VideoClassificationTransform(OmniVideoVideoProcessor(size={"shortest_edge": 16})).features()


def test_video_recipe_shuffle_frames_trains_on_the_frame_order_control_set(cache_dir):
    """`--shuffle_frames` feeds the model the same videos with their frames permuted (the builder's control set)."""
    module = load_recipe("video_classification")
    datasets = {}
    for shuffled in (False, True):
        args = [*TINY_RECIPES["video_classification"].args, "--output_dir", "unused", "--dataset_cache_dir",
                str(cache_dir), "--shuffle_frames", str(shuffled).lower()]  # fmt: skip
        model_args, data_args, training_args = module.start_recipe(
            (module.ModelArguments, module.DataArguments, module.TrainingArguments), module.TRAINING_DEFAULTS, args,
            keep_raw_columns=False,
        )
        trainer = module.make_trainer(model_args, data_args, training_args)
        datasets[shuffled] = trainer.eval_dataset[:]
    ordered, shuffled = datasets[False]["pixel_values_videos"], datasets[True]["pixel_values_videos"]
    assert torch.equal(datasets[False]["labels"], datasets[True]["labels"])
    assert not torch.equal(ordered, shuffled)
    for video, control in zip(ordered, shuffled, strict=True):  # each control video: the same frames, reordered
        distances = (control[:, None] - video[None]).flatten(2).abs().amax(-1)  # [control frame, original frame]
        assert distances.amin(1).max() < 0.05  # the files decode within a grey level or two
        assert sorted(distances.argmin(1).tolist()) == list(range(len(video)))


# ----------------------------------------------------------------------------------------- tiny recipes learn


@pytest.mark.parametrize("name", sorted(TINY_RECIPES))
def test_tiny_recipe_learns_and_its_saved_model_serves_the_pipeline_and_fine_tunes(name, tmp_path, cache_dir, one_thread):
    recipe = TINY_RECIPES[name]
    output_dir = tmp_path / name
    results = load_recipe(recipe.script).main(
        recipe_args(recipe, output_dir, cache_dir, "--max_steps", "30", "--logging_steps", "1", "--save_strategy",
                    "no")  # fmt: skip
    )
    per_step = list(losses(results["log_history"]).values())
    assert len(per_step) == 30
    first, last = np.mean(per_step[:4]), np.mean(per_step[-4:])
    assert last < 0.8 * first, f"the loss did not go down: {first:.3f} -> {last:.3f}"
    assert np.isfinite(results[recipe.metric])
    report = json.loads((output_dir / "results.json").read_text())
    assert report["recipe"] == name and report["metrics"][recipe.metric] == results[recipe.metric]
    recipe.check_saved(str(output_dir), cache_dir, results)

    # --model_name_or_path fine-tunes the saved model: its first loss is where the first run ended, not at chance.
    finetuned = load_recipe(recipe.script).main(
        recipe_args(recipe, tmp_path / "finetuned", cache_dir, "--model_name_or_path", str(output_dir),
                    "--max_steps", "2", "--logging_steps", "1", "--save_strategy", "no", "--do_eval", "false")
    )  # fmt: skip
    assert losses(finetuned["log_history"])[1] < 0.9 * first


def test_ctc_recipe_trains_with_chunked_attention_at_a_reduced_rate(tmp_path, cache_dir, one_thread):
    """The long-audio flags reach the model: the tiny CTC model (50 frames/s) trains with 0.5 s attention chunks and
    2 left chunks (its clips of about a second span two or three chunks) at 25 output frames/s, the saved config has
    these settings, and the pipeline transcribes the held-out clips as the recipe's evaluation scored them. Fine-tuning
    it with `--model_name_or_path` changes only the options given."""
    from transformers import AutoProcessor

    from omni_encoders import OmniAudioForCTC
    from omni_encoders.data import build_spoken_digit_strings

    recipe = TINY_RECIPES["speech_recognition_ctc"]
    module = load_recipe(recipe.script)
    output_dir = tmp_path / "chunked"
    results = module.main(recipe_args(
        recipe, output_dir, cache_dir, "--attention_chunk_size", "25", "--attention_left_chunks", "2",
        "--output_downsample_rate", "2", "--max_steps", "30", "--logging_steps", "1", "--save_strategy", "no",
    ))  # fmt: skip
    long_audio = ("attention_chunk_size", "attention_left_chunks", "attention_right_context", "output_downsample_rate")
    config = json.loads((output_dir / "config.json").read_text())
    assert [config[name] for name in long_audio] == [25, 2, 0, 2]
    per_step = list(losses(results["log_history"]).values())
    assert np.mean(per_step[-4:]) < 0.8 * np.mean(per_step[:4])
    recipe.check_saved(str(output_dir), cache_dir, results)

    # One output frame per two tokenizer frames (320 samples each), and the pipeline's text is the model's greedy path
    # (after 30 steps the tiny model mostly says blank: the text may well be empty).
    model, processor = OmniAudioForCTC.from_pretrained(output_dir).eval(), AutoProcessor.from_pretrained(output_dir)
    clip = build_spoken_digit_strings(**TINY_STRINGS, cache_dir=cache_dir)["test"][0]["audio"]["array"]
    with torch.no_grad():
        logits = model(**processor(audio=clip, sampling_rate=16000, return_tensors="pt")).logits
    assert logits.shape[1] == -(-(len(clip) // 320) // 2)
    recognizer = pipeline("automatic-speech-recognition", model=str(output_dir), device="cpu")
    assert recognizer({"raw": clip, "sampling_rate": 16000})["text"] == processor.batch_decode(logits.argmax(-1))[0]

    module.main(recipe_args(
        recipe, tmp_path / "finetuned", cache_dir, "--model_name_or_path", str(output_dir), "--attention_left_chunks",
        "1", "--max_steps", "1", "--save_strategy", "no", "--do_eval", "false",
    ))  # fmt: skip
    config = json.loads((tmp_path / "finetuned" / "config.json").read_text())
    assert [config[name] for name in long_audio] == [25, 1, 0, 2]


def test_ctc_recipe_trains_a_streamable_model_on_joined_utterances(tmp_path, cache_dir, one_thread, caplog):
    """`--conv_module_causal true --tokenizer_norm_statistics causal --normalize_audio false` with chunked attention and
    `--utterances_per_clip 3`: the model trains on clips of 3 utterances, and the saved model streams (`stream_logits`
    on a held-out clip gives its offline logits, its processor leaving the samples as a stream gives them). Built from
    scratch, the recipe warns that such a model should be fine-tuned from an offline one instead."""
    from omni_encoders import OmniAudioForCTC
    from omni_encoders.data import build_spoken_digit_strings

    recipe = TINY_RECIPES["speech_recognition_ctc"]
    output_dir = tmp_path / "streamable"
    module = load_recipe(recipe.script)
    args = recipe_args(
        recipe, output_dir, cache_dir, "--attention_chunk_size", "10", "--conv_module_causal", "true",
        "--tokenizer_norm_statistics", "causal", "--utterances_per_clip", "3", "--normalize_audio", "false",
        "--max_steps", "3", "--save_strategy", "no", "--do_eval", "false",
    )  # fmt: skip
    model_args, data_args, training_args = module.start_recipe(
        (module.AudioModelArguments, module.DataArguments, module.TrainingArguments), module.TRAINING_DEFAULTS, args,
        keep_raw_columns=True,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        train_dataset = module.make_trainer(model_args, data_args, training_args).train_dataset
    assert "Training a causal (streamable) model from scratch" in caplog.text
    assert max(len(digits) for digits in train_dataset["digits"]) > TINY_STRINGS["max_digits"]
    module.main(args)
    config = json.loads((output_dir / "config.json").read_text())
    assert (config["conv_module_causal"], config["tokenizer_norm_statistics"]) == (True, "causal")
    model = OmniAudioForCTC.from_pretrained(output_dir).eval()
    processor = AutoProcessor.from_pretrained(output_dir)
    assert processor.feature_extractor.do_normalize is False
    clip = torch.tensor(build_spoken_digit_strings(**TINY_STRINGS, cache_dir=cache_dir)["test"][0]["audio"]["array"])
    inputs = processor(audio=clip.numpy(), sampling_rate=16000, return_tensors="pt")
    assert torch.equal(inputs["input_values"][0], clip)  # no normalisation: what the stream hears
    with torch.no_grad():
        offline = model(clip[None].float()).logits
    streamed = torch.cat(list(model.stream_logits(clip.float().split(1600))), dim=1)
    assert streamed.shape == offline.shape and (streamed - offline).abs().max() < 1e-4


# ------------------------------------------------------------------------------------------- checkpoint/resume


class InterruptAfterCheckpoint(TrainerCallback):
    """Stops the run like a crash would, right after the checkpoint of step `step` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"interrupted after step {self.step}")


def test_interrupted_run_resumed_from_its_checkpoint_ends_with_the_same_weights(tmp_path, cache_dir, one_thread):
    module = load_recipe("image_classification")
    # 48 samples / batch 8 = 6 steps per epoch: the interruption falls mid-epoch and the resumed run crosses into the
    # next epoch (a new shuffle), with warmup, the cosine schedule and AdamW's moments in play.
    args = [
        *TINY_MODEL_FLAGS["image_classification"], "--max_train_samples", "48", "--per_device_train_batch_size", "8",
        "--warmup_steps", "2", "--max_steps", "9", "--save_strategy", "steps", "--save_steps", "4",
        "--save_total_limit", "3", "--logging_steps", "1", "--do_eval", "false", "--dataset_cache_dir", str(cache_dir),
        "--disable_tqdm", "true",
    ]  # fmt: skip
    uninterrupted = module.main([*args, "--output_dir", str(tmp_path / "a")])

    with pytest.raises(KeyboardInterrupt):
        module.main([*args, "--output_dir", str(tmp_path / "b")], callbacks=[InterruptAfterCheckpoint(4)])
    assert sorted(os.listdir(tmp_path / "b")) == ["checkpoint-4"]
    shutil.copytree(tmp_path / "b" / "checkpoint-4", tmp_path / "c" / "checkpoint-4")  # for the control below
    resumed = module.main([*args, "--output_dir", str(tmp_path / "b")])  # finds checkpoint-4 in its output folder

    assert losses(resumed["log_history"]) == losses(uninterrupted["log_history"])
    weights_a = load_file(tmp_path / "a" / "model.safetensors")
    weights_b = load_file(tmp_path / "b" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key

    # The comparison can fail: resuming from the same checkpoint without replaying the data order ends elsewhere.
    module.main([*args, "--output_dir", str(tmp_path / "c"), "--ignore_data_skip", "true"])
    weights_c = load_file(tmp_path / "c" / "model.safetensors")
    assert any(not torch.equal(weights_a[key], weights_c[key]) for key in weights_a)


def test_speaker_trainer_saves_a_plain_audio_model_and_resumes_to_the_same_weights(tmp_path, cache_dir, one_thread):
    """The speaker recipe trains a wrapper (speaker encoder + margin-softmax directions) but its checkpoints are
    `OmniAudioModel` folders plus `speaker_classifier.safetensors`: resuming one restores both, so an interrupted run
    ends where an uninterrupted one does."""
    module = load_recipe("speaker_embedding")
    args = [
        *TINY_MODEL_FLAGS["speaker_embedding"], *_speech_flags({**TINY_STRINGS, "test_voices": 0}),
        "--per_device_train_batch_size", "8", "--warmup_steps", "2", "--max_steps", "7", "--save_strategy", "steps",
        "--save_steps", "3", "--logging_steps", "1", "--do_eval", "false", "--dataset_cache_dir", str(cache_dir),
        "--disable_tqdm", "true", "--bf16", "false",
    ]  # fmt: skip
    uninterrupted = module.main([*args, "--output_dir", str(tmp_path / "a")])
    with pytest.raises(KeyboardInterrupt):
        module.main([*args, "--output_dir", str(tmp_path / "b")], callbacks=[InterruptAfterCheckpoint(3)])
    checkpoint = tmp_path / "b" / "checkpoint-3"
    assert {"config.json", "model.safetensors", "speaker_classifier.safetensors"} <= set(os.listdir(checkpoint))
    directions_at_3 = load_file(checkpoint / "speaker_classifier.safetensors")["speaker_directions"]
    resumed = module.main([*args, "--output_dir", str(tmp_path / "b")])

    assert losses(resumed["log_history"]) == losses(uninterrupted["log_history"])
    for name in ("model.safetensors", "speaker_classifier.safetensors"):
        weights_a, weights_b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert weights_a.keys() == weights_b.keys()
        for key in weights_a:
            assert torch.equal(weights_a[key], weights_b[key]), (name, key)
    # the directions kept training after the checkpoint: the comparison above can fail
    directions_at_7 = load_file(tmp_path / "a" / "speaker_classifier.safetensors")["speaker_directions"]
    assert not torch.equal(directions_at_3, directions_at_7)


def test_gradient_accumulation_trains_like_the_whole_batch(tmp_path, cache_dir, one_thread):
    """Two accumulated batches of 4 = one batch of 8: the heads take `Trainer`'s `num_items_in_batch` (the examples of
    the whole accumulated batch) and normalise their loss by it."""
    module = load_recipe("image_classification")
    args = [
        *TINY_MODEL_FLAGS["image_classification"], "--max_train_samples", "48", "--max_steps", "4", "--logging_steps",
        "1", "--save_strategy", "no", "--do_eval", "false", "--bf16", "false", "--dataset_cache_dir", str(cache_dir),
        "--disable_tqdm", "true",
    ]  # fmt: skip
    whole = module.main([*args, "--output_dir", str(tmp_path / "whole"), "--per_device_train_batch_size", "8"])
    accumulated = module.main([*args, "--output_dir", str(tmp_path / "accumulated"), "--per_device_train_batch_size",
                               "4", "--gradient_accumulation_steps", "2"])  # fmt: skip
    assert losses(accumulated["log_history"]) == pytest.approx(losses(whole["log_history"]), abs=1e-5)
    weights_whole = load_file(tmp_path / "whole" / "model.safetensors")
    weights_accumulated = load_file(tmp_path / "accumulated" / "model.safetensors")
    assert max((weights_whole[key] - weights_accumulated[key]).abs().max().item() for key in weights_whole) < 1e-4


# ------------------------------------------------------------------------------------------------ two processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_with_accelerate_launch_match_one_process(tmp_path, cache_dir, one_thread):
    """Two processes launched by accelerate at 4 examples each train the same model as one process at 8 per batch:
    DDP (gloo on the CPU) averages the two halves' gradients into the gradient of the whole batch.

    On a CPU-only machine accelerate 1.15 starts several processes through torchrun with `--multi_gpu` (the recipe's
    `use_cpu` then makes it CPU DDP over gloo); `--cpu --num_processes 2` starts a single process (it would need MPI).
    """
    # fp32: the two runs then differ only by the order of float sums.
    common = [
        *TINY_MODEL_FLAGS["image_classification"], "--max_train_samples", "48", "--max_eval_samples", "32",
        "--max_steps", "6", "--logging_steps", "1", "--save_strategy", "no", "--bf16", "false",
        "--learning_rate", "3e-3", "--warmup_steps", "0", "--per_device_eval_batch_size", "8",
        "--dataset_cache_dir", str(cache_dir), "--disable_tqdm", "true", "--ddp_timeout", "120",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "HF_HOME": str(tmp_path / "hf_home"),  # no accelerate config file of the machine's user is read
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
        "--main_process_port", str(_free_port()), str(EXAMPLES / "image_classification.py"),
    ]  # fmt: skip
    two = subprocess.run(
        [*launch, *common, "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "4",
         "--ddp_backend", "gloo"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    report = json.loads((tmp_path / "two" / "results.json").read_text())
    assert report["num_processes"] == 2

    module = load_recipe("image_classification")
    one_args = [*common, "--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "8"]
    one = module.main(one_args)

    weights_one = load_file(tmp_path / "one" / "model.safetensors")
    weights_two = load_file(tmp_path / "two" / "model.safetensors")
    state = json.loads((tmp_path / "two" / "trainer_state.json").read_text())
    assert losses(state["log_history"]) == pytest.approx(losses(one["log_history"]), abs=1e-4)
    initial = _initial_weights(module, one_args)
    moved = max((weights_one[key] - initial[key]).abs().max().item() for key in weights_one)
    worst = max((weights_one[key] - weights_two[key]).abs().max().item() for key in weights_one)
    assert moved > 1e-2 and worst < 1e-4, f"trained weights moved by {moved:.2e}, runs differ by {worst:.2e}"
    assert report["metrics"]["eval_accuracy"] == pytest.approx(one["eval_accuracy"], abs=1 / 32)


def _initial_weights(module, args: list[str]) -> dict[str, torch.Tensor]:
    """The weights a recipe run with `args` starts from (the recipe seeds before it builds the model)."""
    model_args, _, _ = module.start_recipe(
        (module.ModelArguments, module.DataArguments, module.TrainingArguments), module.TRAINING_DEFAULTS, args,
        keep_raw_columns=True,
    )
    return module.build_model(model_args, labels=[str(digit) for digit in range(10)]).state_dict()


# ---------------------------------------------------------------------------------------------------- the tour


def test_tour_encoding_steps_at_small_size(tmp_path, monkeypatch, capsys):
    """The main job's encoding steps (`omni-encoders --size small`: the tour is the default command)."""
    from omni_encoders import cli

    monkeypatch.setenv("OMNI_ENCODERS_CACHE", str(tmp_path / "cache"))
    assert cli.main(["--size", "small", "--steps", "vision,video,audio,long-audio,tts"]) == 0
    output = capsys.readouterr().out
    assert output.count("outputs finite: True") == 4
    assert "pixel_values (1, 3, 224, 224) -> TiTok tokens (1, 64, 192)" in output
    assert "frame_mask [[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0, 0]]" in output
    assert "(L2 norms [1.0, 1.0])" in output and "streaming: 4 chunks" in output
    # long audio: 25 frames/s out, the first ones once a 1 s chunk (and the tokenizer's context) is in, as offline
    offline = re.search(r"offline: frames \(1, (\d+), 256\) \(25 frames/s", output)
    assert offline and f"first frames after 1.10 s of audio, frames (1, {offline[1]}, 256)" in output
    steps = [line for line in output.splitlines() if line.startswith("train step")]
    losses = [float(line.split(": loss ")[1].split()[0]) for line in steps]
    assert len(losses) == 5 and losses[-1] < losses[0]
    assert re.search(r"^CPU: .*; dtype (bf16|fp32) \(auto: (bfloat16|float32), ", output, re.MULTILINE)
    assert re.search(r"Tour finished in \d+ s \((bf16|fp32), ", output)


@pytest.mark.parametrize(
    "capability, amx, expected", [("AVX2", False, torch.float32), ("AVX512", True, torch.bfloat16)]
)
def test_tour_dtype_follows_the_cpu_unless_given(capability, amx, expected, monkeypatch, capsys):
    """`--dtype auto` (the default): bf16 on an AMX CPU, fp32 on an AVX2 one, and said so; `--dtype` overrides."""
    from omni_encoders import cli, hardware

    monkeypatch.setattr(hardware, "cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen = []
    monkeypatch.setitem(cli.TOUR_STEPS, "vision", lambda args: seen.append((args.torch_dtype, args.dtype)))
    assert cli.main(["--steps", "vision"]) == 0
    assert seen == [(expected, {torch.float32: "fp32", torch.bfloat16: "bf16"}[expected])]
    assert f"({capability if not amx else 'AMX'}" in capsys.readouterr().out
    assert cli.main(["--steps", "vision", "--dtype", "fp32"]) == 0 and seen[-1] == (torch.float32, "fp32")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", ","], "unknown tour steps"),
        (["--steps", "vision,bogus"], r"unknown tour steps \['bogus'\]"),
        (["--train-epochs", "0"], "must be > 0"),
        (["encode-image", "/nonexistent.jpg"], "cannot read an image"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys):
    from omni_encoders import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2 and re.search(message, capsys.readouterr().err)


def test_tour_trains_a_digit_classifier_and_serves_it_through_the_pipeline(tmp_path, monkeypatch, capsys):
    from omni_encoders import cli

    monkeypatch.setenv("OMNI_ENCODERS_CACHE", str(tmp_path / "cache"))
    argv = ["tour", "--steps", "train-vision", "--train-epochs", "0.3", "--output-dir", str(tmp_path / "m")]
    assert cli.main(argv) == 0
    output = capsys.readouterr().out
    assert "Trainer.evaluate on the 360 held-out digits: accuracy" in output
    assert "OmniVisionForImageClassification via pipeline('image-classification'): accuracy" in output
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "preprocessor_config.json").is_file()


def test_tour_trains_a_spoken_digit_classifier_and_serves_it_through_the_pipeline(tmp_path, monkeypatch, capsys):
    from omni_encoders import cli

    monkeypatch.setenv("OMNI_ENCODERS_CACHE", str(tmp_path / "cache"))
    argv = ["tour", "--steps", "train-audio", "--train-epochs", "1", "--output-dir", str(tmp_path / "m")]
    assert cli.main(argv) == 0
    output = capsys.readouterr().out
    losses = [float(loss) for loss in output.split("training loss: ")[1].splitlines()[0].split(" -> ")]
    assert losses[-1] < losses[0]
    assert "clips of 5 voices it never heard: accuracy" in output
    assert "OmniAudioForAudioClassification via pipeline('audio-classification') on a wav file" in output
    assert re.search(r"true '\w+': (correct|a miss \(the classifier gets \d+% )", output)  # says which it is
    saved = tmp_path / "m" / "spoken_digits"
    assert (saved / "model.safetensors").is_file() and (saved / "preprocessor_config.json").is_file()


def test_tour_trains_an_omni_llm_and_serves_it_through_the_pipeline(tmp_path, monkeypatch, capsys):
    from omni_encoders import cli

    monkeypatch.setenv("OMNI_ENCODERS_CACHE", str(tmp_path / "cache"))
    argv = ["tour", "--steps", "train-omni", "--train-epochs", "1", "--output-dir", str(tmp_path / "m")]
    assert cli.main(argv) == 0
    output = capsys.readouterr().out
    assert re.search(r"on 718 image, 1200 video, \d+ speech chats: \d+ steps", output)
    assert re.search(r"exact match: image [\d.]+ \(360\), video [\d.]+ \(100\), speech [\d.]+ \(\d+\)", output)
    for question in ("what digit is this ?", "which way does it move ?", "transcribe"):
        assert re.search(rf"'{re.escape(question)}' -> '[\w ]*' \(true '\w+': (correct|a miss)\)", output)
    assert "pipeline('image-text-to-text') on the held-out image: '" in output
    saved = tmp_path / "m" / "omni_llm"
    assert (saved / "model.safetensors").is_file() and (saved / "tokenizer.json").is_file()


def test_omni_llm_with_two_processes_follows_the_loss_curve_of_one(tmp_path, cache_dir, one_thread):
    """The omni-modal LLM recipe under `accelerate launch` with two processes of 4 examples gives the loss curve of one
    process of 8: the one-task batches are cut at the global batch, so both runs see the same examples at every step.
    (Images and speech: the video MoE's load-balancing loss is computed per process, as in transformers' MoE models,
    and so differs a little between the two.)"""
    common = [
        *TINY_RECIPES["omni_llm"].args, "--modalities", "image", "speech", "--max_steps", "6", "--logging_steps", "1",
        "--save_strategy", "no", "--do_eval", "false", "--bf16", "false", "--dataset_cache_dir", str(cache_dir),
        "--disable_tqdm", "true", "--ddp_timeout", "120", "--report_to", "none",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    one = load_recipe("omni_llm").main([*common, "--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "8"])
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
        "--main_process_port", str(_free_port()), str(EXAMPLES / "omni_llm.py"),
    ]  # fmt: skip
    two = subprocess.run(
        [*launch, *common, "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "4",
         "--ddp_backend", "gloo"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    state = json.loads((tmp_path / "two" / "trainer_state.json").read_text())
    curve_one, curve_two = losses(one["log_history"]), losses(state["log_history"])
    # every step's loss (speech steps' with the CTC term, image steps') agrees to float-summation order
    assert len(curve_one) == 6 and curve_two == pytest.approx(curve_one, abs=1e-4)
    assert len(set(np.round(list(curve_one.values()), 3))) == 6  # six distinct steps, not a constant

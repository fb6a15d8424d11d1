"""Training with 🤗 Trainer: every recipe in `examples/` runs at a tiny size and learns, saves a model its pipeline
loads, resumes from a checkpoint to the very same weights, and trains the same with two `accelerate launch` processes
as with one at the same global batch size.

A new recipe plugs in with one `TINY_RECIPES` entry: its script name, command-line flags for a tiny model on a small
slice of its data, the held-out metric it reports, and a check of the pipeline on the saved folder.
"""

from __future__ import annotations

import importlib
import json
import os
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
from transformers import TrainerCallback, pipeline

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
    "text_to_speech": [
        "--hidden_size", "32", "--encoder_layers", "1", "--decoder_layers", "1", "--kv_lora_rank", "16",
        "--intermediate_size", "64", "--postnet_channels", "16", "--vocoder_initial_channels", "16",
    ],
    "video_classification": [
        "--patch_size", "4", "--hidden_size", "32", "--backbone_layers", "1", "--num_hidden_layers", "1",
        "--num_attention_heads", "4", "--num_experts", "2", "--num_experts_per_tok", "1",
    ],
}  # fmt: skip

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
        model_args, data_args, training_args = module.parse_args(
            (module.ModelArguments, module.DataArguments, module.TrainingArguments), module.TRAINING_DEFAULTS, args
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
    from transformers import set_seed

    model_args, _, training_args = module.parse_args(
        (module.ModelArguments, module.DataArguments, module.TrainingArguments), module.TRAINING_DEFAULTS, args
    )
    set_seed(training_args.seed)
    return module.build_model(model_args, labels=[str(digit) for digit in range(10)]).state_dict()


# ---------------------------------------------------------------------------------------------------- the tour


def test_tour_trains_a_digit_classifier_and_serves_it_through_the_pipeline(tmp_path, monkeypatch, capsys):
    from omni_encoders import cli

    monkeypatch.setenv("OMNI_ENCODERS_CACHE", str(tmp_path / "cache"))
    argv = ["tour", "--steps", "train-vision", "--train-epochs", "0.3", "--output-dir", str(tmp_path / "m")]
    assert cli.main(argv) == 0
    output = capsys.readouterr().out
    assert "Trainer.evaluate on the 360 held-out digits: accuracy" in output
    assert "OmniVisionForImageClassification via pipeline('image-classification'): accuracy" in output
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "preprocessor_config.json").is_file()

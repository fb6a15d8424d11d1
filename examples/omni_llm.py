#!/usr/bin/env python
# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Train an omni-modal LLM with 🤗 Trainer: one language model reading our image, video and audio encoders' tokens,
answering questions about digits in pictures, moving digits in videos and spoken digit strings. One model, one run.

Every part is built here and trained from scratch together: a small Llama (built from its config) with a word-level
tokenizer trained on the task's text with the `tokenizers` library, and small versions of `OmniVisionModel`,
`OmniVideoModel` and `OmniAudioModel`, each feeding the LM through its projector (`OmniForConditionalGeneration`).
The tasks, as chats rendered by `OmniProcessor`'s chat template:

- image: scikit-learn's handwritten digits, "<image> what digit is this ?" -> "seven";
- video: moving-digit videos (`build_moving_digit_videos`), "<video> which way does it move ?" -> "left": left is
  right played backwards and up is down, so only the order of the frames tells the answer;
- speech: strings of 3-6 digits read out by espeak-ng and flite voices (`build_spoken_digit_strings`),
  "<audio> transcribe" -> "three one four"; the held-out voices are never heard in training. Single spoken digits of
  the training voices (`build_spoken_digits`) join the training set, as in the CTC recipe.

`OmniCollator` batches the chats and masks the prompt (and every media token) out of the labels, so the loss is the
answer's alone; batches mix the three tasks. Evaluation generates (greedy, KV cache) through
`OmniGenerationTrainer`: exact-match rate of the answers for images and videos, and for speech the character error
rate of the digits the answer says (plus its exact-match rate). `--shuffle_frames` trains and evaluates on the
control videos, whose frames come in a random order: the video answers should then be at chance (0.25).

The output folder holds the model and its processor (with the chat template), so

    pipeline("image-text-to-text", model=output_dir)

answers questions about digit images. Run it as a script or with accelerate:

    python examples/omni_llm.py --output_dir runs/omni_llm
    accelerate launch --multi_gpu --num_processes 2 examples/omni_llm.py --output_dir runs/omni_llm_2proc \\
        --per_device_train_batch_size 16

`docs/RESULTS.md` lists the commands, times and scores measured.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from datasets import Array4D, Features
from recipe_utils import SpeechDataArguments, end_distributed, run_training, select_first, start_recipe
from transformers import LlamaConfig, TrainingArguments

from omni_encoders import (
    OmniAudioConfig,
    OmniCollator,
    OmniConfig,
    OmniForConditionalGeneration,
    OmniProcessor,
    OmniVideoConfig,
    OmniVisionConfig,
)
from omni_encoders.data import (
    DIGIT_WORDS,
    DIRECTIONS,
    build_digit_images,
    build_moving_digit_videos,
    build_spoken_digit_strings,
    build_spoken_digits,
    digits_to_words,
    read_video,
)
from omni_encoders.metrics import load as load_metric
from omni_encoders.training import ChatExamples, OmniGenerationTrainer, train_word_level_tokenizer

logger = logging.getLogger(__name__)

# The recipe's settings: `python examples/omni_llm.py --output_dir DIR` reaches the scores reported in
# docs/RESULTS.md with them. Every one can be overridden on the command line.
TRAINING_DEFAULTS = {
    "do_train": True,
    "do_eval": True,
    # 2e-3 (the encoder recipes' rate) left the video answers at chance for a whole run; 5e-4 learnt them in 150 steps
    "learning_rate": 7e-4,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "num_train_epochs": 8,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "logging_steps": 20,
    "eval_strategy": "no",
    "save_strategy": "epoch",
    "save_total_limit": 1,
    "seed": 42,
    # float32 even where the CPU runs bfloat16 natively: with matrices this small, autocast's casts cost more than the
    # bf16 matmuls save (40 steps: 17 s in float32 against 26 s with bf16 autocast, on an AMX Xeon with 2 threads).
    "bf16": False,
}

QUESTIONS = {"image": "what digit is this ?", "video": "which way does it move ?", "speech": "transcribe"}
MODALITIES = ("image", "video", "speech")


@dataclass
class ModelArguments:
    """The sizes of the language model and of the three encoders, all trained from scratch (or a saved model to go on
    training)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A saved OmniForConditionalGeneration (with its processor) to fine-tune instead."},
    )

    text_hidden_size: int = field(default=128, metadata={"help": "Width of the Llama language model."})
    text_layers: int = field(default=2, metadata={"help": "Decoder layers of the language model."})
    text_heads: int = field(default=4, metadata={"help": "Query heads of the language model."})
    text_kv_heads: int = field(default=2, metadata={"help": "Key/value heads of the language model."})
    projector_num_layers: int = field(default=2, metadata={"help": "Linear layers of each modality's projector."})
    # transformers' defaults (0.02) suit wide models: with them this small LM learns the answers' prior and ignores the
    # media for hundreds of steps (held-out digit images: 0.10 after 300 steps, 0.77 with these settings).
    text_initializer_range: float = field(default=0.12, metadata={"help": "Initial weight scale of the LM."})
    projector_initializer_range: float = field(
        default=0.08, metadata={"help": "Initial weight scale of the projectors (and of the audio CTC head)."}
    )
    vision_initializer_range: float = field(default=0.08, metadata={"help": "Initial weight scale of the image encoder."})
    vision_hidden_size: int = field(default=64, metadata={"help": "Width of the image encoder."})
    vision_backbone_layers: int = field(default=2, metadata={"help": "SigLIP layers of the image encoder."})
    vision_num_tokens: int = field(default=8, metadata={"help": "TiTok tokens per image (the LM's image tokens)."})
    video_hidden_size: int = field(default=64, metadata={"help": "Width of the video encoder."})
    video_layers: int = field(default=2, metadata={"help": "Video blocks (spatial, frame-causal temporal, MoE)."})
    video_frame_causal: bool = field(
        default=True, metadata={"help": "Frame-causal temporal attention (a frame's tokens see earlier frames only)."}
    )
    video_tokens_per_frame: int = field(default=1, metadata={"help": "Tokens per frame (the LM's video tokens)."})
    video_initializer_range: float = field(
        default=0.08, metadata={"help": "Initial weight scale of the video blocks (as in the video recipe)."}
    )
    audio_hidden_size: int = field(default=128, metadata={"help": "Width of the audio encoder's Conformer."})
    audio_layers: int = field(default=3, metadata={"help": "Conformer blocks of the audio encoder."})
    audio_downsample_rate: int = field(
        default=4, metadata={"help": "Audio frames pooled into one LM token (the tokenizer gives 25 frames/s)."}
    )
    loss_reduction: str = field(
        default="sample",
        metadata={
            "help": "sample: every example weighs the same in the loss; token: every answer token does (the 6-word "
            "transcripts then outweigh the one-word answers about the images and videos)."
        },
    )
    audio_ctc_loss_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the auxiliary CTC loss of the audio tokens against the transcript (0: none); it gets the "
            "audio encoder going long before the LM's attention has learned where the words are."
        },
    )
    patch_size: int = field(default=8, metadata={"help": "Patch side of the image and video encoders."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "eager, sdpa or flex_attention."})


@dataclass
class DataArguments(SpeechDataArguments):
    """The three tasks' data, and how much of each one epoch holds. The speech arguments (voices, held-out voices,
    speeds, pitches) are those of the other audio recipes; `dataset_seed` seeds the images' and videos' splits too."""

    modalities: list[str] = field(
        default_factory=lambda: list(MODALITIES), metadata={"help": "Tasks to train on: image, video, speech."}
    )
    image_repeats: float = field(default=3.0, metadata={"help": "Times each training image appears per epoch."})
    video_repeats: float = field(default=1.5, metadata={"help": "Times each training video appears per epoch."})
    speech_repeats: float = field(
        default=2.0, metadata={"help": "Times each training digit string appears per epoch."}
    )
    spoken_digit_repeats: int = field(
        default=1,
        metadata={"help": "Single spoken digits of the training voices per voice and digit, in each epoch (0: none)."},
    )
    group_by_task: bool = field(
        default=True,
        metadata={"help": "One-task batches (TaskGroupedSampler); false: batches mix the tasks."},
    )
    image_size: int = field(default=32, metadata={"help": "Side of the digit images (and of the image encoder)."})
    num_frames: int = field(default=16, metadata={"help": "Frames per video."})
    frame_size: int = field(default=32, metadata={"help": "Side of the video frames."})
    num_videos: int = field(default=1600, metadata={"help": "Videos to build (a quarter of the scenes held out)."})
    shuffle_frames: bool = field(
        default=False, metadata={"help": "The control set: each video's frames in a random order (answers kept)."}
    )
    utterances_per_voice: int = field(default=40, metadata={"help": "Digit strings said by each voice."})
    min_digits: int = field(default=3, metadata={"help": "Shortest digit string."})
    max_digits: int = field(default=6, metadata={"help": "Longest digit string."})

    def __post_init__(self):
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"--modalities takes some of {MODALITIES}, got {self.modalities}.")


# --------------------------------------------------------------------------------------------------------- data


def chat(modality: str, media, answer: str) -> dict:
    """One example: the user's media and question, the assistant's answer. A clip's transcript is the answer (the
    target of the model's auxiliary CTC loss, see `OmniConfig.audio_ctc_loss_weight`)."""
    item = {"type": "image", "image": media} if modality == "image" else {"type": "video", "video": media}
    if modality == "speech":
        item = {"type": "audio", "audio": media, "transcript": answer}
    content = [item, {"type": "text", "text": QUESTIONS[modality]}]
    return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]}


def decode_videos(dataset, num_frames: int, desc: str):
    """The videos' frames, decoded once (`[T, H, W, 3]` uint8 in a `frames` column; decoding costs more than a
    training step). The processor samples, resizes and normalises them per batch."""
    height = width = None

    def decode(batch):
        return {"frames": [read_video(path) for path in batch["video"]]}

    first = read_video(dataset[0]["video"])
    height, width = first.shape[1:3]
    if first.shape[0] != num_frames:
        raise ValueError(f"The videos have {first.shape[0]} frames, expected {num_frames}.")
    features = dataset.features.copy()
    features["frames"] = Array4D(shape=(num_frames, height, width, 3), dtype="uint8")
    return dataset.map(decode, batched=True, batch_size=64, features=Features(features), desc=desc).with_format(
        "numpy", columns=["frames", "label"]
    )


def load_tasks(data_args: DataArguments, training_args: TrainingArguments) -> tuple[dict, dict]:
    """`{task: (dataset, to_chat)}` for training and for the held-out evaluation."""
    train, held_out = {}, {}
    cache = data_args.dataset_cache_dir
    if "image" in data_args.modalities:
        with training_args.main_process_first(desc="building the digit images"):
            images = build_digit_images(image_size=data_args.image_size, seed=data_args.dataset_seed, cache_dir=cache)

        def image_chat(row):
            return chat("image", np.asarray(row["image"]), DIGIT_WORDS[row["label"]])

        train["image"], held_out["image"] = (images["train"], image_chat), (images["test"], image_chat)
    if "video" in data_args.modalities:
        with training_args.main_process_first(desc="building and decoding the moving-digit videos"):
            videos = build_moving_digit_videos(
                num_videos=data_args.num_videos,
                num_frames=data_args.num_frames,
                frame_size=data_args.frame_size,
                shuffle_frames=data_args.shuffle_frames,
                seed=data_args.dataset_seed,
                cache_dir=cache,
            )
            videos = {split: decode_videos(videos[split], data_args.num_frames, f"decoding {split}") for split in videos}

        def video_chat(row):
            return chat("video", row["frames"], DIRECTIONS[int(row["label"])])

        train["video"], held_out["video"] = (videos["train"], video_chat), (videos["test"], video_chat)
    if "speech" in data_args.modalities:
        speech_kwargs = data_args.builder_kwargs()
        with training_args.main_process_first(desc="synthesising the spoken digit strings"):
            strings = build_spoken_digit_strings(
                utterances_per_voice=data_args.utterances_per_voice,
                min_digits=data_args.min_digits,
                max_digits=data_args.max_digits,
                **speech_kwargs,
            )
            digits = None
            if data_args.spoken_digit_repeats > 0:
                digits = build_spoken_digits(repeats=data_args.spoken_digit_repeats, **speech_kwargs)
        for split in strings.values():
            split.set_format("numpy", columns=["audio"], output_all_columns=True)

        def speech_chat(row):
            return chat("speech", row["audio"]["array"], digits_to_words(row["digits"]))

        train["speech"], held_out["speech"] = (strings["train"], speech_chat), (strings["test"], speech_chat)
        if digits is not None:
            digits["train"].set_format("numpy", columns=["audio"], output_all_columns=True)
            train["spoken_digit"] = (digits["train"], speech_chat)
    train = {task: (select_first(dataset, data_args.max_train_samples), fn) for task, (dataset, fn) in train.items()}
    held_out = {task: (select_first(dataset, data_args.max_eval_samples), fn) for task, (dataset, fn) in held_out.items()}
    return train, held_out


# ---------------------------------------------------------------------------------------------- tokenizer, model


def task_texts() -> list[str]:
    """Every word the chats use: the chat roles, the questions and all possible answers."""
    return ["User : Assistant :", *QUESTIONS.values(), " ".join(DIGIT_WORDS), " ".join(DIRECTIONS)]


def build_model(model_args: ModelArguments, data_args: DataArguments, tokenizer) -> OmniForConditionalGeneration:
    text_config = LlamaConfig(
        hidden_size=model_args.text_hidden_size,
        intermediate_size=4 * model_args.text_hidden_size,
        num_hidden_layers=model_args.text_layers,
        num_attention_heads=model_args.text_heads,
        num_key_value_heads=model_args.text_kv_heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        initializer_range=model_args.text_initializer_range,
    )

    def siglip(width, layers, image_size):
        return {
            "model_type": "siglip_vision_model",
            "hidden_size": width,
            "intermediate_size": 4 * width,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": model_args.patch_size,
        }

    configs = {}
    if "image" in data_args.modalities:
        width = model_args.vision_hidden_size
        configs["vision_config"] = OmniVisionConfig(
            backbone_config=siglip(width, model_args.vision_backbone_layers, data_args.image_size),
            num_hidden_layers=1,
            num_attention_heads=4,
            num_tokens=model_args.vision_num_tokens,
            initializer_range=model_args.vision_initializer_range,
        )
    if "video" in data_args.modalities:
        width = model_args.video_hidden_size
        configs["video_config"] = OmniVideoConfig(
            vision_config={
                "backbone_config": siglip(width, 1, data_args.frame_size),
                "num_hidden_layers": 0,
                "num_attention_heads": 4,
            },
            num_hidden_layers=model_args.video_layers,
            num_attention_heads=4,
            moe_intermediate_size=2 * width,
            compressor_intermediate_size=2 * width,
            num_tokens_per_frame=model_args.video_tokens_per_frame,
            num_frames=data_args.num_frames,
            max_frames=max(32, data_args.num_frames),
            initializer_range=model_args.video_initializer_range,
            frame_causal=model_args.video_frame_causal,
        )
    if "speech" in data_args.modalities:
        width = model_args.audio_hidden_size
        configs["audio_config"] = OmniAudioConfig(
            # 5 strided convolutions, 640 samples per frame: 25 frames/s (as in the CTC recipe)
            tokenizer_channels=[16, 64, width, width, width],
            tokenizer_kernel_sizes=[20, 8, 4, 4, 4],
            tokenizer_strides=[10, 4, 4, 2, 2],
            tokenizer_norm_groups=8,
            hidden_size=width,
            num_hidden_layers=model_args.audio_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            kv_lora_rank=width // 2,
            qk_rope_head_dim=width // 8,  # half of each 4-head query's width
            intermediate_size=4 * width,
            conv_kernel_size=15,
            hidden_dropout=0.0,
            output_downsample_rate=model_args.audio_downsample_rate,
            use_speaker_encoder=False,  # the LM reads the Conformer's frames only
        )
    return OmniForConditionalGeneration(
        OmniConfig(
            text_config=text_config,
            **configs,
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
            audio_token_id=tokenizer.convert_tokens_to_ids("<audio>"),
            projector_num_layers=model_args.projector_num_layers,
            initializer_range=model_args.projector_initializer_range,
            loss_reduction=model_args.loss_reduction,
            audio_ctc_loss_weight=model_args.audio_ctc_loss_weight if "speech" in data_args.modalities else 0.0,
            attn_implementation=model_args.attn_implementation,
        )
    )


# ---------------------------------------------------------------------------------------------------- scoring


def score_answers(task: str, predictions: list[str], references: list[str]) -> dict[str, float]:
    """Exact-match rate of the answers; for speech also the character error rate of the digits said (words that
    are not digit words are dropped from the answer before it is scored)."""
    metrics = {"exact_match": float(np.mean([p == r for p, r in zip(predictions, references, strict=True)]))}
    if task == "speech":
        metrics["cer"] = load_metric("cer", keep_in_memory=True).compute(
            predictions=[digits_said(p) for p in predictions], references=[digits_said(r) for r in references]
        )["cer"]
    return metrics


def digits_said(text: str) -> str:
    """The digits an answer says, in order ("three one four" -> "314"); other words are dropped."""
    return "".join(str(DIGIT_WORDS.index(word)) for word in text.split() if word in DIGIT_WORDS)


def make_trainer(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments, callbacks=None
) -> OmniGenerationTrainer:
    train_tasks, held_out_tasks = load_tasks(data_args, training_args)
    if model_args.model_name_or_path is not None:
        model = OmniForConditionalGeneration.from_pretrained(
            model_args.model_name_or_path, attn_implementation=model_args.attn_implementation
        )
        processor = OmniProcessor.from_pretrained(model_args.model_name_or_path)
    else:
        tokenizer = train_word_level_tokenizer(task_texts())
        model = build_model(model_args, data_args, tokenizer)
        processor = OmniProcessor.from_config(model.config, tokenizer)
    repeats = {
        "image": data_args.image_repeats,
        "video": data_args.video_repeats,
        "speech": data_args.speech_repeats,
        "spoken_digit": 1.0,
    }
    train_dataset = ChatExamples(train_tasks, repeats, seed=data_args.dataset_seed)
    eval_dataset = {task: ChatExamples({task: source}) for task, source in held_out_tasks.items()}
    logger.info(
        f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; training examples per epoch: "
        f"{train_dataset.task_counts()}; held out: { {task: len(d) for task, d in eval_dataset.items()} }"
    )
    return OmniGenerationTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=OmniCollator(processor),
        processing_class=processor,
        answer_metrics=score_answers,
        generation_kwargs={"max_new_tokens": 8},
        group_by_task=data_args.group_by_task,
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
    return run_training(trainer, recipe="omni_llm", held_out_split="test", args=args, started_at=started_at)


if __name__ == "__main__":
    main()
    end_distributed()

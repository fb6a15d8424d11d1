# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Processor of the omni-modal LLM: our image processor, video processor and audio feature extractor with the LM's
tokenizer, placeholders expanded to the encoders' token counts, a chat template, and the training collator."""

from __future__ import annotations

from typing import Any

import torch
from transformers import ProcessorMixin

from .configuration_omni_audio import audio_frame_lengths

# Renders `{"role": ..., "content": str | [{"type": "image" | "video" | "audio" | "text", ...}]}` messages as
# "User: <image>What digit is this?</s>\nAssistant: seven</s>\n"; any tokenizer with an eos token works with it.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ message['role'] | capitalize }}: "
    "{%- if message['content'] is string -%}{{ ' ' + message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ ' <image>' }}"
    "{%- elif item['type'] == 'video' -%}{{ ' <video>' }}"
    "{%- elif item['type'] == 'audio' -%}{{ ' <audio>' }}"
    "{%- elif item['type'] == 'text' -%}{{ ' ' + item['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ eos_token + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}Assistant:{%- endif -%}"
)


class OmniProcessor(ProcessorMixin):
    r"""
    Processor of [`OmniForConditionalGeneration`]: an [`OmniVisionImageProcessor`], an [`OmniVideoVideoProcessor`],
    an [`OmniAudioFeatureExtractor`] and the language model's tokenizer.

    `processor(text=..., images=..., videos=..., audio=...)` returns the tokenizer's `input_ids` and `attention_mask`
    with every `<image>`, `<video>` and `<audio>` placeholder of the text expanded to the number of tokens its input
    becomes (`num_image_tokens` per image; `num_video_tokens_per_frame` per real frame of a video; one per encoder
    frame of a clip's valid samples, `audio_frame_lengths(samples, audio_samples_per_frame, audio_downsample_rate)`),
    plus `pixel_values`, `pixel_values_videos` with `video_frame_mask`, and `input_values` with
    `audio_attention_mask`. Media inputs are taken in the order of their placeholders across the batch; their number
    must match the placeholders'. `apply_chat_template` takes transformers' message format with `{"type": "image" |
    "video" | "audio" | "text"}` content; `batch_decode` decodes answers.

    [`OmniProcessor.from_config`] builds one for a model config, with the token counts it implies.

    Args:
        image_processor ([`OmniVisionImageProcessor`]): the image processor.
        video_processor ([`OmniVideoVideoProcessor`]): the video processor.
        feature_extractor ([`OmniAudioFeatureExtractor`]): the audio feature extractor.
        tokenizer: the LM's tokenizer; `image_token`, `video_token` and `audio_token` must be in its vocabulary
            (e.g. `tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<video>", "<audio>"]})`).
        chat_template (`str`, *optional*): defaults to [`DEFAULT_CHAT_TEMPLATE`] ("User: ...</s>\nAssistant:").
        image_token, video_token, audio_token (`str`): the placeholders.
        num_image_tokens (`int`, defaults to 256): tokens per image (`vision_config.num_tokens`).
        num_video_tokens_per_frame (`int`, defaults to 64): tokens per real frame (`video_config.num_tokens_per_frame`).
        audio_samples_per_frame (`int`, defaults to 64): the audio tokenizer's stride
            (`audio_config.tokenizer_samples_per_frame`).
        audio_downsample_rate (`int`, defaults to 1): `audio_config.output_downsample_rate`.
    """

    def __init__(
        self,
        image_processor=None,
        video_processor=None,
        feature_extractor=None,
        tokenizer=None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        video_token: str = "<video>",
        audio_token: str = "<audio>",
        num_image_tokens: int = 256,
        num_video_tokens_per_frame: int = 64,
        audio_samples_per_frame: int = 64,
        audio_downsample_rate: int = 1,
    ):
        self.image_token, self.video_token, self.audio_token = image_token, video_token, audio_token
        self.num_image_tokens = num_image_tokens
        self.num_video_tokens_per_frame = num_video_tokens_per_frame
        self.audio_samples_per_frame = audio_samples_per_frame
        self.audio_downsample_rate = audio_downsample_rate
        for name in ("num_image_tokens", "num_video_tokens_per_frame", "audio_samples_per_frame",
                     "audio_downsample_rate"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for modality, token in (("image", image_token), ("video", video_token), ("audio", audio_token)):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
                raise ValueError(
                    f"The tokenizer has no {token!r} token for the {modality} placeholder: add it with "
                    f"`tokenizer.add_special_tokens({{'additional_special_tokens': [{token!r}, ...]}})` (and grow the "
                    "LM's embeddings with `model.resize_token_embeddings(len(tokenizer))`)."
                )
            setattr(self, f"{modality}_token_id", token_id)
        super().__init__(
            image_processor,
            video_processor,
            feature_extractor,
            tokenizer,
            chat_template=chat_template if chat_template is not None else DEFAULT_CHAT_TEMPLATE,
        )

    @classmethod
    def from_config(cls, config, tokenizer, chat_template: str | None = None, **processor_kwargs) -> OmniProcessor:
        """A processor for a model with `config` (an [`OmniConfig`]): the token counts follow its encoders, the image
        and video processors resize to their encoders' native resolution, the video processor samples
        `video_config.num_frames` frames; `processor_kwargs` override any [`OmniProcessor`] argument (e.g. an
        `image_processor` of your own)."""
        from .feature_extraction_omni_audio import OmniAudioFeatureExtractor
        from .image_processing_omni_vision import OmniVisionImageProcessor
        from .video_processing_omni_video import OmniVideoVideoProcessor

        kwargs: dict[str, Any] = {}
        if config.vision_config is not None:
            size = config.vision_config.image_size
            kwargs.update(
                image_processor=OmniVisionImageProcessor(size={"height": size, "width": size}),
                num_image_tokens=config.vision_config.num_tokens,
            )
        if config.video_config is not None:
            size = config.video_config.image_size
            kwargs.update(
                video_processor=OmniVideoVideoProcessor(
                    size={"height": size, "width": size}, num_frames=config.video_config.num_frames
                ),
                num_video_tokens_per_frame=config.video_config.num_tokens_per_frame,
            )
        if config.audio_config is not None:
            kwargs.update(
                audio_samples_per_frame=config.audio_config.tokenizer_samples_per_frame,
                audio_downsample_rate=config.audio_config.output_downsample_rate,
            )
        kwargs.setdefault("image_processor", OmniVisionImageProcessor())
        kwargs.setdefault("video_processor", OmniVideoVideoProcessor())
        # its too-short check needs one frame of samples: the tokenizer's stride
        kwargs["feature_extractor"] = OmniAudioFeatureExtractor(
            samples_per_frame=kwargs.get("audio_samples_per_frame", 64)
        )
        kwargs.update(processor_kwargs)
        return cls(tokenizer=tokenizer, chat_template=chat_template, **kwargs)

    def check_argument_for_proper_class(self, argument_name, argument):
        # transformers looks `VideoProcessorMixin` up among its top-level names, which do not include it (5.24), and
        # then fails inside its registry of custom image processors: check the video processor here.
        if argument_name == "video_processor":
            from transformers.video_processing_utils import VideoProcessorMixin

            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(
                    f"Received a {type(argument).__name__} for argument video_processor, but a video processor was "
                    "expected."
                )
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)

    # Placeholder expansion (called by `ProcessorMixin.__call__` once per input, in placeholder order)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.num_image_tokens

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        real_frames = int(video_inputs["frame_mask"][video_idx].sum())
        return self.video_token * (real_frames * self.num_video_tokens_per_frame)

    def replace_audio_token(self, audio_inputs: dict, audio_idx: int, **kwargs) -> str:
        samples = int(audio_inputs["attention_mask"][audio_idx].sum())
        frames = audio_frame_lengths(samples, self.audio_samples_per_frame, self.audio_downsample_rate)
        return self.audio_token * frames

    def _process_videos(self, videos, **kwargs):
        processed, replacements = super()._process_videos(videos, **kwargs)
        processed["video_frame_mask"] = processed.pop("frame_mask")
        return processed, replacements

    def _process_audio(self, audio, **kwargs):
        kwargs.update(return_attention_mask=True, padding="longest")
        processed, replacements = super()._process_audio(audio, **kwargs)
        processed["audio_attention_mask"] = processed.pop("attention_mask")
        return processed, replacements

    @property
    def model_input_names(self) -> list[str]:
        return [
            *self.tokenizer.model_input_names,
            "pixel_values",
            "pixel_values_videos",
            "video_frame_mask",
            "input_values",
            "audio_attention_mask",
        ]


def process_prompts(processor, prompts: list[str], media: dict[str, list], padding_side: str):
    """`processor(...)` on a batch of chat prompts and their media (`{"image": [...], "video": [...], "audio":
    [...]}`, in the order the prompts' placeholders come), padded on `padding_side`, as PyTorch tensors."""
    return processor(
        text=prompts,
        images=media["image"] or None,
        videos=media["video"] or None,
        audio=media["audio"] or None,
        sampling_rate=processor.feature_extractor.sampling_rate,
        padding=True,
        padding_side=padding_side,
        return_tensors="pt",
    )


def media_of_messages(messages: list[dict]) -> dict[str, list]:
    """The media of chat `messages` in transformers' format, in order: `{"image": [...], "video": [...], "audio":
    [...]}` from the content items' `"image"`, `"video"` and `"audio"` values (e.g. a PIL image or array, a frame
    array or video path, a 16 kHz waveform), the inputs `OmniProcessor` takes beside the rendered chat template."""
    media = {"image": [], "video": [], "audio": []}
    for message in messages:
        if isinstance(message["content"], str):
            continue
        for item in message["content"]:
            if item["type"] in media:
                if item["type"] not in item:
                    raise ValueError(f"A {item['type']!r} content item needs its data under {item['type']!r}.")
                media[item["type"]].append(item[item["type"]])
    return media


class OmniCollator:
    """Batches chat examples for training [`OmniForConditionalGeneration`] with `Trainer`: the prompt (and every media
    token) is masked out of the labels, so the loss is the answer's alone.

    Each example is `{"messages": [...]}` in transformers' chat format whose last message is the assistant's answer
    (a string, or `[{"type": "text", "text": ...}]`); the media are the content items' `"image"`, `"video"` and
    `"audio"` values (a PIL image or array, a frame array or path, a 16 kHz waveform), in order. The prompt is the
    chat template of the other messages with the generation prompt; the answer's ids follow it, then the eos token.
    Sequences are padded on the right; `labels` are -100 on the prompt and the padding.

    An audio content item may carry its `"transcript"` (e.g. `{"type": "audio", "audio": waveform, "transcript":
    "three one four"}`): the batch then also holds `audio_ctc_labels [num_audios, L]`, each clip's transcript as
    token ids (-100 after it, and a row of -100 for a clip without one), the targets of the model's auxiliary CTC loss
    (`OmniConfig.audio_ctc_loss_weight`).

    Args:
        processor ([`OmniProcessor`]): the processor.
        max_length (`int`, *optional*): longer sequences are an error (a truncated media placeholder would not match
            its tokens).
    """

    def __init__(self, processor: OmniProcessor, max_length: int | None = None):
        self.processor = processor
        self.max_length = max_length

    @staticmethod
    def _split(example: dict) -> tuple[list[dict], str, dict[str, list]]:
        messages = example["messages"]
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("Each training example's last message must be the assistant's answer.")
        answer = messages[-1]["content"]
        if not isinstance(answer, str):
            answer = "".join(item["text"] for item in answer if item["type"] == "text")
        return messages[:-1], answer, media_of_messages(messages[:-1])

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        processor, tokenizer = self.processor, self.processor.tokenizer
        prompts, answers, media, transcripts = [], [], {"image": [], "video": [], "audio": []}, []
        for example in examples:
            messages, answer, example_media = self._split(example)
            prompts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            answers.append(answer)
            for modality, values in example_media.items():
                media[modality].extend(values)
            transcripts.extend(
                item.get("transcript")
                for message in messages
                if not isinstance(message["content"], str)
                for item in message["content"]
                if item["type"] == "audio"
            )
        inputs = process_prompts(processor, prompts, media, padding_side="right")
        answers = tokenizer(
            [" " + answer + tokenizer.eos_token for answer in answers],
            add_special_tokens=False,
            padding=True,
            padding_side="right",
            return_tensors="pt",
        )
        # Each row: prompt, answer, eos, then padding. Place the answers after each prompt's own length.
        prompt_lengths = inputs["attention_mask"].sum(1)
        answer_lengths = answers["attention_mask"].sum(1)
        lengths = prompt_lengths + answer_lengths
        if self.max_length is not None and int(lengths.max()) > self.max_length:
            raise ValueError(f"An example has {int(lengths.max())} tokens, more than max_length={self.max_length}.")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        batch_size, length = len(examples), int(lengths.max())
        positions = torch.arange(length)[None, :]
        input_ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
        prompt_ids = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, pad_id)
        input_ids[:, : prompt_ids.shape[1]] = prompt_ids
        is_answer = (positions >= prompt_lengths[:, None]) & (positions < lengths[:, None])
        input_ids[is_answer] = answers["input_ids"][answers["attention_mask"].bool()]
        attention_mask = (positions < lengths[:, None]).long()
        labels = input_ids.masked_fill(~is_answer, -100)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        for name in ("pixel_values", "pixel_values_videos", "video_frame_mask", "input_values", "audio_attention_mask"):
            if name in inputs:
                batch[name] = inputs[name]
        if any(transcript is not None for transcript in transcripts):
            batch["audio_ctc_labels"] = self._transcript_labels(transcripts)
        return batch

    def _transcript_labels(self, transcripts: list[str | None]) -> torch.Tensor:
        """`[num_audios, L]` token ids of each clip's transcript, -100 after it (a clip without one: all -100)."""
        ids = [
            [] if text is None else self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
            for text in transcripts
        ]
        rows = [torch.tensor(token_ids, dtype=torch.long) for token_ids in ids]
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-100)


OmniProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["DEFAULT_CHAT_TEMPLATE", "OmniCollator", "OmniProcessor", "media_of_messages"]

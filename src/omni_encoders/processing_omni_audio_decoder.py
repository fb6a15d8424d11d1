# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Processor of the omni-encoders audio decoder: character tokenizer + target feature extractor, and a collator."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import BatchFeature, ProcessorMixin


class OmniAudioDecoderProcessor(ProcessorMixin):
    r"""
    Wraps an [`OmniAudioDecoderTokenizer`] (text -> `input_ids`, `attention_mask`) and an
    [`OmniAudioDecoderFeatureExtractor`] (speech -> `labels`, `labels_attention_mask`, `pitch_labels`,
    `energy_labels`, `waveforms`) into one processor: `processor(text=...)` prepares inference inputs,
    `processor(text=..., audio=...)` a training batch for [`OmniAudioDecoderModel`].

    Args:
        feature_extractor ([`OmniAudioDecoderFeatureExtractor`]): the target feature extractor.
        tokenizer ([`OmniAudioDecoderTokenizer`]): the character tokenizer.

    Example:

    ```python
    >>> from omni_encoders import (
    ...     OmniAudioDecoderFeatureExtractor, OmniAudioDecoderProcessor, OmniAudioDecoderTokenizer
    ... )
    >>> processor = OmniAudioDecoderProcessor(OmniAudioDecoderFeatureExtractor(), OmniAudioDecoderTokenizer())
    >>> batch = processor(text=["Hello.", "Good morning!"], audio=[speech_a, speech_b], sampling_rate=16000,
    ...                   return_tensors="pt")
    ```
    """

    def __init__(self, feature_extractor, tokenizer):
        super().__init__(feature_extractor, tokenizer)

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        audio=None,
        sampling_rate: int | None = None,
        return_pitch: bool = True,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            text (`str` or `list[str]`, *optional*): the text(s) to speak; padded to the longest.
            audio (*optional*): the matching speech (training targets), as accepted by
                [`OmniAudioDecoderFeatureExtractor`].
            sampling_rate (`int`, *optional*): rate of `audio` (must be the feature extractor's).
            return_pitch (`bool`, *optional*, defaults to `True`): compute `pitch_labels` (needs `pyworld`).
            return_tensors (`str`, *optional*): `"pt"` or `"np"`.
            kwargs: passed to the tokenizer (e.g. `padding`, `truncation`, `max_length`).
        """
        if text is None and audio is None:
            raise ValueError("Pass `text` (what to say) and/or `audio` (the training targets).")
        outputs = {}
        if text is not None:
            if isinstance(text, str):
                text = [text]
            if not all(isinstance(item, str) for item in text):
                raise ValueError("text must be a string or a list of strings.")
            kwargs.setdefault("padding", True)
            outputs.update(self.tokenizer(list(text), **kwargs))
            if min(sum(mask) for mask in outputs["attention_mask"]) == 0:
                raise ValueError(
                    "A text has no character in the tokenizer's vocabulary after normalisation; nothing to speak."
                )
        if audio is not None:
            features = self.feature_extractor(audio, sampling_rate=sampling_rate, return_pitch=return_pitch)
            if text is not None and len(features["labels"]) != len(outputs["input_ids"]):
                raise ValueError(
                    f"Got {len(outputs['input_ids'])} texts and {len(features['labels'])} waveforms; pass one "
                    "waveform per text."
                )
            outputs.update(features)
        return BatchFeature(outputs, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return list(dict.fromkeys(self.tokenizer.model_input_names + self.feature_extractor.model_input_names))


class OmniAudioDecoderCollator:
    """Batches raw examples for `Trainer`: each example holds a text, its speech and optionally a speaker id; the
    collator runs the processor on the whole batch (padding text and targets). Use it with
    `Trainer(..., data_collator=OmniAudioDecoderCollator(processor), args=TrainingArguments(...,
    remove_unused_columns=False))`.

    Args:
        processor ([`OmniAudioDecoderProcessor`]): the processor.
        text_column, audio_column, speaker_column (`str`): the example keys. The audio may be an array or a
            `datasets.Audio` dict (`{"array": ..., "sampling_rate": ...}`); the speaker column is optional.
        return_pitch (`bool`, defaults to `True`): compute pitch targets.
        return_waveforms (`bool`, defaults to `True`): include the target `waveforms`, with which the model also
            trains its vocoder; without them it trains the acoustic model alone (much cheaper).
    """

    def __init__(
        self,
        processor: OmniAudioDecoderProcessor,
        text_column: str = "text",
        audio_column: str = "audio",
        speaker_column: str = "speaker_id",
        return_pitch: bool = True,
        return_waveforms: bool = True,
    ):
        self.processor = processor
        self.text_column = text_column
        self.audio_column = audio_column
        self.speaker_column = speaker_column
        self.return_pitch = return_pitch
        self.return_waveforms = return_waveforms

    def __call__(self, examples: list[dict]) -> BatchFeature:
        audio, rates = [], set()
        for example in examples:
            item = example[self.audio_column]
            if isinstance(item, dict):
                if item.get("sampling_rate") is not None:
                    rates.add(int(item["sampling_rate"]))
                item = item["array"]
            audio.append(item)
        if len(rates) > 1:
            raise ValueError(f"Examples of one batch have different sampling rates: {sorted(rates)}.")
        batch = self.processor(
            text=[str(example[self.text_column]) for example in examples],
            audio=audio,
            sampling_rate=rates.pop() if rates else None,
            return_pitch=self.return_pitch,
            return_tensors="pt",
        )
        if not self.return_waveforms:
            del batch["waveforms"]
        if all(self.speaker_column in example for example in examples):
            import torch

            batch["speaker_ids"] = torch.tensor([int(example[self.speaker_column]) for example in examples])
        return batch


OmniAudioDecoderProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["OmniAudioDecoderCollator", "OmniAudioDecoderProcessor"]

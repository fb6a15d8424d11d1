# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Processor of the omni-encoders audio encoder: the feature extractor plus a character CTC tokenizer."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import torch
from transformers import ProcessorMixin, Wav2Vec2CTCTokenizer

# The special tokens of `Wav2Vec2CTCTokenizer`, pad (= CTC blank) first, then the word delimiter.
CTC_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "|")
# English letters and the apostrophe: with the special tokens, 32 ids (`OmniAudioConfig.vocab_size`), as in wav2vec2.
ENGLISH_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"


def _mask_label_padding(labels, attention_mask):
    """Label ids with -100 where the tokenizer padded (torch tensors or numpy arrays)."""
    if isinstance(labels, torch.Tensor):
        return labels.masked_fill(attention_mask == 0, -100)
    return np.where(attention_mask == 0, -100, labels)


class OmniAudioProcessor(ProcessorMixin):
    r"""
    Processor of [`OmniAudioForCTC`]: an [`OmniAudioFeatureExtractor`] for the audio and a `Wav2Vec2CTCTokenizer`
    (character vocabulary, `|` as word delimiter, the pad token as CTC blank) for the transcripts.

    `processor(audio=..., text=..., sampling_rate=16000)` returns the extractor's features with the transcripts' ids as
    `labels`; `processor.batch_decode(logits.argmax(-1))` turns greedy CTC predictions into text (repeated characters
    collapsed, blanks dropped).

    Args:
        feature_extractor ([`OmniAudioFeatureExtractor`]): the audio feature extractor.
        tokenizer (`Wav2Vec2CTCTokenizer`): the character tokenizer.
    """

    def __init__(self, feature_extractor, tokenizer):
        super().__init__(feature_extractor, tokenizer)

    @classmethod
    def from_characters(
        cls, characters: str = ENGLISH_CHARACTERS, feature_extractor=None, **tokenizer_kwargs
    ) -> OmniAudioProcessor:
        """Build a processor whose tokenizer has the vocabulary `<pad> <s> </s> <unk> | c1 c2 ...` (ids in that
        order; `<pad>` = 0 is the CTC blank, `|` the word delimiter).

        With an upper-case vocabulary (the default: English letters and the apostrophe, 32 ids) the tokenizer is
        case-insensitive, as wav2vec2's: it upper-cases transcripts and decodes to lower case.

        Args:
            characters: the characters of the vocabulary besides the special tokens and the space (which maps to `|`).
            feature_extractor: an [`OmniAudioFeatureExtractor`] (a default one when omitted).
            tokenizer_kwargs: more arguments of `Wav2Vec2CTCTokenizer`.
        """
        from .feature_extraction_omni_audio import OmniAudioFeatureExtractor

        characters = "".join(dict.fromkeys(characters.replace(" ", "")))
        vocabulary = {token: index for index, token in enumerate([*CTC_SPECIAL_TOKENS, *characters])}
        with tempfile.TemporaryDirectory() as directory:
            vocab_file = os.path.join(directory, "vocab.json")
            with open(vocab_file, "w", encoding="utf-8") as handle:
                json.dump(vocabulary, handle, ensure_ascii=False)
            tokenizer_kwargs.setdefault("do_lower_case", characters == characters.upper())
            tokenizer = Wav2Vec2CTCTokenizer(vocab_file, **tokenizer_kwargs)
        return cls(feature_extractor or OmniAudioFeatureExtractor(), tokenizer)

    def __call__(self, audio=None, text=None, **kwargs):
        """
        Args:
            audio: anything [`OmniAudioFeatureExtractor`] accepts. Its keyword arguments (`sampling_rate`, `padding`,
                `return_tensors`, `return_speaker_features`, ...) are passed on.
            text (`str` or `list[str]`, *optional*): transcripts, tokenised into `labels` (or `input_ids` when no
                audio is given); padded with -100 when `return_tensors` is set.
        """
        if audio is None and text is None:
            raise ValueError("Give the processor `audio`, `text` or both.")
        return_tensors = kwargs.get("return_tensors")
        inputs = self.feature_extractor(audio, **kwargs) if audio is not None else None
        if text is None:
            return inputs
        encodings = self.tokenizer(text, padding=True, return_tensors=return_tensors, return_attention_mask=True)
        if audio is None:
            return encodings
        labels = encodings["input_ids"]
        if return_tensors is not None:  # the blank would be ignored too; -100 is the usual label padding
            labels = _mask_label_padding(labels, encodings["attention_mask"])
        inputs["labels"] = labels
        return inputs

    def pad(self, input_features=None, labels=None, **kwargs):
        """Pad a batch for training, as a data collator needs.

        Args:
            input_features: a list of per-example feature dicts (e.g. `{"input_values": ...}` from the extractor),
                padded by [`OmniAudioFeatureExtractor.pad`] (with `attention_mask`).
            labels: a list of `{"input_ids": ...}` dicts (or id lists) of the transcripts, padded by the tokenizer;
                padding becomes -100 when `return_tensors` is set.
            kwargs: `padding`, `max_length`, `pad_to_multiple_of`, `return_tensors`, ...

        Returns:
            The padded features with `labels`, or only one of them.
        """
        if input_features is None and labels is None:
            raise ValueError("Give `input_features`, `labels` or both to pad.")
        features = self.feature_extractor.pad(input_features, **kwargs) if input_features is not None else None
        if labels is None:
            return features
        labels = [label if isinstance(label, dict) else {"input_ids": label} for label in labels]
        encodings = self.tokenizer.pad(labels, return_attention_mask=True, **kwargs)
        label_ids = encodings["input_ids"]
        if kwargs.get("return_tensors") is not None:
            label_ids = _mask_label_padding(label_ids, encodings["attention_mask"])
        if features is None:
            return label_ids
        features["labels"] = label_ids
        return features

    @property
    def model_input_names(self) -> list[str]:
        return self.feature_extractor.model_input_names + ["labels"]


OmniAudioProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["OmniAudioProcessor"]

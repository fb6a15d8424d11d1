# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Feature extractor of the omni-encoders audio encoder: 16 kHz mono waveforms (+ log-mel frames for the speaker
encoder)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from transformers import BatchFeature, SequenceFeatureExtractor
from transformers.utils import TensorType, logging

from .configuration_omni_audio import audio_frame_lengths
from .modeling_omni_common import OmniMelSpectrogram, mel_frame_count


logger = logging.get_logger(__name__)


@functools.lru_cache(maxsize=8)
def _mel_spectrogram(sampling_rate: int, n_fft: int, hop_length: int, n_mels: int) -> OmniMelSpectrogram:
    return OmniMelSpectrogram(sampling_rate=sampling_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)


def _resample(waveform: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    try:
        import soxr
    except ImportError:
        raise ValueError(
            f"Audio sampled at {rate} Hz must be resampled to {target_rate} Hz, which needs the `soxr` package "
            f"(`pip install soxr`, or `pip install omni-encoders[audio]`); or resample it to {target_rate} Hz "
            "yourself."
        ) from None
    return soxr.resample(waveform, rate, target_rate, quality="HQ").astype(np.float32)



def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor's samples as numpy, keeping integer PCM integer (so that it is scaled to [-1, 1) like numpy PCM)."""
    tensor = tensor.detach().cpu()
    return tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()

class OmniAudioFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Feature extractor of [`OmniAudioModel`]: turns audio into 16 kHz mono `input_values [B, S]` with an
    `attention_mask [B, S]` (right padding), and on request the log-mel frames of the speaker encoder.

    Per clip it mixes multi-channel audio down to mono (mean of the channels), converts 8/16/32-bit PCM to floats in
    [-1, 1), resamples other rates to `sampling_rate` with soxr, and rejects empty, non-finite or too-short clips
    (shorter than one encoder frame, `samples_per_frame` samples) with a `ValueError`. Then it pads/truncates the batch
    and, with `do_normalize`, normalises each clip to zero mean and unit variance over its valid samples only.

    Speaker features (`return_speaker_features=True`): `speaker_features [B, S // speaker_hop_length,
    speaker_num_mel_bins]`, the log-mel spectrogram of each (un-normalised) clip computed batched in torch (Slaney mel
    filters, magnitude, `log(max(mel, 1e-5))`, 25 ms windows every 10 ms by default), zero on padded frames, and
    `speaker_attention_mask [B, S // speaker_hop_length]`. [`OmniAudioModel.get_speaker_embeddings`] turns them into
    the `speaker_embeddings` the audio decoder takes.

    Args:
        feature_size (`int`, *optional*, defaults to 1):
            Features per sample (1: a waveform).
        sampling_rate (`int`, *optional*, defaults to 16000):
            Rate the model works at; other rates are resampled to it.
        padding_value (`float`, *optional*, defaults to 0.0):
            Value of padded samples.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Normalise every clip to zero mean and unit variance over its valid samples.
        return_attention_mask (`bool`, *optional*, defaults to `True`):
            Return the sample-level `attention_mask` (the model needs it for padded batches).
        samples_per_frame (`int`, *optional*, defaults to 64):
            Samples per tokenizer frame (`OmniAudioConfig.tokenizer_samples_per_frame`); shorter clips, which the
            encoder gives no frame, are rejected.
        speaker_num_mel_bins (`int`, *optional*, defaults to 80):
            Mel bins of the speaker features.
        speaker_n_fft (`int`, *optional*, defaults to 400):
            FFT and window size of the speaker features (25 ms at 16 kHz).
        speaker_hop_length (`int`, *optional*, defaults to 160):
            Hop of the speaker features (10 ms at 16 kHz); a clip of `S` samples gives `S // speaker_hop_length`
            frames.
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16000,
        padding_value: float = 0.0,
        do_normalize: bool = True,
        return_attention_mask: bool = True,
        samples_per_frame: int = 64,
        speaker_num_mel_bins: int = 80,
        speaker_n_fft: int = 400,
        speaker_hop_length: int = 160,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.do_normalize = do_normalize
        self.samples_per_frame = samples_per_frame
        self.speaker_num_mel_bins = speaker_num_mel_bins
        self.speaker_n_fft = speaker_n_fft
        self.speaker_hop_length = speaker_hop_length

    # ---------------------------------------------------------------------------------------------------- inputs

    def _split_batch(self, raw_speech) -> list[tuple[object, int | None]]:
        """Turn any accepted input into a list of `(clip, sampling_rate or None)`."""
        if raw_speech is None or (isinstance(raw_speech, (list, tuple)) and len(raw_speech) == 0):
            raise ValueError("No audio was given to the feature extractor.")
        if isinstance(raw_speech, Mapping):
            return [self._from_mapping(raw_speech)]
        if isinstance(raw_speech, torch.Tensor):
            raw_speech = _to_numpy(raw_speech)
        if isinstance(raw_speech, np.ndarray):
            if raw_speech.ndim == 1:
                return [(raw_speech, None)]
            if raw_speech.ndim == 2:
                if raw_speech.shape[1] < self.samples_per_frame <= raw_speech.shape[0]:
                    # Rows too short for one frame each: not a batch, but one clip [samples, channels] (soundfile's
                    # layout), mixed down in `_prepare_clip`.
                    return [(raw_speech, None)]
                return [(clip, None) for clip in raw_speech]
            raise ValueError(
                f"Expected a waveform [samples] or a batch [batch, samples], got an array of shape {raw_speech.shape}."
            )
        if isinstance(raw_speech, Sequence) and not isinstance(raw_speech, (str, bytes)):
            if all(isinstance(value, (int, float, np.number)) for value in raw_speech):
                return [(np.asarray(raw_speech), None)]
            return [self._from_mapping(clip) if isinstance(clip, Mapping) else (clip, None) for clip in raw_speech]
        raise ValueError(
            f"Unsupported audio input of type {type(raw_speech).__name__}: expected a numpy array, a torch tensor, a "
            "list of floats, a dict with 'array' and 'sampling_rate' (as `datasets.Audio` gives), or a list of these."
        )

    @staticmethod
    def _from_mapping(clip: Mapping) -> tuple[object, int | None]:
        array = clip.get("array", clip.get("raw"))
        if array is None:
            raise ValueError(f"An audio dict needs an 'array' (or 'raw') entry, got keys {sorted(clip)}.")
        rate = clip.get("sampling_rate")
        if isinstance(rate, np.ndarray) and rate.ndim == 0:  # `datasets` in numpy format gives 0-d arrays
            rate = rate.item()
        return array, rate

    def _prepare_clip(self, clip, rate: int, index: int) -> np.ndarray:
        """One clip -> validated float32 mono waveform at `self.sampling_rate`."""
        if isinstance(clip, torch.Tensor):
            clip = _to_numpy(clip)
        try:
            clip = np.asarray(clip)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"Clip {index} is not a rectangular array of samples: {error}") from None
        if clip.dtype.kind == "i" and clip.dtype.itemsize <= 4:  # signed PCM (either byte order) -> [-1, 1)
            clip = clip.astype(np.float32) / float(2 ** (8 * clip.dtype.itemsize - 1))
        elif clip.dtype == np.uint8:  # unsigned 8-bit PCM, centred on 128
            clip = (clip.astype(np.float32) - 128.0) / 128.0
        elif not np.issubdtype(clip.dtype, np.floating):
            raise ValueError(
                f"Clip {index} has samples of dtype {clip.dtype}; expected floats or int8/int16/int32/uint8 PCM."
            )
        clip = clip.astype(np.float32, copy=False)
        if clip.ndim == 2:  # multi-channel: the channel axis is the shorter one
            clip = clip.mean(axis=int(np.argmin(clip.shape)))
        elif clip.ndim != 1:
            raise ValueError(
                f"Clip {index} has shape {clip.shape}; expected [samples] or multi-channel [channels, samples] / "
                "[samples, channels]."
            )
        if clip.size == 0:
            raise ValueError(f"Clip {index} is empty (0 samples).")
        if not np.isfinite(clip).all():
            raise ValueError(f"Clip {index} contains NaN or infinite samples.")
        if rate != self.sampling_rate:
            clip = _resample(clip, rate, self.sampling_rate)
        if clip.shape[0] < self.samples_per_frame:
            raise ValueError(
                f"Clip {index} has {clip.shape[0]} samples at {self.sampling_rate} Hz, shorter than one encoder frame "
                f"({self.samples_per_frame} samples)."
            )
        return clip

    # ---------------------------------------------------------------------------------------------------- features

    def speaker_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Log-mel frames of the speaker encoder for zero-padded `waveforms [B, S]` -> `[B, S // hop, n_mels]`.

        Computed in one batched `torch.stft`; each clip's valid frames equal those of the clip alone."""
        return _mel_spectrogram(
            self.sampling_rate, self.speaker_n_fft, self.speaker_hop_length, self.speaker_num_mel_bins
        )(waveforms)

    def _speaker_features(self, values: list[np.ndarray], lengths: list[int]) -> tuple[list, list]:
        too_short = [index for index, length in enumerate(lengths) if length < self.speaker_hop_length]
        if too_short:
            raise ValueError(
                f"Clips {too_short} are shorter than one speaker mel frame ({self.speaker_hop_length} samples)."
            )
        if len({value.shape[0] for value in values}) == 1:  # padded batch: one STFT for all clips
            waveforms = torch.from_numpy(np.stack(values))
            lengths_t = torch.tensor(lengths)
            waveforms = waveforms * (torch.arange(waveforms.shape[1]) < lengths_t[:, None])
            mels = self.speaker_mel(waveforms)
            frame_lengths = mel_frame_count(lengths_t, self.speaker_hop_length)
            mask = torch.arange(mels.shape[1]) < frame_lengths[:, None]
            mels = mels * mask[..., None]
            return list(mels.numpy()), list(mask.to(torch.int32).numpy())
        mels = [self.speaker_mel(torch.from_numpy(value[:length])).numpy() for value, length in zip(values, lengths)]
        return mels, [np.ones(mel.shape[0], dtype=np.int32) for mel in mels]

    def _normalize(self, values: list[np.ndarray], lengths: list[int]) -> list[np.ndarray]:
        """Zero mean, unit variance over each clip's valid samples; padding set to `padding_value`."""
        normalized = []
        for value, length in zip(values, lengths):
            valid = value[:length]
            value = np.full_like(value, self.padding_value)
            value[:length] = (valid - valid.mean()) / np.sqrt(valid.var() + 1e-7)
            normalized.append(value)
        return normalized

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        padding: bool | str = "longest",
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
        do_normalize: bool | None = None,
        return_speaker_features: bool = False,
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            raw_speech (`np.ndarray`, `torch.Tensor`, `list[float]`, `dict`, or a list of these):
                One clip (`[samples]`), a batch (`[batch, samples]` array or a list of clips), or `datasets`-style
                dicts `{"array": ..., "sampling_rate": ...}`. A clip inside a list may be multi-channel
                (`[channels, samples]` or `[samples, channels]`; mixed down to mono); so may a 2D array whose rows
                are too short for a batch (`[samples, channels]`, as `soundfile.read` gives it). A channels-first
                `[channels, samples]` array on its own reads as a batch: put it in a list to mix it down. 8/16/32-bit
                integer PCM (arrays or tensors) is scaled to [-1, 1).
            sampling_rate (`int`, *optional*):
                Rate of `raw_speech` (dict inputs carry their own). Other rates than `self.sampling_rate` are
                resampled. Pass it: without it the audio is assumed to be at `self.sampling_rate`.
            padding (`bool` or `str`, *optional*, defaults to `"longest"`):
                `"longest"`/`True`, `"max_length"` or `False`/`"do_not_pad"`.
            max_length (`int`, *optional*):
                Length to pad or truncate to (in samples).
            truncation (`bool`, *optional*, defaults to `False`):
                Truncate clips longer than `max_length`.
            pad_to_multiple_of (`int`, *optional*):
                Pad to a multiple of this many samples.
            return_attention_mask (`bool`, *optional*):
                Defaults to `self.return_attention_mask` (True).
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `"pt"` or `"np"`; lists of arrays otherwise.
            do_normalize (`bool`, *optional*):
                Overrides `self.do_normalize`.
            return_speaker_features (`bool`, *optional*, defaults to `False`):
                Also return `speaker_features` and `speaker_attention_mask` (log-mel frames of each clip for the
                speaker encoder).

        Returns:
            [`BatchFeature`] with `input_values [B, S]`, `attention_mask [B, S]` and, on request, `speaker_features
            [B, S // speaker_hop_length, speaker_num_mel_bins]` and `speaker_attention_mask`.
        """
        for key in kwargs:
            logger.warning_once(f"{self.__class__.__name__} ignores the unexpected argument `{key}`.")
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        return_attention_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask

        batch = self._split_batch(raw_speech)
        if sampling_rate is None and any(clip_rate is None for _, clip_rate in batch):
            logger.warning_once(
                f"Pass `sampling_rate` to {self.__class__.__name__}: the audio is assumed to be at "
                f"{self.sampling_rate} Hz."
            )
        clips = []
        for index, (clip, clip_rate) in enumerate(batch):
            rate = next(rate for rate in (clip_rate, sampling_rate, self.sampling_rate) if rate is not None)
            if not isinstance(rate, (int, np.integer)) or rate <= 0:
                raise ValueError(f"sampling_rate must be a positive integer, got {rate!r}.")
            clips.append(self._prepare_clip(clip, int(rate), index))

        padded = self.pad(
            BatchFeature({"input_values": clips}),
            padding=padding,
            max_length=max_length,
            truncation=truncation,
            pad_to_multiple_of=pad_to_multiple_of,
            return_attention_mask=True,
        )
        values = [np.asarray(value, dtype=np.float32) for value in padded["input_values"]]
        masks = [np.asarray(mask, dtype=np.int32) for mask in padded["attention_mask"]]
        lengths = [int(mask.sum()) for mask in masks]
        frames = audio_frame_lengths(np.asarray(lengths), self.samples_per_frame)
        if (frames == 0).any():
            raise ValueError(
                f"After truncation to max_length={max_length}, clips are shorter than one encoder frame "
                f"({self.samples_per_frame} samples)."
            )

        features = {}
        if return_speaker_features:
            features["speaker_features"], features["speaker_attention_mask"] = self._speaker_features(values, lengths)
        features["input_values"] = self._normalize(values, lengths) if do_normalize else values
        if return_attention_mask:
            features["attention_mask"] = masks
        ordered = {key: features[key] for key in ("input_values", "attention_mask") if key in features}
        ordered.update({key: value for key, value in features.items() if key not in ordered})
        return BatchFeature(ordered, tensor_type=return_tensors)


OmniAudioFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = ["OmniAudioFeatureExtractor"]

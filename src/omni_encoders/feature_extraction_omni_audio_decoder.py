# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Feature extractor of the omni-encoders audio decoder: training targets (log-mel, pitch, energy) from speech."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from transformers import BatchFeature, SequenceFeatureExtractor

from .modeling_omni_common import OmniMelSpectrogram


class OmniAudioDecoderFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns 16 kHz mono speech into the targets of [`OmniAudioDecoderModel`]: a log-mel spectrogram (`labels`), its frame
    mask (`labels_attention_mask`), frame pitch in Hz (`pitch_labels`, 0 where unvoiced), frame energy
    (`energy_labels`) and the waveforms cut to a whole number of frames (`waveforms`, the vocoder's target).

    A waveform of `S` samples gives `S // hop_length` frames. The log-mel is [`OmniMelSpectrogram`] with the model's
    settings (one batched `torch.stft` for the whole batch; zero padding, so a padded batch equals each item alone on
    its valid frames, and padded frames hold `log(mel_floor)`, the value of silence). Energy is the L2 norm of each
    STFT frame's magnitudes, from the same frames. Pitch comes from the WORLD vocoder's DIO (or Harvest) F0 tracker
    refined by StoneMask (`pyworld`), run at the mel frame rate with each estimate centred on its mel frame.

    Args:
        feature_size (`int`, *optional*, defaults to 80): mel bins (`n_mels` of the model).
        sampling_rate (`int`, *optional*, defaults to 16000): the only accepted input rate.
        hop_length (`int`, *optional*, defaults to 256): samples per frame.
        n_fft (`int`, *optional*, defaults to 1024): FFT (and window) size.
        f_min, f_max (`float`, *optional*, defaults to 0.0 and 8000.0): mel filter range in Hz.
        mel_floor (`float`, *optional*, defaults to 1e-5): floor before the log.
        pitch_algorithm (`str`, *optional*, defaults to `"dio"`): `"dio"` (fast) or `"harvest"` (more robust, ~10×
            slower).
        f0_floor, f0_ceil (`float`, *optional*, defaults to 60.0 and 800.0): pitch search range in Hz.
        pitch_speed (`int`, *optional*, defaults to 1): DIO's `speed`, the decimation of the signal before its F0
            search (1 to 12; DIO only). 4 runs about 10× faster and, after StoneMask, gives the same F0 on the
            spoken digits of `omni_encoders.data` (99 % of frames with the same voicing); training recipes that
            extract targets batch by batch use it.
        padding_value (`float`, *optional*, defaults to 0.0): value of padded waveform samples.
    """

    model_input_names = ["labels", "labels_attention_mask", "pitch_labels", "energy_labels", "waveforms"]

    def __init__(
        self,
        feature_size: int = 80,
        sampling_rate: int = 16000,
        hop_length: int = 256,
        n_fft: int = 1024,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        mel_floor: float = 1e-5,
        pitch_algorithm: str = "dio",
        f0_floor: float = 60.0,
        f0_ceil: float = 800.0,
        pitch_speed: int = 1,
        padding_value: float = 0.0,
        **kwargs,
    ):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        if pitch_algorithm not in ("dio", "harvest"):
            raise ValueError(f"pitch_algorithm must be 'dio' or 'harvest', got {pitch_algorithm!r}.")
        if not 1 <= pitch_speed <= 12:
            raise ValueError(f"pitch_speed must be an integer from 1 to 12 (DIO's decimation), got {pitch_speed}.")
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.f_min = f_min
        self.f_max = f_max
        self.mel_floor = mel_floor
        self.pitch_algorithm = pitch_algorithm
        self.f0_floor = f0_floor
        self.f0_ceil = f0_ceil
        self.pitch_speed = pitch_speed
        # Validates the STFT settings now rather than at the first call.
        self.mel_spectrogram = OmniMelSpectrogram(
            sampling_rate, n_fft, hop_length, feature_size, f_min=f_min, f_max=f_max, eps=mel_floor
        )

    @classmethod
    def from_model_config(cls, config, **kwargs) -> OmniAudioDecoderFeatureExtractor:
        """The feature extractor whose settings match an [`OmniAudioDecoderConfig`]."""
        settings = {
            "feature_size": config.n_mels, "sampling_rate": config.sampling_rate, "hop_length": config.hop_length,
            "n_fft": config.n_fft, "f_min": config.f_min, "f_max": config.f_max, "mel_floor": config.mel_floor,
        }
        return cls(**{**settings, **kwargs})

    def to_dict(self) -> dict:
        output = super().to_dict()
        output.pop("mel_spectrogram", None)  # derived from the other settings
        return output

    def _to_waveforms(self, raw_speech) -> list[np.ndarray]:
        """Validate the input and return one float32 1-D array per item."""
        if isinstance(raw_speech, torch.Tensor):
            raw_speech = raw_speech.detach().cpu().float().numpy()
        if isinstance(raw_speech, np.ndarray):
            if raw_speech.ndim == 1:
                raw_speech = [raw_speech]
            elif raw_speech.ndim == 2:
                raw_speech = list(raw_speech)
            else:
                raise ValueError(
                    f"Expected mono audio: one waveform [samples] or a batch [batch, samples], got an array of shape "
                    f"{raw_speech.shape}. Average the channels of multi-channel audio first."
                )
        elif not isinstance(raw_speech, (list, tuple)):
            raise ValueError(
                f"Expected audio as an array, a tensor or a list of them, got {type(raw_speech).__name__}."
            )
        elif len(raw_speech) > 0 and np.isscalar(raw_speech[0]):
            raw_speech = [raw_speech]  # a single waveform given as a list of numbers
        if len(raw_speech) == 0:
            raise ValueError("No audio given.")
        waveforms = []
        for item in raw_speech:
            item = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
            if item.ndim != 1:
                raise ValueError(
                    f"Each waveform must be mono with shape [samples], got shape {item.shape}. Average the channels "
                    "of multi-channel audio first."
                )
            if not np.issubdtype(item.dtype, np.number):
                raise ValueError(f"Audio must be numeric, got dtype {item.dtype}.")
            if item.shape[0] < self.hop_length:
                raise ValueError(
                    f"Audio of {item.shape[0]} samples is shorter than one frame ({self.hop_length} samples)."
                )
            item = item.astype(np.float32)
            if not np.isfinite(item).all():
                raise ValueError("Audio contains NaN or infinite samples.")
            waveforms.append(item)
        return waveforms

    def pitch(self, waveform: np.ndarray) -> np.ndarray:
        """F0 in Hz of every mel frame of one waveform (`len(waveform) // hop_length` values, 0 where unvoiced)."""
        with warnings.catch_warnings():  # pyworld 0.3.5 imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            import pyworld

        num_frames = len(waveform) // self.hop_length
        # Mel frame k is centred on sample k * hop + hop / 2 and WORLD frame k on sample k * hop: shift by half a hop.
        signal = np.ascontiguousarray(waveform[self.hop_length // 2 :], dtype=np.float64)
        frame_period = 1000.0 * self.hop_length / self.sampling_rate
        settings = {"f0_floor": self.f0_floor, "f0_ceil": self.f0_ceil, "frame_period": frame_period}
        if self.pitch_algorithm == "harvest":
            f0, times = pyworld.harvest(signal, self.sampling_rate, **settings)
        else:
            f0, times = pyworld.dio(signal, self.sampling_rate, speed=int(self.pitch_speed), **settings)
        f0 = pyworld.stonemask(signal, f0, times, self.sampling_rate)
        pitch = np.zeros(num_frames, dtype=np.float32)
        pitch[: min(num_frames, len(f0))] = f0[:num_frames]
        return pitch

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        return_pitch: bool = True,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            raw_speech (`np.ndarray`, `torch.Tensor`, `list[float]` or a list of arrays): one mono waveform `[samples]`
                or a batch (a list of waveforms of any lengths, or a `[batch, samples]` array).
            sampling_rate (`int`, *optional*): rate of `raw_speech`; must equal the extractor's (resample first,
                e.g. with `datasets.Audio(sampling_rate=16000)`). Strongly recommended, to catch silent mismatches.
            return_pitch (`bool`, *optional*, defaults to `True`): run the pitch tracker (skip it for reference audio).
            return_tensors (`str`, *optional*): `"pt"` or `"np"`.

        Returns:
            [`BatchFeature`] with `labels [B, frames, n_mels]`, `labels_attention_mask [B, frames]`,
            `energy_labels [B, frames]`, `pitch_labels [B, frames]` (when `return_pitch`) and
            `waveforms [B, frames * hop_length]`.
        """
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"Audio sampled at {sampling_rate} Hz; this feature extractor expects {self.sampling_rate} Hz. "
                "Resample it first (e.g. with soxr, or datasets' Audio(sampling_rate=...))."
            )
        waveforms = self._to_waveforms(raw_speech)
        num_frames = [len(waveform) // self.hop_length for waveform in waveforms]
        max_frames = max(num_frames)
        batch = np.full((len(waveforms), max_frames * self.hop_length), self.padding_value, dtype=np.float32)
        for index, (waveform, frames) in enumerate(zip(waveforms, num_frames)):
            batch[index, : frames * self.hop_length] = waveform[: frames * self.hop_length]
        frame_mask = np.arange(max_frames)[None, :] < np.asarray(num_frames)[:, None]

        with torch.no_grad():
            spectrogram = self.mel_spectrogram.spectrogram(torch.from_numpy(batch))
            _, filters = self.mel_spectrogram.tables(spectrogram.device)
            mel = torch.log(torch.clamp(spectrogram @ filters, min=self.mel_floor)).numpy()
            energy = torch.linalg.vector_norm(spectrogram, dim=-1).numpy()
        mel[~frame_mask] = np.log(self.mel_floor)
        energy[~frame_mask] = 0.0
        features = {
            "labels": mel,
            "labels_attention_mask": frame_mask.astype(np.int32),
            "energy_labels": energy,
            "waveforms": batch,
        }
        if return_pitch:
            pitch = np.zeros((len(waveforms), max_frames), dtype=np.float32)
            for index, (waveform, frames) in enumerate(zip(waveforms, num_frames)):
                pitch[index, :frames] = self.pitch(waveform[: frames * self.hop_length])
            features["pitch_labels"] = pitch
        return BatchFeature(features, tensor_type=return_tensors)


OmniAudioDecoderFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = ["OmniAudioDecoderFeatureExtractor"]

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Configuration of the omni-encoders audio decoder (text to speech)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class OmniAudioDecoderConfig(PreTrainedConfig):
    r"""
    Configuration of [`OmniAudioDecoderModel`]: a non-autoregressive text-to-speech model. Characters (or LLM text
    embeddings) and a speaker go through encoder FFT blocks (rotary multi-head latent attention + convolutional
    feed-forward), a variance adaptor (duration, pitch and energy predictors), a length regulator that repeats every
    token by its integer duration, decoder FFT blocks, a mel projection with a convolutional postnet, and a
    BigVGAN-style vocoder that turns the mel spectrogram into a 16 kHz waveform. Durations are learned without an
    external aligner: a soft text-to-mel alignment trained with a forward-sum loss is turned into integer durations
    by Monotonic Alignment Search.

    The defaults build the spec's full size (hidden 1024, 4 + 4 FFT blocks, 80 mel bins, 256 speakers, a 512-channel
    vocoder upsampling 8·8·2·2 = 256×).

    Args:
        vocab_size (`int`, *optional*, defaults to 47):
            Number of text tokens (the size of [`OmniAudioDecoderTokenizer`]'s default character vocabulary).
        pad_token_id (`int`, *optional*, defaults to 0):
            Id of the padding token.
        hidden_size (`int`, *optional*, defaults to 1024):
            Width of the FFT blocks and of `inputs_embeds`.
        encoder_layers (`int`, *optional*, defaults to 4):
            FFT blocks over the text tokens.
        decoder_layers (`int`, *optional*, defaults to 4):
            FFT blocks over the mel frames (after the length regulator).
        num_attention_heads (`int`, *optional*, defaults to 8):
            Query heads of the latent attention.
        num_key_value_heads (`int`, *optional*, defaults to 8):
            Key/value heads expanded from the latent (grouped-query attention); must divide `num_attention_heads`.
        head_dim (`int`, *optional*):
            Width of every query, key and value head; defaults to `hidden_size // num_attention_heads`.
        kv_lora_rank (`int`, *optional*, defaults to 256):
            Width of the compressed key/value latent of the latent attention.
        qk_rope_head_dim (`int`, *optional*, defaults to 64):
            Part of each query/key head that carries the rotary position (even, at most `head_dim`).
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the rotary embedding over token (encoder) and frame (decoder) positions.
        intermediate_size (`int`, *optional*, defaults to 4096):
            Channels of the convolutional feed-forward layer of the FFT blocks.
        ffn_kernel_size (`int`, *optional*, defaults to 9):
            Kernel of the first convolution of the feed-forward layer (the second is pointwise, as in FastSpeech 2).
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the feed-forward layers.
        hidden_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on the attention and feed-forward outputs of the FFT blocks.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention probabilities.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the LayerNorms.
        variance_predictor_hidden_size (`int`, *optional*, defaults to 256):
            Channels of the duration, pitch and energy predictors (two convolutions each, then a linear layer).
        variance_predictor_kernel_size (`int`, *optional*, defaults to 3):
            Kernel of the predictors' convolutions.
        variance_predictor_dropout (`float`, *optional*, defaults to 0.1):
            Dropout in the predictors.
        variance_embedding_kernel_size (`int`, *optional*, defaults to 9):
            Kernel of the convolution that embeds the (continuous) pitch and energy of every token.
        pitch_mean, pitch_std (`float`, *optional*, defaults to 5.0 and 0.3):
            Statistics of the log-F0 (natural log of Hz) of voiced frames, used to standardise pitch targets. Set them
            from your data; the defaults suit adult speech around 150 Hz.
        energy_mean, energy_std (`float`, *optional*, defaults to 2.0 and 1.5):
            Statistics of `log1p(frame energy)` (the L2 norm of an STFT frame's magnitudes) used to standardise
            energy targets.
        alignment_size (`int`, *optional*, defaults to 80):
            Width of the text and mel projections compared by the aligner.
        alignment_temperature (`float`, *optional*, defaults to 1.0):
            Scale of the negative squared distance that gives the aligner's logits (RAD-TTS / FastPitch). RAD-TTS's
            0.0005 suits its large unnormalised projections; the aligner here starts with squared distances of order
            10-100, where 0.0005 leaves its scores far below the prior's and the alignment learns slowly or
            collapses (docs/RESULTS.md, text to speech).
        alignment_prior_scale (`float`, *optional*, defaults to 1.0):
            Scale of the beta-binomial near-diagonal prior added to the aligner's scores in training (RAD-TTS); larger
            values make the prior sharper, 0 turns it off.
        alignment_blank_logprob (`float`, *optional*, defaults to -1.0):
            Log-probability of the blank symbol in the forward-sum (CTC) alignment loss.
        postnet_layers (`int`, *optional*, defaults to 5):
            Convolutions of the postnet (0 disables it).
        postnet_channels (`int`, *optional*, defaults to 256):
            Channels of the postnet.
        postnet_kernel_size (`int`, *optional*, defaults to 5):
            Kernel of the postnet convolutions.
        num_speakers (`int`, *optional*, defaults to 256):
            Rows of the speaker table addressed by `speaker_ids` (0: no table, zero-shot vectors only).
        speaker_embedding_size (`int`, *optional*, defaults to 256):
            Width of a speaker vector: a row of the table or a zero-shot `speaker_embeddings` vector from the audio
            encoder's speaker encoder.
        n_mels (`int`, *optional*, defaults to 80):
            Mel bins of the predicted spectrogram.
        sampling_rate (`int`, *optional*, defaults to 16000):
            Sample rate of the waveform.
        hop_length (`int`, *optional*, defaults to 256):
            Samples per mel frame; must equal the product of `vocoder_upsample_rates`.
        n_fft (`int`, *optional*, defaults to 1024):
            FFT size of the mel spectrogram (the window is as long).
        f_min, f_max (`float`, *optional*, defaults to 0.0 and 8000.0):
            Frequency range of the mel filters in Hz.
        mel_floor (`float`, *optional*, defaults to 1e-5):
            Floor before the log of the mel spectrogram; `log(mel_floor)` is the value of silence and of padding.
        vocoder_initial_channels (`int`, *optional*, defaults to 512):
            Channels of the vocoder before its first upsampling (halved by each upsampling).
        vocoder_upsample_rates (`list[int]`, *optional*, defaults to `[8, 8, 2, 2]`):
            Strides of the vocoder's transposed convolutions; their product is `hop_length`.
        vocoder_upsample_kernel_sizes (`list[int]`, *optional*, defaults to `[16, 16, 4, 4]`):
            Kernels of the transposed convolutions (one per upsampling).
        vocoder_resblock_kernel_sizes (`list[int]`, *optional*, defaults to `[3, 7, 11]`):
            Kernels of the multi-receptive-field residual blocks.
        vocoder_resblock_dilation_sizes (`list[list[int]]`, *optional*, defaults to `[[1, 3, 5]] * 3`):
            Dilations of each residual block.
        vocoder_segment_frames (`int`, *optional*, defaults to 32):
            Mel frames of the random segment the vocoder is trained on when target `waveforms` are given
            (32 frames = 8192 samples).
        vocoder_inference_chunk_frames (`int`, *optional*, defaults to 512):
            Without autograd on CPU, the vocoder decodes mels of more than this many frames in equal chunks of at
            most this many, with the exact context (the same waveform up to float rounding; peak memory bounded by
            the chunk, and faster on long inputs). 0 decodes in one pass.
        mel_loss_weight, duration_loss_weight, pitch_loss_weight, energy_loss_weight, alignment_loss_weight,
        vocoder_loss_weight (`float`, *optional*, default to 1.0):
            Weights of the parts of the training loss.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the initialisation of linear layers and embeddings.
        vocoder_initializer_range (`float`, *optional*, defaults to 0.01):
            Standard deviation of the vocoder's initial convolution weights (HiFi-GAN's 0.01, for 512 channels). The
            output's scale shrinks with the width: at 0.01 a 64-channel vocoder starts about 1e-6 loud, far below the
            speech it learns and the STFT loss's magnitude floor, so raise it for narrow vocoders (about 0.06 for 64
            channels, 0.1 for 32, give speech-like loudness).

    Example:

    ```python
    >>> from omni_encoders import OmniAudioDecoderConfig, OmniAudioDecoderModel
    >>> config = OmniAudioDecoderConfig()  # the spec's full size
    >>> model = OmniAudioDecoderModel(config)
    ```
    """

    model_type = "omni_audio_decoder"

    vocab_size: int = 47
    pad_token_id: int | None = 0
    hidden_size: int = 1024
    encoder_layers: int = 4
    decoder_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    head_dim: int | None = None
    kv_lora_rank: int = 256
    qk_rope_head_dim: int = 64
    rope_theta: float = 10000.0
    intermediate_size: int = 4096
    ffn_kernel_size: int = 9
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    variance_predictor_hidden_size: int = 256
    variance_predictor_kernel_size: int = 3
    variance_predictor_dropout: float = 0.1
    variance_embedding_kernel_size: int = 9
    pitch_mean: float = 5.0
    pitch_std: float = 0.3
    energy_mean: float = 2.0
    energy_std: float = 1.5
    alignment_size: int = 80
    alignment_temperature: float = 1.0
    alignment_prior_scale: float = 1.0
    alignment_blank_logprob: float = -1.0
    postnet_layers: int = 5
    postnet_channels: int = 256
    postnet_kernel_size: int = 5
    num_speakers: int = 256
    speaker_embedding_size: int = 256
    n_mels: int = 80
    sampling_rate: int = 16000
    hop_length: int = 256
    n_fft: int = 1024
    f_min: float = 0.0
    f_max: float | None = 8000.0
    mel_floor: float = 1e-5
    vocoder_initial_channels: int = 512
    vocoder_upsample_rates: list[int] | tuple[int, ...] = (8, 8, 2, 2)
    vocoder_upsample_kernel_sizes: list[int] | tuple[int, ...] = (16, 16, 4, 4)
    vocoder_resblock_kernel_sizes: list[int] | tuple[int, ...] = (3, 7, 11)
    vocoder_resblock_dilation_sizes: list | tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    vocoder_segment_frames: int = 32
    vocoder_inference_chunk_frames: int = 512
    mel_loss_weight: float = 1.0
    duration_loss_weight: float = 1.0
    pitch_loss_weight: float = 1.0
    energy_loss_weight: float = 1.0
    alignment_loss_weight: float = 1.0
    vocoder_loss_weight: float = 1.0
    initializer_range: float = 0.02
    vocoder_initializer_range: float = 0.01

    def __post_init__(self, **kwargs):
        # JSON has no tuples: store lists so that a saved and reloaded config compares equal.
        self.vocoder_upsample_rates = [int(r) for r in self.vocoder_upsample_rates]
        self.vocoder_upsample_kernel_sizes = [int(k) for k in self.vocoder_upsample_kernel_sizes]
        self.vocoder_resblock_kernel_sizes = [int(k) for k in self.vocoder_resblock_kernel_sizes]
        self.vocoder_resblock_dilation_sizes = [[int(d) for d in ds] for ds in self.vocoder_resblock_dilation_sizes]
        if self.head_dim is None and self.num_attention_heads > 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        super().__post_init__(**kwargs)
        self._validate()

    def _validate(self):
        positive = (
            "vocab_size", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "kv_lora_rank",
            "intermediate_size", "ffn_kernel_size", "variance_predictor_hidden_size", "variance_predictor_kernel_size",
            "variance_embedding_kernel_size", "alignment_size", "postnet_channels", "postnet_kernel_size",
            "speaker_embedding_size", "n_mels", "sampling_rate", "hop_length", "n_fft", "vocoder_initial_channels",
            "vocoder_segment_frames",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        non_negative = (
            "encoder_layers", "decoder_layers", "postnet_layers", "num_speakers", "vocoder_inference_chunk_frames"
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id ({self.pad_token_id}) must be in [0, vocab_size={self.vocab_size}).")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by num_key_value_heads "
                f"({self.num_key_value_heads})."
            )
        if not 0 < self.qk_rope_head_dim <= self.head_dim or self.qk_rope_head_dim % 2 != 0:
            raise ValueError(
                f"qk_rope_head_dim ({self.qk_rope_head_dim}) must be even and in (0, head_dim={self.head_dim}]."
            )
        for name in ("ffn_kernel_size", "variance_predictor_kernel_size", "variance_embedding_kernel_size",
                     "postnet_kernel_size"):
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be odd so that convolutions keep the sequence length, got "
                                 f"{getattr(self, name)}.")
        for name in ("hidden_dropout", "attention_dropout", "variance_predictor_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.pitch_std <= 0 or self.energy_std <= 0 or self.alignment_temperature <= 0 or self.mel_floor <= 0:
            raise ValueError("pitch_std, energy_std, alignment_temperature and mel_floor must be positive.")
        if self.vocoder_initializer_range <= 0:
            raise ValueError(f"vocoder_initializer_range must be positive, got {self.vocoder_initializer_range}.")
        if self.alignment_prior_scale < 0:
            raise ValueError(f"alignment_prior_scale must be >= 0, got {self.alignment_prior_scale}.")
        if self.n_fft < self.hop_length or (self.n_fft - self.hop_length) % 2 != 0:
            raise ValueError(
                f"n_fft ({self.n_fft}) must be >= hop_length ({self.hop_length}) with an even difference."
            )
        nyquist = self.sampling_rate / 2
        f_max = nyquist if self.f_max is None else self.f_max
        if not 0.0 <= self.f_min < f_max <= nyquist:
            raise ValueError(f"Need 0 <= f_min < f_max <= sampling_rate / 2, got f_min={self.f_min}, f_max={f_max}.")
        validate_vocoder_layout(
            self.n_mels,
            self.vocoder_initial_channels,
            self.vocoder_upsample_rates,
            self.vocoder_upsample_kernel_sizes,
            self.vocoder_resblock_kernel_sizes,
            self.vocoder_resblock_dilation_sizes,
        )
        if math.prod(self.vocoder_upsample_rates) != self.hop_length:
            raise ValueError(
                f"hop_length ({self.hop_length}) must equal the product of vocoder_upsample_rates "
                f"{self.vocoder_upsample_rates} (= {math.prod(self.vocoder_upsample_rates)}): the vocoder makes "
                "hop_length samples per mel frame."
            )
        weights = ("mel_loss_weight", "duration_loss_weight", "pitch_loss_weight", "energy_loss_weight",
                   "alignment_loss_weight", "vocoder_loss_weight")
        for name in weights:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")



def validate_vocoder_layout(
    n_mels: int,
    initial_channels: int,
    upsample_rates: Sequence[int],
    upsample_kernel_sizes: Sequence[int],
    kernel_sizes: Sequence[int],
    dilation_sizes: Sequence[Sequence[int]],
) -> None:
    """Raise a `ValueError` unless these settings build an [`OmniVocoder`]: checked by the vocoder, and by the config
    at construction."""
    if n_mels < 1 or initial_channels < 1:
        raise ValueError(f"n_mels and initial_channels must be >= 1, got {n_mels} and {initial_channels}.")
    if len(upsample_rates) == 0 or len(upsample_rates) != len(upsample_kernel_sizes):
        raise ValueError(
            f"upsample_rates ({list(upsample_rates)}) and upsample_kernel_sizes ({list(upsample_kernel_sizes)}) "
            "must be non-empty and of the same length (one transposed convolution per rate)."
        )
    for rate, kernel in zip(upsample_rates, upsample_kernel_sizes):
        if rate < 1 or kernel < rate or (kernel - rate) % 2:
            raise ValueError(
                f"Upsample kernel {kernel} does not fit rate {rate}: need rate >= 1, kernel >= rate and "
                "kernel - rate even, so that the stage multiplies the length exactly by its rate."
            )
    if initial_channels % 2 ** len(upsample_rates):
        raise ValueError(
            f"initial_channels ({initial_channels}) must be divisible by 2**{len(upsample_rates)}: every "
            "upsampling stage halves the channels."
        )
    if len(kernel_sizes) == 0 or len(kernel_sizes) != len(dilation_sizes):
        raise ValueError(
            f"resblock_kernel_sizes ({list(kernel_sizes)}) and resblock_dilation_sizes "
            f"({[list(d) for d in dilation_sizes]}) must be non-empty and of the same length."
        )
    if any(kernel < 1 or kernel % 2 == 0 for kernel in kernel_sizes):
        raise ValueError(f"resblock_kernel_sizes must be odd and positive, got {list(kernel_sizes)}.")
    if any(len(dilations) == 0 or min(dilations) < 1 for dilations in dilation_sizes):
        raise ValueError(
            "Every resblock needs dilations >= 1, got resblock_dilation_sizes="
            f"{[list(d) for d in dilation_sizes]}."
        )


OmniAudioDecoderConfig.register_for_auto_class()

__all__ = ["OmniAudioDecoderConfig", "validate_vocoder_layout"]

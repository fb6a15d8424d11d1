# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Configuration of the omni-encoders audio encoder."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


def audio_frame_lengths(num_samples, samples_per_frame: int, output_downsample_rate: int = 1):
    """Number of encoder output frames for waveforms of `num_samples` samples.

    The single definition of the audio encoder's output length, used by the model (frame masks, CTC input lengths),
    the feature extractor (too-short checks) and anything that aligns audio frames with samples. Each strided
    convolution of the waveform tokenizer is padded so that it maps `L` frames to exactly `L // stride`, hence the
    whole tokenizer maps `S` samples to `S // prod(strides)` frames (`prod(strides)` = 64 by default, 250 frames/s at
    16 kHz). A clip shorter than `samples_per_frame` has no frame. With an output rate reduction
    (`OmniAudioConfig.output_downsample_rate`), every `output_downsample_rate` frames are pooled into one, a partial
    last window included: `ceil((S // samples_per_frame) / output_downsample_rate)` output frames.

    Args:
        num_samples: an `int`, a numpy array or a `torch.LongTensor` of sample counts.
        samples_per_frame: the tokenizer's total stride, [`OmniAudioConfig.tokenizer_samples_per_frame`].
        output_downsample_rate: frames pooled into one output frame after the Conformer (1: none).

    Returns:
        The frame counts, of the same type as `num_samples`.
    """
    frames = num_samples // samples_per_frame
    if output_downsample_rate == 1:
        return frames
    return -(-frames // output_downsample_rate)


@strict
class OmniAudioConfig(PreTrainedConfig):
    r"""
    Configuration of [`OmniAudioModel`] and its heads: a raw-waveform tokenizer (strided 1D convolutions, 64×
    downsampling, optional residual vector quantisation), Conformer blocks with rotary multi-head latent attention
    (RMLA) and a speaker encoder (log-mel of a reference -> convolutions -> BiLSTM -> attentive pooling).

    The defaults build the spec's full size: tokenizer channels 32, 64, 128, 256, 512, 1024 with kernels 7, 5, 5, 3,
    3, 3 and stride 2 each (250 frames/s at 16 kHz), 8 codebooks × 1024 entries, hidden size 1024, 6 Conformer blocks
    with 8 query heads, 2 key/value heads and a 256-wide K/V latent, depthwise kernel 31, and a 256-dimensional
    speaker embedding from 80 mel bins.

    Args:
        tokenizer_channels (`list[int]`, *optional*):
            Output channels of the tokenizer's convolutions; defaults to `[32, 64, 128, 256, 512, hidden_size]`.
        tokenizer_kernel_sizes (`list[int]`, *optional*, defaults to `[7, 5, 5, 3, 3, 3]`):
            Kernel size of each convolution (at least its stride).
        tokenizer_strides (`list[int]`, *optional*, defaults to `[2, 2, 2, 2, 2, 2]`):
            Stride of each convolution. Their product is the number of samples per output frame
            (`inputs_to_logits_ratio`).
        tokenizer_norm_groups (`int`, *optional*, defaults to 8):
            Groups of the tokenizer's GroupNorms (statistics over the valid frames of each clip only); must divide
            every tokenizer channel count.
        use_quantizer (`bool`, *optional*, defaults to `False`):
            Quantise the tokenizer features with residual vector quantisation (straight-through estimator). The model
            then returns `audio_codes [B, T', num_codebooks]` and a `commitment_loss`, and the Conformer sees the
            quantised features.
        num_codebooks (`int`, *optional*, defaults to 8):
            Residual quantisation stages.
        codebook_size (`int`, *optional*, defaults to 1024):
            Entries per codebook.
        commitment_cost (`float`, *optional*, defaults to 0.25):
            Weight β of the commitment term `β‖z − sg(q)‖²` in the quantiser loss (the codebook term
            `‖sg(z) − q‖²` has weight 1).
        hidden_size (`int`, *optional*, defaults to 1024):
            Width of the Conformer.
        num_hidden_layers (`int`, *optional*, defaults to 6):
            Number of Conformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 8):
            Query heads of the latent attention.
        num_key_value_heads (`int`, *optional*, defaults to 2):
            Key/value heads the latent is expanded to (grouped-query attention); must divide `num_attention_heads`.
        head_dim (`int`, *optional*):
            Width of each query/key/value head; defaults to `hidden_size // num_attention_heads`.
        kv_lora_rank (`int`, *optional*, defaults to 256):
            Width of the compressed K/V latent (all a cache of the attention holds per token, with the rotary key).
        qk_rope_head_dim (`int`, *optional*, defaults to 64):
            Part of each query/key head that carries the rotary position (even, at most `head_dim`); the rotary key is
            shared by all heads.
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the rotary embedding over frame positions.
        intermediate_size (`int`, *optional*, defaults to 4096):
            Width of the Conformer's two (half-step) feed-forward modules.
        hidden_act (`str`, *optional*, defaults to `"silu"`):
            Activation of the feed-forward modules (Swish, as in the Conformer paper).
        conv_kernel_size (`int`, *optional*, defaults to 31):
            Kernel of the depthwise convolution of the Conformer's convolution module (odd).
        hidden_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on the output of every Conformer module before its residual addition.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention probabilities.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the LayerNorms and GroupNorms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of linear layers, convolutions and codebooks.
        use_speaker_encoder (`bool`, *optional*, defaults to `True`):
            Build the speaker encoder.
        speaker_num_mel_bins (`int`, *optional*, defaults to 80):
            Mel bins of the speaker encoder's input (`speaker_features [B, frames, speaker_num_mel_bins]`).
        speaker_hidden_size (`int`, *optional*, defaults to 256):
            Channels of the speaker encoder's convolutions and hidden size of each direction of its BiLSTM.
        speaker_num_conv_layers (`int`, *optional*, defaults to 3):
            Convolutions of the speaker encoder's frame encoder.
        speaker_conv_kernel_size (`int`, *optional*, defaults to 5):
            Kernel of those convolutions (odd).
        speaker_num_lstm_layers (`int`, *optional*, defaults to 3):
            Layers of the bidirectional LSTM.
        speaker_embedding_size (`int`, *optional*, defaults to 256):
            Size of the L2-normalised speaker embedding.
        vocab_size (`int`, *optional*, defaults to 32):
            Output vocabulary of [`OmniAudioForCTC`] (the character vocabulary of its `Wav2Vec2CTCTokenizer`,
            including the blank).
        pad_token_id (`int`, *optional*, defaults to 0):
            The CTC blank, which is the tokenizer's pad token.
        ctc_loss_reduction (`str`, *optional*, defaults to `"mean"`):
            Reduction of the CTC loss, `"mean"` or `"sum"`.
        ctc_zero_infinity (`bool`, *optional*, defaults to `False`):
            Zero infinite CTC losses (targets longer than the audio allows) and their gradients.
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout before the output layer of [`OmniAudioForCTC`] and [`OmniAudioForAudioClassification`].
        attention_chunk_size (`int`, *optional*):
            Chunked attention for long audio: the frames are cut into chunks of this many frames (at 250 frames/s, 250
            is one second), and the queries of a chunk attend only to the keys of their own chunk, of the
            `attention_left_chunks` chunks before it and of the first `attention_right_context` frames after it.
            Computed chunk by chunk as a batch (never a full-length score matrix), so time and memory grow linearly
            with the audio. `None` (the default, as the spec describes) is full attention over the whole clip.
        attention_left_chunks (`int`, *optional*, defaults to 2):
            Previous chunks a chunk's queries see when `attention_chunk_size` is set (0: only their own chunk).
        attention_right_context (`int`, *optional*, defaults to 0):
            Look-ahead frames beyond its chunk that a chunk's queries see, at most `attention_chunk_size`. Streaming
            ([`OmniAudioModel.encode_stream`]) needs 0.
        conv_module_causal (`bool`, *optional*, defaults to `False`):
            Make the Conformer's depthwise convolution causal (a frame sees itself and the `conv_kernel_size - 1`
            frames before it) instead of centred. Streaming needs it: a centred kernel needs
            `(conv_kernel_size - 1) // 2` future frames per layer.
        tokenizer_norm_statistics (`str`, *optional*, defaults to `"clip"`):
            What the tokenizer's GroupNorms average over: `"clip"` (the channels of a group over all valid frames of
            the clip), `"causal"` (the channels of a group over each frame and all frames before it: running
            statistics) or `"frame"` (the channels of a group within each frame). Streaming needs `"causal"` or
            `"frame"`: clip statistics depend on audio not yet heard. `"causal"` keeps how loud a frame is relative to
            the audio before it, which per-frame statistics remove (a model trained with them learns far less: see
            RESULTS.md, "Long audio").
        output_downsample_rate (`int`, *optional*, defaults to 1):
            Output rate reduction for language models: every `output_downsample_rate` frames after the Conformer are
            mean-pooled into one output frame (over valid frames only; a partial last window is pooled over the frames
            it has), e.g. 10 turns 250 frames/s into 25. `frame_mask`, [`audio_frame_lengths`], the CTC loss and
            `inputs_to_logits_ratio` follow it. 1 (the default) keeps every frame.

    Example:

    ```python
    >>> from omni_encoders import OmniAudioConfig, OmniAudioModel
    >>> config = OmniAudioConfig()  # the spec's full size
    >>> config.inputs_to_logits_ratio  # samples per output frame: 250 frames/s at 16 kHz
    64
    >>> model = OmniAudioModel(config)
    ```
    """

    model_type = "omni_audio"

    tokenizer_channels: list[int] | tuple[int, ...] | None = None
    tokenizer_kernel_sizes: list[int] | tuple[int, ...] = (7, 5, 5, 3, 3, 3)
    tokenizer_strides: list[int] | tuple[int, ...] = (2, 2, 2, 2, 2, 2)
    tokenizer_norm_groups: int = 8
    use_quantizer: bool = False
    num_codebooks: int = 8
    codebook_size: int = 1024
    commitment_cost: float = 0.25
    hidden_size: int = 1024
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    head_dim: int | None = None
    kv_lora_rank: int = 256
    qk_rope_head_dim: int = 64
    rope_theta: float = 10000.0
    intermediate_size: int = 4096
    hidden_act: str = "silu"
    conv_kernel_size: int = 31
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    use_speaker_encoder: bool = True
    speaker_num_mel_bins: int = 80
    speaker_hidden_size: int = 256
    speaker_num_conv_layers: int = 3
    speaker_conv_kernel_size: int = 5
    speaker_num_lstm_layers: int = 3
    speaker_embedding_size: int = 256
    vocab_size: int = 32
    pad_token_id: int | None = 0
    ctc_loss_reduction: str = "mean"
    ctc_zero_infinity: bool = False
    classifier_dropout: float = 0.0
    attention_chunk_size: int | None = None
    attention_left_chunks: int = 2
    attention_right_context: int = 0
    conv_module_causal: bool = False
    tokenizer_norm_statistics: str = "clip"
    output_downsample_rate: int = 1

    def __post_init__(self, **kwargs):
        if self.tokenizer_channels is None:
            self.tokenizer_channels = [32, 64, 128, 256, 512, self.hidden_size]
        self.tokenizer_channels = list(self.tokenizer_channels)
        self.tokenizer_kernel_sizes = list(self.tokenizer_kernel_sizes)
        self.tokenizer_strides = list(self.tokenizer_strides)
        if self.head_dim is None and self.num_attention_heads > 0 and self.hidden_size % self.num_attention_heads == 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        super().__post_init__(**kwargs)
        self._validate()

    def _validate(self):
        if self.num_attention_heads > 0 and self.head_dim is None:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}), or head_dim must be given."
            )
        positive = (
            "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "kv_lora_rank",
            "qk_rope_head_dim", "intermediate_size", "conv_kernel_size", "tokenizer_norm_groups", "vocab_size",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.num_hidden_layers < 0:
            raise ValueError(f"num_hidden_layers must be >= 0, got {self.num_hidden_layers}.")

        layers = len(self.tokenizer_channels)
        if layers == 0 or len(self.tokenizer_kernel_sizes) != layers or len(self.tokenizer_strides) != layers:
            raise ValueError(
                "tokenizer_channels, tokenizer_kernel_sizes and tokenizer_strides must be non-empty and of equal "
                f"length, got {len(self.tokenizer_channels)}, {len(self.tokenizer_kernel_sizes)} and "
                f"{len(self.tokenizer_strides)}."
            )
        for index, (channels, kernel, stride) in enumerate(
            zip(self.tokenizer_channels, self.tokenizer_kernel_sizes, self.tokenizer_strides)
        ):
            if channels <= 0 or stride <= 0:
                raise ValueError(f"Tokenizer layer {index}: channels and stride must be positive.")
            if kernel < stride:
                raise ValueError(
                    f"Tokenizer layer {index}: kernel size {kernel} is smaller than its stride {stride}; every input "
                    "sample must be seen by some output frame."
                )
            if channels % self.tokenizer_norm_groups != 0:
                raise ValueError(
                    f"Tokenizer layer {index}: {channels} channels are not divisible by tokenizer_norm_groups "
                    f"({self.tokenizer_norm_groups})."
                )

        if self.use_quantizer and (self.num_codebooks <= 0 or self.codebook_size <= 1):
            raise ValueError(
                f"The quantizer needs num_codebooks >= 1 and codebook_size >= 2, got {self.num_codebooks} and "
                f"{self.codebook_size}."
            )
        if self.commitment_cost < 0:
            raise ValueError(f"commitment_cost must be >= 0, got {self.commitment_cost}.")

        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by num_key_value_heads "
                f"({self.num_key_value_heads})."
            )
        if self.qk_rope_head_dim % 2 != 0 or self.qk_rope_head_dim > self.head_dim:
            raise ValueError(
                f"qk_rope_head_dim ({self.qk_rope_head_dim}) must be even and at most head_dim ({self.head_dim})."
            )
        if self.conv_kernel_size % 2 == 0:
            raise ValueError(
                f"conv_kernel_size must be odd (centred depthwise convolution), got {self.conv_kernel_size}."
            )

        if self.use_speaker_encoder:
            for name in (
                "speaker_num_mel_bins", "speaker_hidden_size", "speaker_num_conv_layers", "speaker_num_lstm_layers",
                "speaker_embedding_size",
            ):
                if getattr(self, name) <= 0:
                    raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
            if self.speaker_conv_kernel_size <= 0 or self.speaker_conv_kernel_size % 2 == 0:
                raise ValueError(
                    f"speaker_conv_kernel_size must be odd and positive, got {self.speaker_conv_kernel_size}."
                )

        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id ({self.pad_token_id}) is the CTC blank and must be in [0, vocab_size="
                f"{self.vocab_size})."
            )
        if self.ctc_loss_reduction not in ("mean", "sum"):
            raise ValueError(f"ctc_loss_reduction must be 'mean' or 'sum', got {self.ctc_loss_reduction!r}.")
        for name in ("hidden_dropout", "attention_dropout", "classifier_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")

        if self.attention_chunk_size is not None:
            if self.attention_chunk_size <= 0:
                raise ValueError(
                    f"attention_chunk_size must be a positive number of frames (or None for full attention), got "
                    f"{self.attention_chunk_size}."
                )
            if self.attention_left_chunks < 0:
                raise ValueError(
                    f"attention_left_chunks must be >= 0, got {self.attention_left_chunks}; for attention over the "
                    "whole clip use attention_chunk_size=None."
                )
            if not 0 <= self.attention_right_context <= self.attention_chunk_size:
                raise ValueError(
                    f"attention_right_context must be in [0, attention_chunk_size={self.attention_chunk_size}] "
                    f"frames, got {self.attention_right_context}."
                )
        if self.tokenizer_norm_statistics not in ("clip", "causal", "frame"):
            raise ValueError(
                "tokenizer_norm_statistics must be 'clip', 'causal' or 'frame', got "
                f"{self.tokenizer_norm_statistics!r}."
            )
        if self.output_downsample_rate < 1:
            raise ValueError(f"output_downsample_rate must be >= 1, got {self.output_downsample_rate}.")

    @property
    def tokenizer_samples_per_frame(self) -> int:
        """Samples per frame of the waveform tokenizer (what the Conformer runs at): the product of the tokenizer
        strides (64 by default, 250 frames/s at 16 kHz)."""
        return math.prod(self.tokenizer_strides)

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Samples per output frame: `tokenizer_samples_per_frame * output_downsample_rate` (64 by default).
        transformers' ASR pipeline reads it to align chunks, strides and timestamps."""
        return self.tokenizer_samples_per_frame * self.output_downsample_rate


OmniAudioConfig.register_for_auto_class()

__all__ = ["OmniAudioConfig", "audio_frame_lengths"]

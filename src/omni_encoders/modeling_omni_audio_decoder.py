# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""The omni-encoders audio decoder: text (or LLM embeddings) + speaker -> mel spectrogram -> 16 kHz waveform.

FastSpeech 2 / FastPitch-style non-autoregressive acoustic model with rotary latent attention FFT blocks, durations
learned without an external aligner (a soft text-to-mel alignment trained with a forward-sum loss and binarised by
Monotonic Alignment Search), and a BigVGAN-style vocoder (`modeling_omni_vocoder.py`).
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_omni_audio_decoder import OmniAudioDecoderConfig
from .modeling_omni_common import (
    OmniLatentAttention,
    OmniPreTrainedModel,
    OmniRotaryEmbedding,
    load_c_kernel,
    returns_attention_weights,
    right_padding_lengths,
)
from .modeling_omni_vocoder import OmniVocoder, init_vocoder_weights, multi_resolution_stft_loss

# Aligner score of padded tokens: exp() of it is 0 in float32, yet sums of it stay finite.
PADDED_TOKEN_LOGIT = -1e4


# --------------------------------------------------------------------------------------------------------------------
# Alignment: Monotonic Alignment Search and the length regulator
# --------------------------------------------------------------------------------------------------------------------


# The Viterbi DP of Monotonic Alignment Search in C, compiled on first use (`load_c_kernel`) and called through ctypes.
# Frame-major scratch keeps the inner loop over tokens contiguous. Where no compiler is available the vectorised
# PyTorch version below is used.
_MAS_C_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <math.h>

static void mas_item(const float *scores, int64_t stride_n, int64_t stride_t, int64_t n_tokens, int64_t n_frames,
                     double *q, int64_t *durations) {
    /* q[y * n_tokens + x]: best score of a path on token x at frame y (only the reachable band is written). */
    for (int64_t y = 0; y < n_frames; ++y) {
        int64_t lo = n_tokens + y - n_frames > 0 ? n_tokens + y - n_frames : 0;
        int64_t hi = y + 1 < n_tokens ? y + 1 : n_tokens;
        const double *prev = q + (y - 1) * n_tokens;
        double *row = q + y * n_tokens;
        for (int64_t x = lo; x < hi; ++x) {
            double stay = x < y ? prev[x] : -INFINITY;
            double move = x > 0 ? prev[x - 1] : (y == 0 ? 0.0 : -INFINITY);
            row[x] = (stay > move ? stay : move) + (double)scores[x * stride_n + y * stride_t];
        }
    }
    int64_t x = n_tokens - 1;
    for (int64_t y = n_frames - 1; y >= 0; --y) {
        durations[x] += 1;
        if (x > 0 && (x == y || q[(y - 1) * n_tokens + x] < q[(y - 1) * n_tokens + x - 1])) x -= 1;
    }
}

/* Returns 0 on success, 1 if out of memory, 2 if some item does not have 1 <= tokens <= frames within the sizes. */
int omni_monotonic_alignment_search(const float *scores, int64_t stride_b, int64_t stride_n, int64_t stride_t,
                                    const int64_t *token_lengths, const int64_t *frame_lengths, int64_t batch,
                                    int64_t max_tokens, int64_t max_frames, int64_t *durations) {
    int64_t size = 1;
    for (int64_t b = 0; b < batch; ++b) {
        if (token_lengths[b] < 1 || token_lengths[b] > max_tokens || frame_lengths[b] < token_lengths[b] ||
            frame_lengths[b] > max_frames) return 2;
        if (token_lengths[b] * frame_lengths[b] > size) size = token_lengths[b] * frame_lengths[b];
    }
    double *q = (double *)malloc((size_t)size * sizeof(double));
    if (q == NULL) return 1;
    for (int64_t b = 0; b < batch; ++b) {
        int64_t *out = durations + b * max_tokens;
        for (int64_t x = 0; x < max_tokens; ++x) out[x] = 0;
        mas_item(scores + b * stride_b, stride_n, stride_t, token_lengths[b], frame_lengths[b], q, out);
    }
    free(q);
    return 0;
}
"""


@functools.lru_cache(maxsize=1)
def _mas_kernel():
    """The compiled C kernel (a ctypes function), or None where it cannot be built (see [`load_c_kernel`])."""
    library = load_c_kernel("monotonic_alignment", _MAS_C_SOURCE)
    if library is None:
        return None
    function = library.omni_monotonic_alignment_search
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_void_p] + [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 3 + [
        ctypes.c_void_p
    ]
    return function


def _monotonic_alignment_search_kernel(
    kernel, log_likelihood: torch.Tensor, token_lengths: torch.Tensor, frame_lengths: torch.Tensor
) -> torch.Tensor:
    scores = log_likelihood if log_likelihood.dtype == torch.float32 else log_likelihood.float()
    batch_size, num_tokens, num_frames = scores.shape
    token_lengths, frame_lengths = token_lengths.long().contiguous(), frame_lengths.long().contiguous()
    durations = torch.empty(batch_size, num_tokens, dtype=torch.long)
    status = kernel(
        scores.data_ptr(), *scores.stride(), token_lengths.data_ptr(), frame_lengths.data_ptr(), batch_size,
        num_tokens, num_frames, durations.data_ptr(),
    )
    if status == 2:
        _raise_invalid_lengths(token_lengths, frame_lengths, num_tokens, num_frames)
    if status != 0:
        raise MemoryError("Monotonic Alignment Search could not allocate its scratch buffer.")
    return durations


def _raise_invalid_lengths(token_lengths, frame_lengths, num_tokens: int, num_frames: int):
    raise ValueError(
        f"Monotonic alignment needs 1 <= tokens <= frames in every item (within the tensor's {num_tokens} tokens x "
        f"{num_frames} frames); got token lengths {token_lengths.tolist()} and frame lengths "
        f"{frame_lengths.tolist()}."
    )


def _monotonic_alignment_search_torch(
    log_likelihood: torch.Tensor, token_lengths: torch.Tensor, frame_lengths: torch.Tensor
) -> torch.Tensor:
    """Vectorised PyTorch version (any device): one step per token over `[batch, frames]`.

    With `C_i` the prefix sums of row `i` along the frames, the best score of a path on token `i` at frame `j` is
    `Q_i[j] = C_i[j] + max_{k <= j} (Q_{i-1}[k-1] - C_i[k-1])`: a `cumsum` and a `cummax` per token, whose index is the
    frame where the path entered token `i`. The backtrack follows those entry frames from the last token to the first.
    Sums are accumulated in float64 so that the prefix-sum differences stay exact enough.
    """
    batch_size, num_tokens, num_frames = log_likelihood.shape
    device = log_likelihood.device
    scores = log_likelihood.float().clamp(min=-1e9)  # -inf (masked tokens) would turn the differences into NaN
    entry_frames = torch.zeros(num_tokens, batch_size, num_frames, dtype=torch.long, device=device)
    running_max = torch.empty(batch_size, num_frames, dtype=torch.float64, device=device)
    shifted = torch.full((batch_size, num_frames + 1), -math.inf, dtype=torch.float64, device=device)
    torch.cumsum(scores[:, 0], dim=-1, dtype=torch.float64, out=shifted[:, 1:])  # token 0 takes frames 0..j
    for token in range(1, num_tokens):
        row = scores[:, token]
        prefix = torch.cumsum(row, dim=-1, dtype=torch.float64)
        candidates = shifted[:, :-1] - (prefix - row)  # Q_{i-1}[k-1] - C_i[k-1], -inf for k = 0
        torch.cummax(candidates, dim=-1, out=(running_max, entry_frames[token]))
        torch.add(prefix, running_max, out=shifted[:, 1:])

    durations = torch.zeros(batch_size, num_tokens, dtype=torch.long, device=device)
    last_frame = frame_lengths.long() - 1
    token_lengths = token_lengths.long()
    for token in range(num_tokens - 1, 0, -1):
        active = token < token_lengths
        entry = entry_frames[token].gather(1, last_frame.unsqueeze(1)).squeeze(1)
        durations[:, token] = torch.where(active, last_frame - entry + 1, 0)
        last_frame = torch.where(active, entry - 1, last_frame)
    durations[:, 0] = last_frame + 1
    return durations


@torch.no_grad()
def monotonic_alignment_search(
    log_likelihood: torch.Tensor,
    token_lengths: torch.Tensor | None = None,
    frame_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Most likely monotonic alignment of `N` tokens to `T` frames (Viterbi), as integer durations.

    A path assigns every frame to exactly one token, starts at token 0 on frame 0, ends at the item's last token on
    its last frame, and from one frame to the next either stays on its token or moves to the next one, so every token
    gets at least one frame. Its score is the sum of `log_likelihood[token, frame]` over the frames; the path with the
    highest score is returned as the number of frames of each token.

    On CPU a small C kernel (compiled on first use) runs the DP over the reachable band of each item; elsewhere, or
    without a C compiler, a vectorised PyTorch version loops over tokens only. Both give optimal paths.

    Args:
        log_likelihood: `[batch, tokens, frames]` scores (any float dtype and strides; `[batch, frames, tokens]`
            memory, i.e. a transposed view, is the fastest for the kernel); values outside an item's lengths are
            ignored and must not be NaN inside them.
        token_lengths: `[batch]` valid tokens per item (defaults to all).
        frame_lengths: `[batch]` valid frames per item (defaults to all); must be >= `token_lengths`.

    Returns:
        `LongTensor [batch, tokens]` of durations: each valid token >= 1 frame, padded tokens 0, and every item's
        durations sum to its frame length.
    """
    if log_likelihood.dim() != 3:
        raise ValueError(f"log_likelihood must be [batch, tokens, frames], got shape {tuple(log_likelihood.shape)}.")
    batch_size, num_tokens, num_frames = log_likelihood.shape
    device = log_likelihood.device
    if token_lengths is None:
        token_lengths = torch.full((batch_size,), num_tokens, dtype=torch.long, device=device)
    if frame_lengths is None:
        frame_lengths = torch.full((batch_size,), num_frames, dtype=torch.long, device=device)
    kernel = _mas_kernel() if device.type == "cpu" else None
    if kernel is not None:  # the kernel validates the lengths itself
        return _monotonic_alignment_search_kernel(kernel, log_likelihood, token_lengths, frame_lengths)
    invalid = (
        (token_lengths < 1) | (token_lengths > num_tokens) | (frame_lengths > num_frames)
        | (frame_lengths < token_lengths)
    )
    if bool(invalid.any()):
        _raise_invalid_lengths(token_lengths, frame_lengths, num_tokens, num_frames)
    return _monotonic_alignment_search_torch(log_likelihood, token_lengths, frame_lengths)


def length_regulate(
    hidden_states: torch.Tensor, durations: torch.Tensor, num_frames: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Repeat every token's state by its integer duration (never interpolates).

    Batched with no loop: frame `t` of an item takes the state of the first token whose cumulative duration exceeds
    `t` (a `searchsorted` over the cumulative durations, then one `gather`).

    Args:
        hidden_states: `[batch, tokens, dim]`.
        durations: `[batch, tokens]` non-negative integers (padded tokens 0).
        num_frames: output length; defaults to the longest item (`durations.sum(-1).max()`). Shorter items are padded
            with zeros, longer ones cut.

    Returns:
        `(frames [batch, num_frames, dim], frame_mask [batch, num_frames] bool, token_index [batch, num_frames])`:
        `token_index` is the token each frame repeats (clamped to the last token on padded frames).
    """
    if durations.shape != hidden_states.shape[:2]:
        raise ValueError(
            f"durations {tuple(durations.shape)} must have the [batch, tokens] shape of hidden_states "
            f"{tuple(hidden_states.shape[:2])}."
        )
    durations = durations.long().clamp(min=0)
    ends = durations.cumsum(dim=1)
    lengths = ends[:, -1]
    if num_frames is None:
        num_frames = int(lengths.max()) if lengths.numel() else 0
    frames = torch.arange(num_frames, device=durations.device).expand(durations.shape[0], -1).contiguous()
    token_index = torch.searchsorted(ends, frames, right=True).clamp(max=durations.shape[1] - 1)
    frame_mask = frames < lengths[:, None]
    expanded = hidden_states.gather(1, token_index.unsqueeze(-1).expand(-1, -1, hidden_states.shape[-1]))
    return expanded * frame_mask.unsqueeze(-1).to(expanded.dtype), frame_mask, token_index


def average_over_tokens(
    values: torch.Tensor, token_index: torch.Tensor, weights: torch.Tensor, num_tokens: int
) -> torch.Tensor:
    """Weighted mean of frame-level `values [B, T]` over the frames of each token (`token_index [B, T]` from
    [`length_regulate`], `weights [B, T]` e.g. the voiced and valid frames). Tokens with no weight get 0."""
    weights = weights.to(values.dtype)
    sums = values.new_zeros(values.shape[0], num_tokens).scatter_add_(1, token_index, values * weights)
    counts = values.new_zeros(values.shape[0], num_tokens).scatter_add_(1, token_index, weights)
    return torch.where(counts > 0, sums / counts.clamp(min=1e-8), torch.zeros_like(sums))


def beta_binomial_log_prior(
    token_lengths: torch.Tensor, frame_lengths: torch.Tensor, num_tokens: int, num_frames: int, scaling: float
) -> torch.Tensor:
    """Static near-diagonal alignment prior of RAD-TTS: `log P(token | frame)` under a beta-binomial distribution over
    an item's `n + 1` tokens with `alpha = scaling * (frame + 1)` and `beta = scaling * (frames - frame)`, so its mean
    moves linearly along the diagonal.

    `log P(k) = log C(n, k) + [lgamma(k + alpha) - lgamma(alpha)] + [lgamma(n - k + beta) - lgamma(beta)]
    - [lgamma(n + alpha + beta) - lgamma(alpha + beta)]`; the two `[B, frames, tokens]` terms are rising factorials,
    computed as cumulative sums of logs (about 10x cheaper than `lgamma` on every cell).

    Returns:
        `[B, num_frames, num_tokens]` float32, 0 outside each item's lengths.
    """
    device = token_lengths.device
    n = (token_lengths - 1).float()[:, None]  # [B, 1]
    length = frame_lengths.float()[:, None]  # [B, 1]
    k = torch.arange(num_tokens, device=device, dtype=torch.float32)  # [N]
    j = torch.arange(num_frames, device=device, dtype=torch.float32)  # [T]
    alpha = scaling * (j + 1)  # [T]
    beta = (scaling * (length - j)).clamp(min=scaling)  # [B, T]; frames after the end only need a positive value
    # lgamma(m + x) - lgamma(x) = sum_{i < m} log(x + i), for m = 0 .. N - 1
    rising_alpha = F.pad(torch.log(alpha[:, None] + k[:-1]).cumsum(-1), (1, 0))  # [T, N], indexed by m = k
    rising_beta = F.pad(torch.log(beta[..., None] + k[:-1]).cumsum(-1), (1, 0))  # [B, T, N], indexed by m = n - k
    remaining = (n - k).clamp(min=0).long()  # [B, N]
    rising_beta = rising_beta.gather(-1, remaining[:, None, :].expand(-1, num_frames, -1))
    log_choose = torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma((n - k).clamp(min=0) + 1)  # [B, N]
    total = scaling * (length + 1)  # alpha + beta, the same for every frame: [B, 1]
    log_norm = torch.lgamma(n + total) - torch.lgamma(total)  # [B, 1]
    log_pmf = log_choose[:, None, :] + rising_alpha + rising_beta - log_norm[..., None]
    valid = (k <= n)[:, None, :] & (j[None, :] < length)[..., None]
    return torch.where(valid, log_pmf, torch.zeros_like(log_pmf))


def forward_sum_loss(
    log_probs: torch.Tensor, token_lengths: torch.Tensor, frame_lengths: torch.Tensor, blank_logprob: float = -1.0
) -> torch.Tensor:
    """Forward-sum alignment loss: minus the log-probability, summed over every monotonic path, that the frames spell
    the tokens in order (CTC with an extra blank symbol), divided by the number of tokens and averaged over the batch.

    Args:
        log_probs: `[B, T, N]` log-probabilities of each token for each frame (very negative, but finite, on padded
            tokens: CTC's gradient is NaN at -inf).
        token_lengths, frame_lengths: `[B]` valid tokens and frames.
    """
    log_probs = F.pad(log_probs.float(), (1, 0), value=blank_logprob).log_softmax(dim=-1)  # blank = class 0
    batch_size, _, num_tokens = log_probs.shape[0], log_probs.shape[1], log_probs.shape[2] - 1
    targets = torch.arange(1, num_tokens + 1, device=log_probs.device).expand(batch_size, -1)
    return F.ctc_loss(
        log_probs.transpose(0, 1), targets, frame_lengths, token_lengths, blank=0, reduction="mean", zero_infinity=True
    )


# --------------------------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------------------------


def _masked(hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded positions of `[B, L, C]` so that a convolution cannot carry them into valid ones."""
    return hidden_states if mask is None else hidden_states * mask.unsqueeze(-1).to(hidden_states.dtype)


def _sequence_conv1d(conv: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """A "same"-padded, stride-1 `nn.Conv1d` over channels-last `[B, L, C_in]` -> `[B, L, C_out]`.

    Without autograd it runs as one matrix product of the kernel-wide windows with the weight viewed as
    `[C_out, C_in * kernel]` (no copy of the weight): oneDNN's convolution re-lays-out its weight on every call, which
    for the feed-forward's 1024 x 4096 x 9 kernel costs more than the product itself on short inputs (bfloat16, one
    thread: 6x slower at 10 tokens, on par from 500). With autograd it stays a convolution, whose backward keeps the
    input instead of the kernel-times-larger windows. Modules other than a plain `nn.Conv1d` (e.g. a PEFT LoRA
    wrapper) are simply called.
    """
    kernel = conv.kernel_size[0] if isinstance(conv, nn.Conv1d) else 0
    plain = kernel > 0 and conv.groups == 1 and conv.stride[0] == conv.dilation[0] == 1
    plain = plain and conv.padding[0] == kernel // 2  # "same" padding
    if plain and (kernel == 1 or not torch.is_grad_enabled()):
        batch_size, length, _ = hidden_states.shape
        if kernel > 1:
            padded = F.pad(hidden_states.transpose(1, 2), (kernel // 2, kernel // 2))  # [B, C_in, L + kernel - 1]
            windows = padded.unfold(2, kernel, 1).transpose(1, 2)  # [B, L, C_in, kernel]
            hidden_states = windows.reshape(batch_size, length, -1)
        return F.linear(hidden_states, conv.weight.view(conv.out_channels, -1), conv.bias)
    return conv(hidden_states.transpose(1, 2)).transpose(1, 2)


class OmniAudioDecoderConvFeedForward(nn.Module):
    """FastSpeech 2 feed-forward layer: `conv(k) -> act -> dropout -> conv(1)` over the sequence, padding zeroed."""

    def __init__(self, config: OmniAudioDecoderConfig):
        super().__init__()
        kernel = config.ffn_kernel_size
        self.conv1 = nn.Conv1d(config.hidden_size, config.intermediate_size, kernel, padding=kernel // 2)
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.conv2 = nn.Conv1d(config.intermediate_size, config.hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`hidden_states [B, L, D]`, `padding_mask [B, L]` (True = valid) -> `[B, L, D]`."""
        hidden_states = _sequence_conv1d(self.conv1, _masked(hidden_states, padding_mask))
        return _sequence_conv1d(self.conv2, self.dropout(self.act(hidden_states)))


class OmniAudioDecoderFFTBlock(GradientCheckpointingLayer):
    """Feed-forward Transformer block: pre-norm rotary latent attention (RMLA), then a convolutional feed-forward."""

    def __init__(self, config: OmniAudioDecoderConfig, layer_idx: int = 0):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = OmniLatentAttention(
            config,
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads,
            config.kv_lora_rank,
            config.head_dim,
            config.qk_rope_head_dim,
            config.head_dim,
            attention_dropout=config.attention_dropout,
            layer_idx=layer_idx,
            eps=config.layer_norm_eps,
        )
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = OmniAudioDecoderConvFeedForward(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: `[B, L, D]`.
            position_embeddings: `(cos, sin)` `[L, qk_rope_head_dim]`.
            attention_mask: padding mask over the keys in the attention implementation's format.
            padding_mask: `[B, L]` bool, True on valid positions (for the convolutions).

        Returns:
            `(hidden_states [B, L, D], attention weights or None)`.
        """
        attn_output, attn_weights = self.self_attn(
            self.attn_norm(hidden_states), position_embeddings, attention_mask=attention_mask
        )
        hidden_states = hidden_states + self.dropout(attn_output)
        hidden_states = hidden_states + self.dropout(self.ffn(self.ffn_norm(hidden_states), padding_mask))
        return hidden_states, attn_weights


class OmniAudioDecoderVariancePredictor(nn.Module):
    """Duration, pitch or energy predictor: two `conv -> ReLU -> LayerNorm -> dropout` layers and a linear layer, one
    value per position."""

    def __init__(self, config: OmniAudioDecoderConfig):
        super().__init__()
        channels, kernel = config.variance_predictor_hidden_size, config.variance_predictor_kernel_size
        self.conv1 = nn.Conv1d(config.hidden_size, channels, kernel, padding=kernel // 2)
        self.norm1 = nn.LayerNorm(channels, eps=config.layer_norm_eps)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm2 = nn.LayerNorm(channels, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.variance_predictor_dropout)
        self.linear = nn.Linear(channels, 1)

    def forward(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`hidden_states [B, L, D]` -> `[B, L]` (0 on padding)."""
        hidden_states = self.conv1(_masked(hidden_states, padding_mask).transpose(1, 2)).transpose(1, 2)
        hidden_states = self.dropout(self.norm1(torch.relu(hidden_states)))
        hidden_states = self.conv2(_masked(hidden_states, padding_mask).transpose(1, 2)).transpose(1, 2)
        hidden_states = self.dropout(self.norm2(torch.relu(hidden_states)))
        return _masked(self.linear(hidden_states), padding_mask).squeeze(-1)


class OmniAudioDecoderVarianceEmbedding(nn.Module):
    """Embeds a continuous per-token value (standardised pitch or energy) with a 1D convolution (FastPitch)."""

    def __init__(self, config: OmniAudioDecoderConfig):
        super().__init__()
        kernel = config.variance_embedding_kernel_size
        self.conv = nn.Conv1d(1, config.hidden_size, kernel, padding=kernel // 2)

    def forward(self, values: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`values [B, L]` -> `[B, L, D]`."""
        values = _masked(values.unsqueeze(-1), padding_mask)
        return _masked(self.conv(values.transpose(1, 2)).transpose(1, 2), padding_mask)


class OmniAudioDecoderAligner(nn.Module):
    """Soft text-to-mel alignment (RAD-TTS / FastPitch): text embeddings and mel frames are projected by small conv
    stacks; the score of token `i` for frame `j` is `-temperature * ||mel_j - text_i||^2`, plus a beta-binomial prior,
    log-softmaxed over the tokens."""

    def __init__(self, config: OmniAudioDecoderConfig):
        super().__init__()
        size = config.alignment_size
        self.temperature = config.alignment_temperature
        self.text_proj = nn.ModuleList([
            nn.Conv1d(config.hidden_size, 2 * size, 3, padding=1),
            nn.Conv1d(2 * size, size, 1),
        ])
        self.mel_proj = nn.ModuleList([
            nn.Conv1d(config.n_mels, 2 * size, 3, padding=1),
            nn.Conv1d(2 * size, size, 1),
            nn.Conv1d(size, size, 1),
        ])

    @staticmethod
    def _project(convs: nn.ModuleList, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden_states = _masked(hidden_states, mask).transpose(1, 2)
        for index, conv in enumerate(convs):
            hidden_states = conv(hidden_states)
            if index < len(convs) - 1:
                hidden_states = torch.relu(hidden_states)
        return hidden_states.transpose(1, 2)

    def forward(
        self,
        text_embeddings: torch.Tensor,
        token_mask: torch.Tensor,
        mel: torch.Tensor,
        frame_mask: torch.Tensor,
        log_prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            text_embeddings: `[B, N, D]` (the model's input embeddings); token_mask: `[B, N]` bool.
            mel: `[B, T, n_mels]` target log-mel; frame_mask: `[B, T]` bool.
            log_prior: optional `[B, T, N]` log prior added to the scores.

        Returns:
            `[B, T, N]` float32 log-probabilities of each token for each frame (about `-1e4` on padded tokens).
        """
        keys = self._project(self.text_proj, text_embeddings, token_mask).float()
        queries = self._project(self.mel_proj, mel.to(text_embeddings.dtype), frame_mask).float()
        distances = (  # ||q - k||^2 without materialising [B, T, N, size]
            queries.pow(2).sum(-1, keepdim=True)
            + keys.pow(2).sum(-1).unsqueeze(1)
            - 2 * queries @ keys.transpose(1, 2)
        )
        scores = -self.temperature * distances.clamp(min=0)
        if log_prior is not None:
            scores = scores + log_prior
        # A large finite value, not -inf: CTC's backward turns -inf log-probabilities into NaN gradients.
        scores = scores.masked_fill(~token_mask.unsqueeze(1), PADDED_TOKEN_LOGIT)
        return scores.log_softmax(dim=-1)


class OmniAudioDecoderPostnet(nn.Module):
    """Residual convolutional postnet: `conv -> LayerNorm -> tanh` layers (the last without norm and tanh) refine the
    mel spectrogram. LayerNorm instead of Tacotron's BatchNorm keeps a padded batch equal to each item alone."""

    def __init__(self, config: OmniAudioDecoderConfig):
        super().__init__()
        kernel, channels = config.postnet_kernel_size, config.postnet_channels
        sizes = [config.n_mels] + [channels] * (config.postnet_layers - 1) + [config.n_mels]
        self.convs = nn.ModuleList(
            nn.Conv1d(sizes[i], sizes[i + 1], kernel, padding=kernel // 2) for i in range(config.postnet_layers)
        )
        self.norms = nn.ModuleList(
            nn.LayerNorm(channels, eps=config.layer_norm_eps) for _ in range(max(config.postnet_layers - 1, 0))
        )
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, mel: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`mel [B, T, n_mels]` -> refined `[B, T, n_mels]`."""
        hidden_states = mel
        for index, conv in enumerate(self.convs):
            hidden_states = conv(_masked(hidden_states, padding_mask).transpose(1, 2)).transpose(1, 2)
            if index < len(self.norms):
                hidden_states = self.dropout(torch.tanh(self.norms[index](hidden_states)))
        return mel + hidden_states


# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class OmniAudioDecoderOutput(ModelOutput):
    """
    Output of [`OmniAudioDecoderModel`]: the synthesised speech at inference, the losses in training.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Weighted sum of the loss parts below.
        waveform (`torch.FloatTensor` of shape `(batch_size, samples)`, *optional*, inference):
            Speech in [-1, 1] at `config.sampling_rate`; zero after each item's `waveform_lengths`.
        waveform_lengths (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Valid samples of each item (`mel_lengths * hop_length`).
        mel (`torch.FloatTensor` of shape `(batch_size, frames, n_mels)`):
            Predicted log-mel spectrogram after the postnet (`log(mel_floor)` on padded frames).
        mel_lengths (`torch.LongTensor` of shape `(batch_size,)`):
            Valid frames of each item.
        durations (`torch.LongTensor` of shape `(batch_size, tokens)`):
            Frames of each token: predicted at inference, found by Monotonic Alignment Search in training.
        log_durations (`torch.FloatTensor` of shape `(batch_size, tokens)`):
            Output of the duration predictor, `log(1 + frames)`.
        pitch, energy (`torch.FloatTensor` of shape `(batch_size, tokens)`):
            Predicted standardised pitch and energy of each token.
        mel_loss, duration_loss, pitch_loss, energy_loss, alignment_loss, vocoder_loss (`torch.FloatTensor`):
            The unweighted loss parts: mel L1 (before + after the postnet), log-duration MSE against the MAS
            durations, pitch and energy MSE, forward-sum alignment loss, vocoder multi-resolution STFT loss (only
            when target `waveforms` are given).
        alignment_log_probs (`torch.FloatTensor` of shape `(batch_size, frames, tokens)`, *optional*):
            The aligner's soft alignment, in training.
        waveform_segment, target_waveform_segment (`torch.FloatTensor` of shape `(batch_size, segment_samples)`):
            The vocoder's output on a random segment of the target mel and the matching target samples (zero after
            the item's end), in training with `waveforms`; the discriminators of the adversarial phase read them.
        encoder_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, tokens, hidden_size)`):
            Text states after the encoder FFT blocks and the speaker.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            Inputs of every encoder block and the encoder output, then the same for the decoder.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Attention weights of the encoder blocks, then of the decoder blocks (eager attention only).
    """

    loss: torch.FloatTensor | None = None
    waveform: torch.FloatTensor | None = None
    waveform_lengths: torch.LongTensor | None = None
    mel: torch.FloatTensor | None = None
    mel_lengths: torch.LongTensor | None = None
    durations: torch.LongTensor | None = None
    log_durations: torch.FloatTensor | None = None
    pitch: torch.FloatTensor | None = None
    energy: torch.FloatTensor | None = None
    mel_loss: torch.FloatTensor | None = None
    duration_loss: torch.FloatTensor | None = None
    pitch_loss: torch.FloatTensor | None = None
    energy_loss: torch.FloatTensor | None = None
    alignment_loss: torch.FloatTensor | None = None
    vocoder_loss: torch.FloatTensor | None = None
    alignment_log_probs: torch.FloatTensor | None = None
    waveform_segment: torch.FloatTensor | None = None
    target_waveform_segment: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------


class OmniAudioDecoderPreTrainedModel(OmniPreTrainedModel):
    config: OmniAudioDecoderConfig
    config_class = OmniAudioDecoderConfig
    main_input_name = "input_ids"
    input_modalities = ("text",)
    output_modalities = ("audio",)
    _no_split_modules = ["OmniAudioDecoderFFTBlock"]

    def _init_weights(self, module: nn.Module):
        if module in getattr(self, "_vocoder_layers", ()):
            init_vocoder_weights(module, std=self.config.vocoder_initializer_range)  # HiFi-GAN's, weight-norm aware
        elif isinstance(module, nn.Conv1d):  # PyTorch's default, whatever the width
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight.shape[1] * module.weight.shape[2])
                init.uniform_(module.bias, -bound, bound)
        else:
            super()._init_weights(module)


class OmniAudioDecoderModel(OmniAudioDecoderPreTrainedModel):
    """
    Text to speech: `input_ids [B, L]` (or LLM `inputs_embeds [B, L, D]`) and a speaker (`speaker_ids [B]` or zero-shot
    `speaker_embeddings [B, S]`) -> encoder FFT blocks -> variance adaptor (duration, pitch, energy) -> length
    regulator -> decoder FFT blocks -> mel + postnet `[B, frames, n_mels]` -> vocoder -> `waveform [B, frames * 256]`.

    Without `labels` the forward pass synthesises speech (predicted durations, pitch and energy), so
    `pipeline("text-to-audio")` works; with `labels` (target log-mels) it returns the training loss: durations come
    from Monotonic Alignment Search on the aligner's soft alignment, pitch and energy targets are averaged over each
    token's frames, and the decoder is teacher-forced with them. [`~OmniAudioDecoderModel.generate`] adds a `speed`
    control and [`~OmniAudioDecoderModel.generate_stream`] yields the waveform in chunks.
    """

    _also_auto_classes = ("AutoModel",)  # the model type has no base model: AutoModel loads it, as VITS

    def __init__(self, config: OmniAudioDecoderConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.speaker_table = (
            nn.Embedding(config.num_speakers, config.speaker_embedding_size) if config.num_speakers > 0 else None
        )
        self.speaker_proj = nn.Linear(config.speaker_embedding_size, config.hidden_size)
        self.rotary_emb = OmniRotaryEmbedding(config.qk_rope_head_dim, num_axes=1, theta=config.rope_theta)
        self.encoder_layers = nn.ModuleList(
            [OmniAudioDecoderFFTBlock(config, layer_idx=i) for i in range(config.encoder_layers)]
        )
        self.encoder_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.aligner = OmniAudioDecoderAligner(config)
        self.duration_predictor = OmniAudioDecoderVariancePredictor(config)
        self.pitch_predictor = OmniAudioDecoderVariancePredictor(config)
        self.energy_predictor = OmniAudioDecoderVariancePredictor(config)
        self.pitch_embed = OmniAudioDecoderVarianceEmbedding(config)
        self.energy_embed = OmniAudioDecoderVarianceEmbedding(config)
        self.decoder_layers = nn.ModuleList(
            [
                OmniAudioDecoderFFTBlock(config, layer_idx=config.encoder_layers + i)
                for i in range(config.decoder_layers)
            ]
        )
        self.decoder_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mel_proj = nn.Linear(config.hidden_size, config.n_mels)
        self.postnet = OmniAudioDecoderPostnet(config) if config.postnet_layers > 0 else None
        self.vocoder = OmniVocoder(
            config.n_mels,
            config.vocoder_initial_channels,
            config.vocoder_upsample_rates,
            config.vocoder_upsample_kernel_sizes,
            config.vocoder_resblock_kernel_sizes,
            config.vocoder_resblock_dilation_sizes,
            inference_chunk_frames=config.vocoder_inference_chunk_frames,
        )
        self._vocoder_layers = frozenset(self.vocoder.modules())
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module):
        self.embed_tokens = value

    @property
    def silence_log_mel(self) -> float:
        """The log-mel value of silence, used for padded frames."""
        return math.log(self.config.mel_floor)

    # ---------------------------------------------------------------------------------------------------- inputs

    def _text_inputs(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate the text inputs; return `(embeddings [B, L, D], token_mask [B, L] bool)`."""
        hidden_size = self.config.hidden_size
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids [batch, tokens] or inputs_embeds [batch, tokens, hidden].")
        if input_ids is not None:
            if input_ids.dim() != 2 or input_ids.shape[1] == 0:
                raise ValueError(
                    f"input_ids must have shape [batch, tokens] with tokens > 0, got {tuple(input_ids.shape)}."
                )
            if bool(((input_ids < 0) | (input_ids >= self.config.vocab_size)).any()):
                raise ValueError(
                    f"input_ids contain ids outside [0, vocab_size={self.config.vocab_size}): "
                    f"min {int(input_ids.min())}, max {int(input_ids.max())}."
                )
            inputs_embeds = self.embed_tokens(input_ids)
        elif inputs_embeds.dim() != 3 or inputs_embeds.shape[1] == 0 or inputs_embeds.shape[2] != hidden_size:
            raise ValueError(
                f"inputs_embeds must have shape [batch, tokens > 0, hidden_size={hidden_size}], got "
                f"{tuple(inputs_embeds.shape)}."
            )
        else:
            inputs_embeds = inputs_embeds.to(self.embed_tokens.weight.dtype)  # e.g. bf16 states of an LLM
        batch_size, num_tokens = inputs_embeds.shape[:2]
        if attention_mask is None:
            token_mask = torch.ones(batch_size, num_tokens, dtype=torch.bool, device=inputs_embeds.device)
        else:
            if tuple(attention_mask.shape) != (batch_size, num_tokens):
                raise ValueError(
                    f"attention_mask must have shape {(batch_size, num_tokens)} (one value per token), got "
                    f"{tuple(attention_mask.shape)}."
                )
            token_mask = attention_mask.bool()
            if not bool(token_mask.any(dim=1).all()):
                raise ValueError("Every item needs at least one token with attention_mask = 1.")
        return inputs_embeds, token_mask

    def speaker_vectors(
        self,
        batch_size: int,
        speaker_ids: torch.Tensor | None = None,
        speaker_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The speaker conditioning `[B, hidden_size]` from table ids or zero-shot vectors (None without either)."""
        if speaker_ids is not None and speaker_embeddings is not None:
            raise ValueError("Pass speaker_ids (the speaker table) or speaker_embeddings (zero-shot), not both.")
        if speaker_ids is not None:
            if self.speaker_table is None:
                raise ValueError("This model has no speaker table (num_speakers=0); pass speaker_embeddings instead.")
            speaker_ids = torch.as_tensor(speaker_ids, device=self.speaker_proj.weight.device)
            if speaker_ids.is_floating_point() or speaker_ids.is_complex() or speaker_ids.dtype == torch.bool:
                raise ValueError(f"speaker_ids must be integer ids, got a tensor of {speaker_ids.dtype}.")
            speaker_ids = speaker_ids.long().reshape(-1)
            if speaker_ids.numel() == 1 and batch_size > 1:
                speaker_ids = speaker_ids.expand(batch_size)
            if speaker_ids.shape != (batch_size,):
                raise ValueError(f"speaker_ids must have shape [batch={batch_size}], got {tuple(speaker_ids.shape)}.")
            if bool(((speaker_ids < 0) | (speaker_ids >= self.config.num_speakers)).any()):
                raise ValueError(
                    f"speaker_ids must be in [0, num_speakers={self.config.num_speakers}), got {speaker_ids.tolist()}."
                )
            speaker_embeddings = self.speaker_table(speaker_ids)
        elif speaker_embeddings is not None:
            if speaker_embeddings.dim() == 1:
                speaker_embeddings = speaker_embeddings.unsqueeze(0)
            if speaker_embeddings.shape[0] == 1 and batch_size > 1:
                speaker_embeddings = speaker_embeddings.expand(batch_size, -1)
            if tuple(speaker_embeddings.shape) != (batch_size, self.config.speaker_embedding_size):
                raise ValueError(
                    f"speaker_embeddings must have shape [batch={batch_size}, "
                    f"speaker_embedding_size={self.config.speaker_embedding_size}], got "
                    f"{tuple(speaker_embeddings.shape)}."
                )
        else:
            return None
        return self.speaker_proj(speaker_embeddings.to(self.speaker_proj.weight.dtype))

    # ---------------------------------------------------------------------------------------------------- stacks

    def _run_blocks(
        self,
        layers: nn.ModuleList,
        hidden_states: torch.Tensor,
        padding_mask: torch.Tensor,
        output_attentions: bool,
        output_hidden_states: bool,
    ) -> tuple[torch.Tensor, tuple, tuple]:
        """Run FFT blocks over `[B, L, D]` with rotary positions `0..L-1`; padding stays zero."""
        positions = torch.arange(hidden_states.shape[1], device=hidden_states.device)
        position_embeddings = self.rotary_emb(positions)
        attention_mask = create_bidirectional_mask(self.config, hidden_states, padding_mask.long())
        all_hidden_states, all_attentions = (), ()
        collect_attentions = returns_attention_weights(self.config, output_attentions)
        for layer in layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = layer(
                hidden_states, position_embeddings, attention_mask=attention_mask, padding_mask=padding_mask
            )
            if collect_attentions:
                all_attentions += (attn_weights,)
        return all_hidden_states, all_attentions, hidden_states

    def encode_text(
        self,
        inputs_embeds: torch.Tensor,
        token_mask: torch.Tensor,
        speaker: torch.Tensor | None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple, tuple]:
        """Text embeddings (+ speaker) through the encoder FFT blocks -> `([B, L, D], hidden states, attentions)`."""
        hidden_states = inputs_embeds if speaker is None else inputs_embeds + speaker.unsqueeze(1)
        hidden_states = _masked(hidden_states, token_mask)
        all_hidden, all_attn, hidden_states = self._run_blocks(
            self.encoder_layers, hidden_states, token_mask, output_attentions, output_hidden_states
        )
        hidden_states = _masked(self.encoder_norm(hidden_states), token_mask)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        return hidden_states, all_hidden, all_attn

    def decode_frames(
        self,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        speaker: torch.Tensor | None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple]:
        """Length-regulated states `[B, T, D]` -> `(mel before postnet, mel after postnet, hidden states, attentions)`,
        both mels `[B, T, n_mels]` with `log(mel_floor)` on padded frames."""
        hidden_states = frames if speaker is None else frames + speaker.unsqueeze(1)
        hidden_states = _masked(hidden_states, frame_mask)
        all_hidden, all_attn, hidden_states = self._run_blocks(
            self.decoder_layers, hidden_states, frame_mask, output_attentions, output_hidden_states
        )
        hidden_states = self.decoder_norm(hidden_states)
        if output_hidden_states:
            all_hidden += (_masked(hidden_states, frame_mask),)
        mel_before = self.mel_proj(hidden_states)
        mel_after = self.postnet(mel_before, frame_mask) if self.postnet is not None else mel_before
        silence = torch.full_like(mel_before, self.silence_log_mel)
        valid = frame_mask.unsqueeze(-1)
        return torch.where(valid, mel_before, silence), torch.where(valid, mel_after, silence), all_hidden, all_attn

    def vocode(self, mel: torch.Tensor, mel_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mel `[B, T, n_mels]` -> waveform `[B, T * hop_length]`: each item as decoded alone, zero after its
        `mel_lengths` (see [`OmniVocoder.forward`])."""
        return self.vocoder(mel, mel_lengths)

    # ---------------------------------------------------------------------------------------------------- targets

    def _standardised_pitch(self, pitch_hz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame pitch in Hz (0 = unvoiced) -> (standardised log-F0, voiced mask)."""
        voiced = pitch_hz > 0
        log_f0 = torch.log(pitch_hz.float().clamp(min=1e-3))
        return torch.where(voiced, (log_f0 - self.config.pitch_mean) / self.config.pitch_std, 0.0), voiced

    def _standardised_energy(self, energy: torch.Tensor) -> torch.Tensor:
        return (torch.log1p(energy.float().clamp(min=0)) - self.config.energy_mean) / self.config.energy_std

    def _check_targets(self, labels, labels_attention_mask, pitch_labels, energy_labels, waveforms, batch_size):
        if labels.dim() != 3 or labels.shape[0] != batch_size or labels.shape[-1] != self.config.n_mels:
            raise ValueError(
                f"labels must be target log-mels of shape [batch={batch_size}, frames, n_mels={self.config.n_mels}], "
                f"got {tuple(labels.shape)}."
            )
        frames_shape = tuple(labels.shape[:2])
        for name, value in (("labels_attention_mask", labels_attention_mask), ("pitch_labels", pitch_labels),
                            ("energy_labels", energy_labels)):
            if value is not None and tuple(value.shape) != frames_shape:
                raise ValueError(f"{name} must have shape [batch, frames] = {frames_shape}, got {tuple(value.shape)}.")
        if waveforms is not None:
            needed = labels.shape[1] * self.config.hop_length
            if waveforms.dim() != 2 or waveforms.shape[0] != batch_size or waveforms.shape[1] < needed:
                raise ValueError(
                    f"waveforms must have shape [batch={batch_size}, samples >= frames * hop_length = {needed}], got "
                    f"{tuple(waveforms.shape)}."
                )

    def _vocoder_segment(
        self, labels: torch.Tensor, mel_lengths: torch.Tensor, waveforms: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Vocode a random `vocoder_segment_frames` window of each item's target mel (batched gathers, no loop);
        return `(predicted samples, target samples)`, both zero after the item's end."""
        segment, hop = min(self.config.vocoder_segment_frames, labels.shape[1]), self.config.hop_length
        room = (mel_lengths - segment).clamp(min=0) + 1
        starts = (torch.rand(labels.shape[0], device=labels.device) * room).long()
        frame_index = starts[:, None] + torch.arange(segment, device=labels.device)
        valid_frames = frame_index < mel_lengths[:, None]
        frame_index = frame_index.clamp(max=labels.shape[1] - 1)
        mel = labels.gather(1, frame_index.unsqueeze(-1).expand(-1, -1, labels.shape[-1]))
        sample_index = starts[:, None] * hop + torch.arange(segment * hop, device=labels.device)
        valid_samples = (sample_index < (mel_lengths * hop)[:, None]).to(waveforms.dtype)
        target = waveforms.gather(1, sample_index.clamp(max=waveforms.shape[1] - 1)) * valid_samples
        # A window that runs past the item's end is decoded as the item's tail alone would be (zero past the end).
        predicted = self.vocoder(mel, valid_frames.sum(-1))
        return predicted, target

    # ---------------------------------------------------------------------------------------------------- forward

    def _predicted_durations(
        self, log_durations: torch.Tensor, token_mask: torch.Tensor, speed: float
    ) -> torch.Tensor:
        """Integer frames per token from the duration predictor, divided by `speed`; valid tokens keep >= 1 frame."""
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}.")
        frames = torch.expm1(log_durations.float().clamp(max=8.0)) / speed  # the clamp only guards against overflow
        return torch.round(frames).long().clamp(min=1) * token_mask

    def _expand(
        self,
        text_states: torch.Tensor,
        token_mask: torch.Tensor,
        durations: torch.Tensor,
        pitch: torch.Tensor,
        energy: torch.Tensor,
        num_frames: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the pitch and energy embeddings to the text states and repeat each token by its duration."""
        adapted = (
            text_states
            + self.pitch_embed(pitch.to(text_states.dtype), token_mask)
            + self.energy_embed(energy.to(text_states.dtype), token_mask)
        )
        frames, frame_mask, _ = length_regulate(adapted, durations, num_frames)
        return frames, frame_mask

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        speaker_ids: torch.LongTensor | None = None,
        speaker_embeddings: torch.FloatTensor | None = None,
        labels: torch.FloatTensor | None = None,
        labels_attention_mask: torch.Tensor | None = None,
        pitch_labels: torch.FloatTensor | None = None,
        energy_labels: torch.FloatTensor | None = None,
        waveforms: torch.FloatTensor | None = None,
        speed: float = 1.0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> OmniAudioDecoderOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, tokens)`):
                Character ids from [`OmniAudioDecoderTokenizer`].
            attention_mask (`torch.Tensor` of shape `(batch_size, tokens)`, *optional*):
                1 on real tokens, 0 on padding.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, tokens, hidden_size)`, *optional*):
                Text embeddings (e.g. projected LLM states) instead of `input_ids`.
            speaker_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Rows of the speaker table.
            speaker_embeddings (`torch.FloatTensor` of shape `(batch_size, speaker_embedding_size)`, *optional*):
                Zero-shot speaker vectors of reference audio: `OmniAudioModel.get_speaker_embeddings(...)` on the
                `speaker_features` of `OmniAudioFeatureExtractor(..., return_speaker_features=True)`. Without either
                speaker input the model speaks unconditioned.
            labels (`torch.FloatTensor` of shape `(batch_size, frames, n_mels)`, *optional*):
                Target log-mel spectrograms (from [`OmniAudioDecoderFeatureExtractor`]); turns on the training path.
            labels_attention_mask (`torch.Tensor` of shape `(batch_size, frames)`, *optional*):
                1 on the valid target frames.
            pitch_labels (`torch.FloatTensor` of shape `(batch_size, frames)`, *optional*):
                Target F0 in Hz per frame, 0 where unvoiced. Without it the pitch loss is skipped.
            energy_labels (`torch.FloatTensor` of shape `(batch_size, frames)`, *optional*):
                Target frame energy (L2 norm of the frame's STFT magnitudes). Without it the energy loss is skipped.
            waveforms (`torch.FloatTensor` of shape `(batch_size, samples)`, *optional*):
                Target audio (at least `frames * hop_length` samples) for the vocoder's STFT loss on a random segment.
            speed (`float`, *optional*, defaults to 1.0):
                Speaking rate at inference: durations are divided by it.

        Without `labels` this synthesises speech: `waveform`, `waveform_lengths`, `mel`, ... (the waveform is the
        first element of the tuple output, as `pipeline("text-to-audio")` expects). With `labels` it returns `loss`
        and its parts, and `waveform_segment`/`target_waveform_segment` when `waveforms` are given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if labels is None:
            output = self.predict_mel(
                input_ids, attention_mask, inputs_embeds, speaker_ids, speaker_embeddings, speed=speed,
                output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            )
            # A new output (not item assignment) keeps the field order: the waveform comes first in the tuple.
            output = OmniAudioDecoderOutput(
                waveform=self.vocode(output.mel, output.mel_lengths),
                waveform_lengths=output.mel_lengths * self.config.hop_length,
                **output,
            )
            return output if return_dict else output.to_tuple()

        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        inputs_embeds, token_mask = self._text_inputs(input_ids, attention_mask, inputs_embeds)
        batch_size, num_tokens = token_mask.shape
        self._check_targets(labels, labels_attention_mask, pitch_labels, energy_labels, waveforms, batch_size)
        speaker = self.speaker_vectors(batch_size, speaker_ids, speaker_embeddings)
        text_states, enc_hidden, enc_attn = self.encode_text(
            inputs_embeds, token_mask, speaker, output_attentions, output_hidden_states
        )
        log_durations = self.duration_predictor(text_states, token_mask)
        pitch = self.pitch_predictor(text_states, token_mask)
        energy = self.energy_predictor(text_states, token_mask)

        # Alignment: soft alignment (forward-sum loss) -> Monotonic Alignment Search -> integer durations.
        num_frames = labels.shape[1]
        frame_mask = (
            labels_attention_mask.bool()
            if labels_attention_mask is not None
            else torch.ones(labels.shape[:2], dtype=torch.bool, device=labels.device)
        )
        why = " for training: the alignment pairs each item's first token with its first mel frame"
        token_lengths = right_padding_lengths(token_mask, "attention_mask", why)
        mel_lengths = right_padding_lengths(frame_mask, "labels_attention_mask", why)
        if bool((mel_lengths < token_lengths).any()):
            raise ValueError(
                "Every target needs at least one mel frame per token for the monotonic alignment; got frames "
                f"{mel_lengths.tolist()} for tokens {token_lengths.tolist()}."
            )
        prior_scale = self.config.alignment_prior_scale
        log_prior = (
            beta_binomial_log_prior(token_lengths, mel_lengths, num_tokens, num_frames, prior_scale)
            if prior_scale > 0
            else None
        )
        # The aligner reads the text embeddings, not the encoder's states (as RAD-TTS and FastPitch do): contextual
        # states let it fit the mel by position instead of by sound, and its alignments drift off the words.
        alignment_log_probs = self.aligner(inputs_embeds, token_mask, labels, frame_mask, log_prior)
        losses = {
            "alignment": forward_sum_loss(
                alignment_log_probs, token_lengths, mel_lengths, self.config.alignment_blank_logprob
            )
        }
        durations = monotonic_alignment_search(alignment_log_probs.transpose(1, 2), token_lengths, mel_lengths)
        losses["duration"] = _masked_mean((log_durations.float() - torch.log1p(durations.float())) ** 2, token_mask)

        # Pitch and energy targets: frame values averaged over each token's frames (pitch over voiced frames only).
        _, _, token_index = length_regulate(text_states[..., :1], durations, num_frames)
        pitch_input, energy_input = pitch.detach(), energy.detach()
        if pitch_labels is not None:
            frame_pitch, voiced = self._standardised_pitch(pitch_labels)
            pitch_input = average_over_tokens(frame_pitch, token_index, voiced & frame_mask, num_tokens)
            losses["pitch"] = _masked_mean((pitch.float() - pitch_input) ** 2, token_mask)
        if energy_labels is not None:
            frame_energy = self._standardised_energy(energy_labels)
            energy_input = average_over_tokens(frame_energy, token_index, frame_mask, num_tokens)
            losses["energy"] = _masked_mean((energy.float() - energy_input) ** 2, token_mask)

        # Decoder, teacher-forced with the MAS durations and the target pitch and energy.
        frames, _ = self._expand(text_states, token_mask, durations, pitch_input, energy_input, num_frames)
        mel_before, mel, dec_hidden, dec_attn = self.decode_frames(
            frames, frame_mask, speaker, output_attentions, output_hidden_states
        )
        target, valid = labels.float(), frame_mask.unsqueeze(-1)
        losses["mel"] = _masked_mean((mel_before.float() - target).abs(), valid) + _masked_mean(
            (mel.float() - target).abs(), valid
        )
        waveform_segment = target_waveform_segment = None
        if waveforms is not None:
            waveform_segment, target_waveform_segment = self._vocoder_segment(labels, mel_lengths, waveforms)
            # The segments (zero after each item's end) are scored as one signal: spectral convergence is then the
            # batch-level ratio of Parallel WaveGAN, which stays finite when a segment of the target is silence.
            losses["vocoder"] = multi_resolution_stft_loss(
                waveform_segment.reshape(1, -1), target_waveform_segment.reshape(1, -1)
            )

        weights = {name: getattr(self.config, f"{name}_loss_weight") for name in losses}
        output = OmniAudioDecoderOutput(
            loss=sum(weights[name] * value for name, value in losses.items()),
            mel=mel,
            mel_lengths=mel_lengths,
            durations=durations,
            log_durations=log_durations,
            pitch=pitch,
            energy=energy,
            mel_loss=losses["mel"],
            duration_loss=losses["duration"],
            pitch_loss=losses.get("pitch"),
            energy_loss=losses.get("energy"),
            alignment_loss=losses["alignment"],
            vocoder_loss=losses.get("vocoder"),
            alignment_log_probs=alignment_log_probs,
            waveform_segment=waveform_segment,
            target_waveform_segment=target_waveform_segment,
            encoder_last_hidden_state=text_states,
            hidden_states=(enc_hidden + dec_hidden) if output_hidden_states else None,
            attentions=(enc_attn + dec_attn) if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    # ---------------------------------------------------------------------------------------------------- inference

    def predict_mel(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        speaker_ids: torch.LongTensor | None = None,
        speaker_embeddings: torch.FloatTensor | None = None,
        speed: float = 1.0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> OmniAudioDecoderOutput:
        """The acoustic model alone: text -> predicted durations, pitch, energy -> `mel [B, frames, n_mels]` (no
        vocoder). Arguments as in `forward`; returns an [`OmniAudioDecoderOutput`] without `waveform`."""
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        inputs_embeds, token_mask = self._text_inputs(input_ids, attention_mask, inputs_embeds)
        speaker = self.speaker_vectors(token_mask.shape[0], speaker_ids, speaker_embeddings)
        text_states, enc_hidden, enc_attn = self.encode_text(
            inputs_embeds, token_mask, speaker, output_attentions, output_hidden_states
        )
        log_durations = self.duration_predictor(text_states, token_mask)
        pitch = self.pitch_predictor(text_states, token_mask)
        energy = self.energy_predictor(text_states, token_mask)
        durations = self._predicted_durations(log_durations, token_mask, speed)
        frames, frame_mask = self._expand(text_states, token_mask, durations, pitch, energy)
        _, mel, dec_hidden, dec_attn = self.decode_frames(
            frames, frame_mask, speaker, output_attentions, output_hidden_states
        )
        return OmniAudioDecoderOutput(
            mel=mel,
            mel_lengths=frame_mask.sum(-1),
            durations=durations,
            log_durations=log_durations,
            pitch=pitch,
            energy=energy,
            encoder_last_hidden_state=text_states,
            hidden_states=(enc_hidden + dec_hidden) if output_hidden_states else None,
            attentions=(enc_attn + dec_attn) if output_attentions else None,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        speaker_ids: torch.LongTensor | None = None,
        speaker_embeddings: torch.FloatTensor | None = None,
        speed: float = 1.0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> OmniAudioDecoderOutput:
        r"""
        Synthesise speech. Non-autoregressive: one pass with predicted durations, pitch and energy, then the vocoder.

        Args:
            input_ids, attention_mask, inputs_embeds, speaker_ids, speaker_embeddings: as in `forward`.
            speed (`float`, *optional*, defaults to 1.0): speaking rate; 2.0 speaks about twice as fast (durations
                are divided by `speed`, each token keeping at least one frame).

        Returns:
            [`OmniAudioDecoderOutput`] with `waveform [B, samples]` (zero after each item's end),
            `waveform_lengths [B]`, `mel [B, frames, n_mels]`, `mel_lengths`, `durations`, `pitch`, `energy`.

        Example:

        ```python
        >>> speech = model.generate(**processor(text=["Hello there."], return_tensors="pt"), speaker_ids=[3])
        >>> audio = speech.waveform[0, : speech.waveform_lengths[0]]  # 16 kHz, in [-1, 1]
        ```
        """
        return self.forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            speaker_ids=speaker_ids,
            speaker_embeddings=speaker_embeddings,
            speed=speed,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )

    @torch.no_grad()
    def generate_stream(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        speaker_ids: torch.LongTensor | None = None,
        speaker_embeddings: torch.FloatTensor | None = None,
        speed: float = 1.0,
        chunk_frames: int = 32,
    ) -> Iterator[torch.Tensor]:
        r"""
        Synthesise speech and yield it in chunks as the vocoder produces them: the mel spectrogram is predicted in one
        pass, then the vocoder decodes `chunk_frames` frames at a time (with enough context that the chunks join
        seamlessly). `torch.cat(list(model.generate_stream(...)), dim=1)` equals `generate(...).waveform` within
        numerical tolerance. Arguments as in [`~OmniAudioDecoderModel.generate`].

        Yields:
            `torch.FloatTensor [B, chunk_frames * hop_length]` (the last chunk may be shorter), zero after each item's
            end.
        """
        if chunk_frames <= 0:
            raise ValueError(f"chunk_frames must be positive, got {chunk_frames}.")
        acoustic = self.predict_mel(input_ids, attention_mask, inputs_embeds, speaker_ids, speaker_embeddings, speed)
        yield from self.vocoder.stream(acoustic.mel, chunk_frames, mel_lengths=acoustic.mel_lengths)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the positions where `mask` (broadcastable) is True."""
    mask = mask.to(values.dtype).expand_as(values)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


OmniAudioDecoderModel.register_for_auto_class("AutoModelForTextToWaveform")

__all__ = [
    "OmniAudioDecoderModel",
    "OmniAudioDecoderOutput",
    "OmniAudioDecoderPreTrainedModel",
    "forward_sum_loss",
    "length_regulate",
    "monotonic_alignment_search",
]

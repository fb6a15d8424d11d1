# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Building blocks shared by every omni-encoders model.

One place for: axis-factorised rotary position tables (1D audio, 2D images, 3D video), the dispatch to transformers'
attention interface (`eager`, `sdpa`, `flash_attention_*`, `flex_attention`), a general self/cross attention layer,
rotary multi-head latent attention (RMLA) with its latent K/V cache, the feed-forward layers (token-chunked, with
in-place activations, at inference), the learned-query token compressor (TiTok-style), a batched torch log-mel
spectrogram, the loader of the small C kernels compiled on first use, the output classes of the task heads and the Hub
behaviour every model shares ([`OmniHubMixin`]: complete `auto_map` on save, the model type's card on push) with the
base class of every model type ([`OmniPreTrainedModel`]).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput, logging

from .hardware import cpu_capability, cpu_model_name, flex_attention_cpu_problem


logger = logging.get_logger(__name__)

# --------------------------------------------------------------------------------------------------------------------
# Rotary position embeddings
# --------------------------------------------------------------------------------------------------------------------


def split_rotary_dims(head_dim: int, num_axes: int) -> list[int]:
    """Split `head_dim` into one even-sized chunk per axis (the last axis takes the remainder).

    2 axes of a 144-dim head give `[72, 72]`; 3 axes of a 128-dim head give `[42, 42, 44]`.
    """
    if head_dim % 2 != 0:
        raise ValueError(f"Rotary embeddings need an even head dimension, got head_dim={head_dim}.")
    per_axis = (head_dim // (2 * num_axes)) * 2
    if per_axis == 0:
        raise ValueError(f"head_dim={head_dim} is too small to give each of {num_axes} rotary axes a frequency pair.")
    return [per_axis] * (num_axes - 1) + [head_dim - per_axis * (num_axes - 1)]


def grid_positions(grid_shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """Integer coordinates of every cell of a row-major grid.

    Args:
        grid_shape: sizes from the slowest to the fastest axis, e.g. `(height, width)` or `(frames, height, width)`.

    Returns:
        `LongTensor [prod(grid_shape), len(grid_shape)]` whose columns are the coordinates from the fastest axis to the
        slowest, i.e. `(x, y)` for images and `(x, y, t)` for videos. Row `i` is the cell at flat index `i`.
    """
    axes = [torch.arange(size, device=device) for size in grid_shape]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid_shape))
    return coords.flip(-1)


class OmniRotaryEmbedding(nn.Module):
    """Axis-factorised rotary position embedding (RoPE) for 1, 2 or 3 axes.

    The head dimension is split into one chunk per axis (see [`split_rotary_dims`]); each chunk rotates with the
    coordinate of its own axis, so the score between two tokens depends only on their coordinate differences
    `(Δx[, Δy[, Δt]])`. Tables are computed in float32 with no Python loop over positions: call the module once per
    forward pass and hand the `(cos, sin)` pair to every layer.

    The inverse frequencies are recomputed on every call (a few hundred values) instead of being stored, so the module
    has no state to save, load or re-initialise.
    """

    def __init__(self, head_dim: int, num_axes: int = 1, theta: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        self.num_axes = num_axes
        self.theta = theta
        self.axis_dims = split_rotary_dims(head_dim, num_axes)

    def inverse_frequencies(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(inv_freq [head_dim // 2], axis_index [head_dim // 2])`: each frequency and the axis it rotates with."""
        inv_freqs, axis_index = [], []
        for axis, dim in enumerate(self.axis_dims):
            exponents = torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim
            inv_freqs.append(1.0 / (self.theta**exponents))
            axis_index.append(torch.full((dim // 2,), axis, device=device, dtype=torch.long))
        return torch.cat(inv_freqs), torch.cat(axis_index)

    @torch.no_grad()
    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            positions: `[..., num_axes]` coordinates (any integer or float dtype), e.g. from [`grid_positions`]. A 1-axis
                embedding also takes plain `[...]` positions.

        Returns:
            `(cos, sin)`, each `[..., head_dim]` in float32.
        """
        if self.num_axes == 1 and (positions.dim() == 0 or positions.shape[-1] != 1):
            positions = positions.unsqueeze(-1)
        if positions.shape[-1] != self.num_axes:
            raise ValueError(
                f"Expected positions with {self.num_axes} coordinate(s) in the last dimension, got shape "
                f"{tuple(positions.shape)}."
            )
        inv_freq, axis_index = self.inverse_frequencies(positions.device)
        freqs = positions.float()[..., axis_index] * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, axis_dims={self.axis_dims}, theta={self.theta}"


def apply_rotary_pos_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x [batch, heads, seq, dim]` by tables `cos/sin` of shape `[seq, dim]` or `[batch, seq, dim]`:
    `x * cos + rotate_half(x) * sin`, with `rotate_half((x1, x2)) = (-x2, x1)`."""
    if cos.dim() == 3:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    half = x.shape[-1] // 2
    rotated = x * cos
    # The `rotate_half(x) * sin` term added half by half in place: no rotated copy of `x` and no third buffer, which
    # lowers the peak memory of every attention layer (the projections are its largest tensors).
    rotated[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
    rotated[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return rotated


# --------------------------------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------------------------------


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """`[batch, kv_heads, seq, dim] -> [batch, kv_heads * n_rep, seq, dim]` (grouped-query attention)."""
    if n_rep == 1:
        return hidden_states
    batch, kv_heads, seq_len, head_dim = hidden_states.shape
    hidden_states = hidden_states[:, :, None].expand(batch, kv_heads, n_rep, seq_len, head_dim)
    return hidden_states.reshape(batch, kv_heads * n_rep, seq_len, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention. `query [B, H, Lq, D]`, `key/value [B, KVH, Lk, D]`; `attention_mask` is additive (float,
    as made by transformers' mask utilities for `eager`) or boolean (True = attend), broadcastable to `[B, H, Lq, Lk]`.

    Without a mask, a causal module (`module.is_causal`, or an `is_causal` keyword argument) attends causally over more
    than one query, with the top-left alignment of `torch.nn.functional.scaled_dot_product_attention`, as transformers'
    `sdpa` attention does.

    Returns `(output [B, Lq, H, Dv], weights [B, H, Lq, Lk])`.
    """
    is_causal = kwargs.get("is_causal")
    is_causal = getattr(module, "is_causal", False) if is_causal is None else is_causal
    query_length, key_length = query.shape[2], key.shape[2]
    if attention_mask is None and is_causal and query_length > 1:
        attention_mask = torch.ones(query_length, key_length, dtype=torch.bool, device=query.device).tril()
    n_rep = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attn_weights = attn_weights.masked_fill(~attention_mask, torch.finfo(attn_weights.dtype).min)
        else:
            attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def returns_attention_weights(config, output_attentions: bool | None) -> bool:
    """Whether a forward asked for `output_attentions` gets the weights: only eager attention computes them. With
    another implementation, as in transformers, a warning says so (once) and the `attentions` tuple stays empty."""
    if not output_attentions:
        return False
    if config._attn_implementation == "eager":
        return True
    logger.warning_once(
        f"output_attentions=True: the {config._attn_implementation!r} attention implementation returns no attention "
        'weights. Load the model with `attn_implementation="eager"` (or call `model.set_attn_implementation("eager")`)'
        " to get them."
    )
    return False


def check_flex_attention_device(device: torch.device) -> None:
    """Refuse flex attention on a CPU whose compiled flex kernels give wrong results (see
    [`~hardware.flex_attention_cpu_problem`]) with a `ValueError` that says what to use instead."""
    if device.type == "cpu" and (problem := flex_attention_cpu_problem()) is not None:
        raise ValueError(problem)


def dispatch_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run attention with the implementation chosen by `module.config._attn_implementation`.

    `module` provides `config`, `scaling`, `attention_dropout`, `is_causal` and `num_key_value_groups`, as transformers'
    attention functions expect. Returns `(output [B, Lq, H * Dv], weights or None)`.
    """
    if module.config._attn_implementation == "flex_attention":
        check_flex_attention_device(query.device)
    attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
        module.config._attn_implementation, eager_attention_forward
    )
    attn_output, attn_weights = attention_interface(
        module,
        query,
        key,
        value,
        attention_mask,
        scaling=module.scaling,
        dropout=module.attention_dropout if module.training else 0.0,
        **kwargs,
    )
    return attn_output.reshape(*attn_output.shape[:2], -1), attn_weights


class OmniAttention(nn.Module):
    """Multi-head (grouped-query) self- or cross-attention with optional rotary embeddings.

    Projections are named `q_proj`, `k_proj`, `v_proj`, `o_proj` (the usual PEFT LoRA targets).

    Args:
        config: the model config; only its `_attn_implementation` is read, at call time.
        hidden_size: model width `D`.
        num_heads: query heads `H` (`D` must be divisible by `H`).
        num_key_value_heads: key/value heads (defaults to `num_heads`; must divide it).
        bias: whether the projections have biases.
        attention_dropout: dropout on attention probabilities in training.
        is_causal: attend causally when no `attention_mask` is given, with `eager` and `sdpa` attention (with a mask,
            the mask alone decides).
    """

    def __init__(
        self,
        config,
        hidden_size: int,
        num_heads: int,
        num_key_value_heads: int | None = None,
        bias: bool = True,
        attention_dropout: float = 0.0,
        is_causal: bool = False,
    ):
        super().__init__()
        num_key_value_heads = num_key_value_heads or num_heads
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
        if num_heads % num_key_value_heads != 0:
            raise ValueError(
                f"num_heads ({num_heads}) must be divisible by num_key_value_heads ({num_key_value_heads})."
            )
        self.config = config
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads
        self.num_key_value_groups = num_heads // num_key_value_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = attention_dropout
        self.is_causal = is_causal

        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=bias)

    def project(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries `[B, H, Lq, d]`, keys and values `[B, KVH, Lk, d]`, rotated when `position_embeddings` is given."""
        source = hidden_states if key_value_states is None else key_value_states
        query = self.q_proj(hidden_states).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        key = self.k_proj(source).unflatten(-1, (self.num_key_value_heads, self.head_dim)).transpose(1, 2)
        value = self.v_proj(source).unflatten(-1, (self.num_key_value_heads, self.head_dim)).transpose(1, 2)
        if position_embeddings is not None:
            cos, sin = position_embeddings
            query = apply_rotary_pos_emb(query, cos, sin)
            key = apply_rotary_pos_emb(key, cos, sin)
        return query, key, value

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: `[B, Lq, D]` queries (and keys/values for self-attention).
            key_value_states: `[B, Lk, D]` for cross-attention.
            position_embeddings: `(cos, sin)` from [`OmniRotaryEmbedding`], self-attention only.
            attention_mask: in the format of the selected attention implementation (see transformers' mask utilities).

        Returns:
            `(output [B, Lq, D], attention weights [B, H, Lq, Lk] or None)`.
        """
        query, key, value = self.project(hidden_states, key_value_states, position_embeddings)
        attn_output, attn_weights = dispatch_attention(self, query, key, value, attention_mask, **kwargs)
        return self.o_proj(attn_output), attn_weights


@dataclass
class OmniChunkedAttention:
    """Block-local (chunked) self-attention over a sequence of `T` tokens, computed as a batch of chunks.

    The sequence is cut into `num_chunks = ceil(T / chunk_size)` chunks; the queries of chunk `i` (tokens
    `[i * C, (i + 1) * C)`) attend to the window of keys `[(i - left_chunks) * C, (i + 1) * C + right_context)`, which
    is `window = (left_chunks + 1) * C + right_context` keys wide. Queries become `[B * num_chunks, H, C, d]` and keys and
    values `[B * num_chunks, KVH, window, d]` (gathered with `unfold`), so attention costs `O(T * window)` time and
    memory, never `O(T^2)`; any attention implementation runs it. Window positions before the sequence start, beyond
    its end or beyond an item's valid length are masked out.

    A long sequence is attended in groups of consecutive chunks ([`OmniChunkedAttention.groups`], about
    `group_frames` queries each): a group's keys and values are expanded and gathered into windows on their own, so
    these buffers stay a few MiB however long the audio (one call on the whole of 10 minutes would allocate and fill
    gigabytes of windows per layer), and the memory of one group is reused by the next.

    Build it once per forward with [`OmniChunkedAttention.build`] and hand it to every layer; positions (e.g. rotary
    embeddings) are applied before chunking, so they stay absolute.

    Attributes:
        chunk_size, left_chunks, right_context: the pattern above.
        num_chunks: chunks of the sequence.
        attention_mask: over the `window` keys of every chunk, `[B * num_chunks, ...]` in the format of the attention
            implementation (made by transformers' `create_bidirectional_mask`).
        key_mask: `[B, num_chunks, window]` boolean, True on the keys each chunk may attend to.
    """

    chunk_size: int
    left_chunks: int
    right_context: int
    num_chunks: int
    attention_mask: torch.Tensor | None
    key_mask: torch.Tensor

    # Queries attended in one call (rounded to whole chunks, at least one): see `groups`.
    group_frames: ClassVar[int] = 4096

    @property
    def window(self) -> int:
        return (self.left_chunks + 1) * self.chunk_size + self.right_context

    def groups(self) -> list[tuple[int, int]]:
        """The ranges `(first, end)` of consecutive chunks attended in one call each: about `group_frames` queries,
        or all chunks at once when the mask cannot be sliced (flex attention's `BlockMask`)."""
        if self.attention_mask is not None and not isinstance(self.attention_mask, torch.Tensor):
            return [(0, self.num_chunks)]
        step = max(1, self.group_frames // self.chunk_size)
        return [(first, min(first + step, self.num_chunks)) for first in range(0, self.num_chunks, step)]

    def key_span(self, first: int, end: int, length: int) -> tuple[int, int]:
        """The tokens `[start, stop)` of a `length`-token sequence that the windows of chunks `first .. end - 1`
        read (the window positions outside the sequence are padding)."""
        start = max(0, (first - self.left_chunks) * self.chunk_size)
        return start, min(length, end * self.chunk_size + self.right_context)

    def group_mask(self, first: int, end: int) -> torch.Tensor | None:
        """The attention mask of chunks `first .. end - 1`, `[B * (end - first), ...]`."""
        mask = self.attention_mask
        if mask is None or (first, end) == (0, self.num_chunks):
            return mask
        return mask.unflatten(0, (-1, self.num_chunks))[:, first:end].flatten(0, 1)

    @classmethod
    def build(
        cls,
        config,
        hidden_states: torch.Tensor,
        lengths: torch.Tensor | None,
        chunk_size: int,
        left_chunks: int,
        right_context: int = 0,
    ) -> "OmniChunkedAttention":
        """
        Args:
            config: the model config (its attention implementation picks the mask format).
            hidden_states: `[B, T, D]`, for the shape, dtype and device.
            lengths: `[B]` valid tokens per item (None: all `T` valid).
            chunk_size, left_chunks, right_context: the attention pattern.
        """
        from transformers.masking_utils import create_bidirectional_mask

        batch, length = hidden_states.shape[:2]
        num_chunks = -(-length // chunk_size)
        window = (left_chunks + 1) * chunk_size + right_context
        chunk_start = torch.arange(num_chunks, device=hidden_states.device) * chunk_size
        positions = chunk_start[:, None] - left_chunks * chunk_size + torch.arange(window, device=hidden_states.device)
        limit = torch.full((batch,), length, device=hidden_states.device) if lengths is None else lengths
        key_mask = (positions >= 0) & (positions[None] < limit[:, None, None])  # [B, num_chunks, window]
        # A chunk made only of padding has no valid key; let its (discarded) queries see the whole window rather than
        # nothing, which some kernels turn into NaN.
        key_mask = key_mask | ~key_mask.any(-1, keepdim=True)
        stub = torch.zeros((), dtype=hidden_states.dtype, device=hidden_states.device)
        attention_mask = create_bidirectional_mask(
            config,
            stub.expand(batch * num_chunks, chunk_size, 1),
            key_mask.reshape(batch * num_chunks, window),
            encoder_hidden_states=stub.expand(batch * num_chunks, window, 1),
        )
        return cls(chunk_size, left_chunks, right_context, num_chunks, attention_mask, key_mask)

    def chunk_queries(self, query: torch.Tensor) -> torch.Tensor:
        """Queries `[B, H, L, d]` of consecutive chunks, from the start of one (e.g. a group's) -> `[B * n, H,
        chunk_size, d]` with `n = ceil(L / chunk_size)` (zero-padded to whole chunks)."""
        batch, heads, length, dim = query.shape
        num_chunks = -(-length // self.chunk_size)
        query = nn.functional.pad(query, (0, 0, 0, num_chunks * self.chunk_size - length))
        query = query.view(batch, heads, num_chunks, self.chunk_size, dim).transpose(1, 2)
        return query.reshape(batch * num_chunks, heads, self.chunk_size, dim)

    def gather_windows(self, states: torch.Tensor, first: int, end: int, start: int) -> torch.Tensor:
        """Keys or values of the tokens from `start` on, `[B, KVH, L, d]` (those of `key_span(first, end, ...)`) ->
        the windows of chunks `first .. end - 1`, `[B * n, KVH, window, d]`."""
        batch, heads, length, dim = states.shape
        left = start - (first - self.left_chunks) * self.chunk_size
        right = end * self.chunk_size + self.right_context - (start + length)
        states = nn.functional.pad(states, (0, 0, left, right))
        windows = states.unfold(2, self.window, self.chunk_size)  # [B, KVH, n, d, window]
        windows = windows.permute(0, 2, 1, 4, 3)
        return windows.reshape(batch * (end - first), heads, self.window, dim)


class OmniLatentCache:
    """K/V cache of rotary multi-head latent attention: per layer and token it holds only the normalised latent
    (`kv_lora_rank` values) and the shared rotary key (`qk_rope_head_dim` values), never the expanded K/V heads.
    """

    def __init__(self):
        self.latents: list[torch.Tensor] = []
        self.rope_keys: list[torch.Tensor] = []

    def update(
        self, latent: torch.Tensor, rope_key: torch.Tensor, layer_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append `latent [B, L, r]` and `rope_key [B, L, d_rope]` to layer `layer_idx`; return everything cached."""
        if layer_idx == len(self.latents):
            self.latents.append(latent)
            self.rope_keys.append(rope_key)
        elif layer_idx < len(self.latents):
            self.latents[layer_idx] = torch.cat([self.latents[layer_idx], latent], dim=1)
            self.rope_keys[layer_idx] = torch.cat([self.rope_keys[layer_idx], rope_key], dim=1)
        else:
            raise ValueError(f"Layer {layer_idx} updated before layer {len(self.latents)} of the latent cache.")
        return self.latents[layer_idx], self.rope_keys[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.latents[layer_idx].shape[1] if layer_idx < len(self.latents) else 0

    def keep_last(self, num_tokens: int) -> None:
        """Drop all but the last `num_tokens` tokens of every layer (a sliding window of context, as streaming
        chunked attention keeps its left chunks); `0` empties every layer but keeps the layers."""
        start = lambda tensor: max(tensor.shape[1] - num_tokens, 0)  # noqa: E731
        self.latents = [latent[:, start(latent) :] for latent in self.latents]
        self.rope_keys = [rope_key[:, start(rope_key) :] for rope_key in self.rope_keys]

    def memory_bytes(self) -> int:
        """Bytes held by all cached tensors."""
        tensors = self.latents + self.rope_keys
        return sum(t.numel() * t.element_size() for t in tensors)

    def __len__(self) -> int:
        return len(self.latents)


class OmniLatentAttention(nn.Module):
    """Rotary multi-head latent attention (RMLA).

    Keys and values are compressed into one latent vector per token (`kv_a_proj`, `kv_lora_rank` wide, normalised by
    `kv_a_layernorm`) and expanded again to `num_key_value_heads` grouped K/V heads (`kv_b_proj`). Rotary position
    information is carried by a decoupled part of every query head and by one rotary key shared by all heads, so the
    latent itself stays position-free and a cache only needs `kv_lora_rank + qk_rope_head_dim` values per token.

    Each query/key head is `[nope (qk_head_dim - qk_rope_head_dim) | rope (qk_rope_head_dim)]`; value heads are
    `v_head_dim` wide.
    """

    def __init__(
        self,
        config,
        hidden_size: int,
        num_heads: int,
        num_key_value_heads: int,
        kv_lora_rank: int,
        qk_head_dim: int,
        qk_rope_head_dim: int,
        v_head_dim: int,
        attention_dropout: float = 0.0,
        layer_idx: int = 0,
        eps: float = 1e-5,
    ):
        super().__init__()
        if num_heads % num_key_value_heads != 0:
            raise ValueError(
                f"num_heads ({num_heads}) must be divisible by num_key_value_heads ({num_key_value_heads})."
            )
        if not 0 < qk_rope_head_dim <= qk_head_dim or qk_rope_head_dim % 2 != 0:
            raise ValueError(
                f"qk_rope_head_dim ({qk_rope_head_dim}) must be even and in (0, qk_head_dim={qk_head_dim}]."
            )
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads
        self.num_key_value_groups = num_heads // num_key_value_heads
        self.kv_lora_rank = kv_lora_rank
        self.qk_head_dim = qk_head_dim
        self.qk_rope_head_dim = qk_rope_head_dim
        self.qk_nope_head_dim = qk_head_dim - qk_rope_head_dim
        self.v_head_dim = v_head_dim
        self.scaling = qk_head_dim**-0.5
        self.attention_dropout = attention_dropout
        self.is_causal = False

        self.q_proj = nn.Linear(hidden_size, num_heads * qk_head_dim, bias=False)
        self.kv_a_proj = nn.Linear(hidden_size, kv_lora_rank + qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = nn.LayerNorm(kv_lora_rank, eps=eps)
        self.kv_b_proj = nn.Linear(kv_lora_rank, num_key_value_heads * (self.qk_nope_head_dim + v_head_dim), bias=False)
        self.o_proj = nn.Linear(num_heads * v_head_dim, hidden_size, bias=False)

    def compress(
        self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`hidden_states [B, L, D]` -> `(latent [B, L, kv_lora_rank], rotated rope key [B, L, qk_rope_head_dim])`."""
        latent, rope_key = self.kv_a_proj(hidden_states).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        cos, sin = position_embeddings
        rope_key = apply_rotary_pos_emb(rope_key.unsqueeze(1), cos, sin).squeeze(1)
        return self.kv_a_layernorm(latent), rope_key

    def expand(self, latent: torch.Tensor, rope_key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents `[B, L, r]` and rope keys `[B, L, d_rope]` -> keys `[B, KVH, L, qk_head_dim]`, values
        `[B, KVH, L, v_head_dim]`."""
        kv = self.kv_b_proj(latent).unflatten(-1, (self.num_key_value_heads, -1)).transpose(1, 2)
        key_nope, value = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        rope_key = rope_key.unsqueeze(1).expand(-1, self.num_key_value_heads, -1, -1)
        return torch.cat([key_nope, rope_key], dim=-1), value

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: OmniLatentCache | None = None,
        chunked_attention: OmniChunkedAttention | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: `[B, L, D]`.
            position_embeddings: `(cos, sin)` of width `qk_rope_head_dim` for the `L` new positions.
            attention_mask: over `[cached + L]` keys, in the format of the attention implementation.
            cache: when given, the new latents are appended to it and the queries attend to all cached tokens.
            chunked_attention: block-local attention over the `L` positions instead of full attention (no cache
                needed; `attention_mask` is then ignored: the chunks carry their own).

        Returns:
            `(output [B, L, D], attention weights: [B, H, L, cached + L], or [B, num_chunks, H, chunk_size, window]
            with chunked attention; None unless eager)`.
        """
        latent, rope_key = self.compress(hidden_states, position_embeddings)
        if cache is not None:
            latent, rope_key = cache.update(latent, rope_key, self.layer_idx)
        if chunked_attention is not None:
            return self._chunked_attention(
                hidden_states, position_embeddings, latent, rope_key, chunked_attention, **kwargs
            )

        query = self.queries(hidden_states, position_embeddings)
        key, value = self.expand(latent, rope_key)
        attn_output, attn_weights = dispatch_attention(self, query, key, value, attention_mask, **kwargs)
        return self.o_proj(attn_output), attn_weights

    def queries(
        self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """`hidden_states [B, L, D]` -> queries `[B, H, L, qk_head_dim]`, their rope part rotated."""
        cos, sin = position_embeddings
        query = self.q_proj(hidden_states).unflatten(-1, (self.num_heads, self.qk_head_dim)).transpose(1, 2)
        query_nope, query_rope = query.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        return torch.cat([query_nope, apply_rotary_pos_emb(query_rope, cos, sin)], dim=-1)

    def _chunked_attention(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        latent: torch.Tensor,
        rope_key: torch.Tensor,
        chunks: OmniChunkedAttention,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Chunked attention a group of chunks at a time ([`OmniChunkedAttention.groups`]): each group projects its
        own queries, expands the keys and values of the frames its windows read from the latents, and writes its
        output projection into the output; no other buffer is as long as the input."""
        batch, length = hidden_states.shape[:2]
        cos, sin = position_embeddings
        output, weights = None, []
        for first, end in chunks.groups():
            frames = slice(first * chunks.chunk_size, min(end * chunks.chunk_size, length))
            query = self.queries(hidden_states[:, frames], (cos[..., frames, :], sin[..., frames, :]))
            start, stop = chunks.key_span(first, end, length)
            key, value = self.expand(latent[:, start:stop], rope_key[:, start:stop])
            attn_output, weight = dispatch_attention(
                self,
                chunks.chunk_queries(query),
                chunks.gather_windows(key, first, end, start),
                chunks.gather_windows(value, first, end, start),
                chunks.group_mask(first, end),
                **kwargs,
            )
            # [B * n, C, H * dv] -> [B, n * C, H * dv], cut at the group's last frame
            attn_output = self.o_proj(attn_output.reshape(batch, -1, attn_output.shape[-1])[:, : query.shape[2]])
            if (first, end) == (0, chunks.num_chunks):
                output = attn_output
            else:
                if output is None:
                    output = attn_output.new_empty(batch, length, attn_output.shape[-1])
                output[:, frames] = attn_output
            if weight is not None:
                weights.append(weight.unflatten(0, (batch, -1)))  # [B, n, H, C, window]
        attn_weights = (weights[0] if len(weights) == 1 else torch.cat(weights, dim=1)) if weights else None
        return output, attn_weights


# --------------------------------------------------------------------------------------------------------------------
# Feed-forward layers
# --------------------------------------------------------------------------------------------------------------------


class OmniActivation(nn.Module):
    """`ACT2FN[name]` that overwrites its input when autograd is off, for activations with an in-place kernel (see
    `IN_PLACE`; others are not wrapped, see [`activation`]). For an activation whose input is a temporary nobody else
    reads, such as the first projection inside a feed-forward layer: one `[tokens, intermediate_size]` buffer less at
    inference. With autograd it is the usual out-of-place function.

    A forward hook on the layer that produces the input (e.g. to extract features) keeps that tensor: with `owner`
    and `producer`, the activation runs out of place while `getattr(owner, producer)` has forward hooks, so the hooks
    see the layer's own output. The producer is looked up at every call, so a layer replaced later (e.g. by a PEFT
    LoRA wrapper) is the one watched.

    Args:
        name: the activation's `ACT2FN` name.
        owner (`nn.Module`, *optional*): the module holding the producing layer (not registered as a submodule).
        producer (`str`, *optional*): the attribute of `owner` that produces the activation's input, e.g. `"fc1"`.
    """

    IN_PLACE = {
        "gelu": functools.partial(torch.ops.aten.gelu_, approximate="none"),
        "gelu_pytorch_tanh": functools.partial(torch.ops.aten.gelu_, approximate="tanh"),
        "silu": functools.partial(nn.functional.silu, inplace=True),
        "relu": torch.relu_,
    }

    def __init__(self, name: str, owner: nn.Module | None = None, producer: str | None = None):
        super().__init__()
        self.name = name
        self.act = ACT2FN[name]
        self.__dict__["_owner"] = owner  # a plain reference: the owner is this module's parent, not its child
        self.producer = producer

    def extra_repr(self) -> str:
        return f"{self.name!r}, in place without autograd"

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or (
            self._owner is not None and getattr(self._owner, self.producer)._forward_hooks
        ):
            return self.act(hidden_states)
        return self.IN_PLACE[self.name](hidden_states)


def activation(name: str, owner: nn.Module | None = None, producer: str | None = None) -> nn.Module:
    """The activation `name` of transformers' `ACT2FN`, in place at inference where it can be ([`OmniActivation`],
    out of place while `owner`'s `producer` layer has forward hooks)."""
    return OmniActivation(name, owner, producer) if name in OmniActivation.IN_PLACE else ACT2FN[name]


# Tokens per chunk of `map_frame_chunks` when the caller gives none.
FRAME_CHUNK_TOKENS = 2048


def map_frame_chunks(
    fn: Callable[..., torch.Tensor],
    hidden_states: torch.Tensor,
    *others: torch.Tensor | None,
    chunk_tokens: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`fn(hidden_states, *others)` for a frame-wise `fn` (output frame `t` depends on frame `t` of the inputs alone)
    on `[B, T, ...]` tensors (`others` may hold None), computed about `chunk_tokens` tokens (default
    `FRAME_CHUNK_TOKENS`) at a time when autograd is off (as transformers' `apply_chunking_to_forward`).

    Only the output is allocated at full length: the buffers between the steps of `fn` (norms, projections,
    activations, residual sums) stay the size of one chunk, in cache and reused from chunk to chunk, where on a whole
    long input each would be a fresh allocation of hundreds of MiB whose pages the kernel must map and zero, and which
    falls out of cache between two steps. Chunks of thousands of tokens keep the matrix products as efficient. With
    autograd (the activations are kept for the backward anyway), with `chunk_tokens=0` or for an input of one chunk,
    `fn` runs once on the whole. When it runs in chunks, `out` (if given) receives the chunks instead of a new tensor:
    it may be one of the inputs, whose chunks are each read before they are overwritten (a residual stream updated in
    place), so pass it only when nothing else needs that input's old values.
    """
    chunk_tokens = FRAME_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens
    batch, length = hidden_states.shape[:2]
    frames = max(1, chunk_tokens // batch)
    if not chunk_tokens or torch.is_grad_enabled() or length <= frames:
        return fn(hidden_states, *others)
    output = out
    for start in range(0, length, frames):
        window = slice(start, start + frames)
        chunk = fn(hidden_states[:, window], *(other if other is None else other[:, window] for other in others))
        if output is None:
            output = chunk.new_empty(batch, length, *chunk.shape[2:])
        output[:, window] = chunk
    return output


class OmniFeedForward(nn.Module):
    """Base of the feed-forward layers: `[..., D] -> [..., D]`, token-wise.

    Without autograd, inputs of more than `inference_chunk_tokens` tokens run in chunks of that many tokens
    ([`map_frame_chunks`]), so the `[tokens, intermediate_size]` buffers stay bounded: they would otherwise be the peak
    memory of a whole video forward pass. With autograd the layer runs in one piece. Set `inference_chunk_tokens = 0`
    to always run in one piece.
    """

    inference_chunk_tokens = 2048

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        tokens = hidden_states.reshape(1, -1, hidden_states.shape[-1])
        output = map_frame_chunks(self.feed_forward, tokens, chunk_tokens=self.inference_chunk_tokens)
        return output.view(hidden_states.shape)

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class OmniMLP(OmniFeedForward):
    """`fc2(act(fc1(x)))`, the transformer feed-forward layer (`D -> intermediate_size -> D`)."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "gelu_pytorch_tanh", bias=True):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.act = activation(hidden_act, self, "fc1")
        self.fc2 = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class OmniGatedMLP(OmniFeedForward):
    """Gated feed-forward layer, SwiGLU by default: `down_proj(act(gate_proj(x)) * up_proj(x))`."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "silu", bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)
        self.act = activation(hidden_act, self, "gate_proj")

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate = self.act(self.gate_proj(hidden_states))
        if torch.is_grad_enabled():
            return self.down_proj(gate * self.up_proj(hidden_states))
        return self.down_proj(gate.mul_(self.up_proj(hidden_states)))  # one `[tokens, intermediate]` buffer less


# --------------------------------------------------------------------------------------------------------------------
# Learned-query token compression (TiTok-style 1D tokenization)
# --------------------------------------------------------------------------------------------------------------------


class OmniTokenCompressor(nn.Module):
    """Compress a token sequence to `num_tokens` learned-query tokens.

    A pre-norm cross-attention block: learned queries attend to the (normalised) input tokens, then a feed-forward
    layer, then a final LayerNorm. Used for TiTok compression of image patches and per-frame compression of video.

    Args:
        config: the owning model's config (for the attention implementation).
        hidden_size, num_heads, intermediate_size, hidden_act, layer_norm_eps: block sizes.
        num_tokens: number of output tokens (learned queries).
    """

    def __init__(
        self,
        config,
        hidden_size: int,
        num_heads: int,
        num_tokens: int,
        intermediate_size: int,
        hidden_act: str = "gelu_pytorch_tanh",
        layer_norm_eps: float = 1e-6,
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        self.num_tokens = num_tokens
        self.query_embeddings = nn.Parameter(torch.empty(num_tokens, hidden_size))
        self.query_layernorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.input_layernorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.cross_attn = OmniAttention(config, hidden_size, num_heads, attention_dropout=attention_dropout)
        self.post_attention_layernorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = OmniMLP(hidden_size, intermediate_size, hidden_act)
        self.final_layernorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: `[B, N, D]` tokens to compress.
            attention_mask: optional mask over the `N` inputs in the attention implementation's format.

        Returns:
            `(tokens [B, num_tokens, D], cross-attention weights [B, H, num_tokens, N] or None)`.
        """
        queries = self.query_embeddings.to(hidden_states.dtype).expand(hidden_states.shape[0], -1, -1)
        attn_output, attn_weights = self.cross_attn(
            self.query_layernorm(queries),
            key_value_states=self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            **kwargs,
        )
        tokens = queries + attn_output
        tokens = tokens + self.mlp(self.post_attention_layernorm(tokens))
        return self.final_layernorm(tokens), attn_weights


# --------------------------------------------------------------------------------------------------------------------
# Padding masks
# --------------------------------------------------------------------------------------------------------------------


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """`lengths [B]` -> boolean mask `[B, max_length]`, True on the first `lengths[b]` positions."""
    return torch.arange(max_length, device=lengths.device) < lengths[:, None]


def right_padding_lengths(mask: torch.Tensor, name: str, why: str = "") -> torch.Tensor:
    """The valid length of each row of the padding mask `mask [B, L]`, after checking it is a right-padding mask: 0s
    and 1s (or booleans), the 1s a prefix of each row. Raises a `ValueError` naming `name` (and saying `why` the
    layout matters) otherwise: a left-padded or holed mask would silently mix padding into the valid positions."""
    valid = mask.bool()
    lengths = valid.sum(-1)
    if not torch.compiler.is_compiling():
        binary = mask.dtype == torch.bool or bool(((mask == 0) | (mask == 1)).all())
        if not binary or not torch.equal(valid, lengths_to_mask(lengths, mask.shape[-1])):
            raise ValueError(
                f"{name} must be 1 on a prefix of each row and 0 after it (right padding){why}; got a mask with "
                "left padding, holes or values other than 0 and 1."
            )
    return lengths


# --------------------------------------------------------------------------------------------------------------------
# Audio features
# --------------------------------------------------------------------------------------------------------------------


def mel_frame_count(num_samples: int | torch.Tensor, hop_length: int) -> int | torch.Tensor:
    """Number of frames [`OmniMelSpectrogram`] gives for `num_samples` samples: `num_samples // hop_length`."""
    return num_samples // hop_length


class OmniMelSpectrogram(nn.Module):
    """Log-mel spectrogram computed in torch, batched (one `torch.stft` call for the whole batch).

    The signal is zero-padded by `(n_fft - hop_length) // 2` on each side and framed without centring, so a waveform
    of `S` samples gives exactly `S // hop_length` frames (`hop_length` samples per frame, as a vocoder that upsamples
    by `hop_length` needs). Zero padding (not reflection) keeps a padded batch equal, frame for frame, to each item
    alone on its valid frames. Mel filters are Slaney-scale (transformers' `mel_filter_bank`); the output is
    `log(clamp(mel, min=eps))`.

    The window and filters are derived data, rebuilt per device on first use, so the module has no state to save.

    Args:
        sampling_rate: sample rate of the input.
        n_fft: FFT size; `win_length` defaults to it.
        hop_length: samples per frame.
        n_mels: number of mel bins.
        f_min, f_max: mel filter range in Hz (`f_max` defaults to Nyquist).
        power: 1.0 for a magnitude spectrogram, 2.0 for power.
        eps: floor before the log.
    """

    def __init__(
        self,
        sampling_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 80,
        win_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 1.0,
        eps: float = 1e-5,
    ):
        super().__init__()
        if (n_fft - hop_length) % 2 != 0 or hop_length > n_fft:
            raise ValueError(f"n_fft - hop_length must be even and >= 0, got n_fft={n_fft}, hop_length={hop_length}.")
        self.sampling_rate = sampling_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length or n_fft
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max if f_max is not None else sampling_rate / 2
        self.power = power
        self.eps = eps
        self._tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """`(window [win_length], mel filters [n_fft // 2 + 1, n_mels])` in float32 on `device`."""
        key = str(device)
        if key not in self._tables:
            from transformers.audio_utils import mel_filter_bank

            filters = mel_filter_bank(
                num_frequency_bins=self.n_fft // 2 + 1,
                num_mel_filters=self.n_mels,
                min_frequency=self.f_min,
                max_frequency=self.f_max,
                sampling_rate=self.sampling_rate,
                norm="slaney",
                mel_scale="slaney",
            )
            window = torch.hann_window(self.win_length, device=device, dtype=torch.float32)
            self._tables[key] = (window, torch.as_tensor(filters, dtype=torch.float32, device=device))
        return self._tables[key]

    def spectrogram(self, waveforms: torch.Tensor) -> torch.Tensor:
        """`waveforms [B, S]` (or `[S]`) -> linear spectrogram `[B, S // hop_length, n_fft // 2 + 1]` in float32
        (magnitude raised to `power`): the STFT frames the mel spectrogram is made of."""
        squeeze = waveforms.dim() == 1
        waveforms = waveforms[None] if squeeze else waveforms
        if waveforms.shape[-1] < self.hop_length:
            raise ValueError(
                f"Audio of {waveforms.shape[-1]} samples is shorter than one frame ({self.hop_length} samples)."
            )
        window, _ = self.tables(waveforms.device)
        pad = (self.n_fft - self.hop_length) // 2
        padded = nn.functional.pad(waveforms.float(), (pad, pad))
        spectrum = torch.stft(
            padded, self.n_fft, self.hop_length, self.win_length, window, center=False, return_complex=True
        )
        magnitude = spectrum.abs().pow(self.power) if self.power != 1.0 else spectrum.abs()
        magnitude = magnitude.transpose(1, 2)
        return magnitude[0] if squeeze else magnitude

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """`waveforms [B, S]` (or `[S]`) -> log-mel `[B, S // hop_length, n_mels]` in float32."""
        _, filters = self.tables(waveforms.device)
        mel = torch.matmul(self.spectrogram(waveforms), filters)
        return torch.log(torch.clamp(mel, min=self.eps))


# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class OmniClassifierOutput(ModelOutput):
    """
    Output of the omni-encoders classification heads (image, video and audio classification).

    Args:
        loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `labels` is provided):
            Classification loss, plus `aux_loss` weighted by the config's coefficient when the model has one.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Classification scores (before softmax).
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            The pooled embedding the classifier reads.
        aux_loss (`torch.FloatTensor`, *optional*):
            Auxiliary loss of the backbone (e.g. the video encoder's MoE load-balancing loss), unweighted.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Hidden states of the backbone, when `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention weights of the backbone, when `output_attentions=True` (eager attention only).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    aux_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# --------------------------------------------------------------------------------------------------------------------
# C kernels compiled on first use
# --------------------------------------------------------------------------------------------------------------------


@functools.cache
def load_c_kernel(name: str, source: str, flags: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    """Compile the C `source` into a shared library on first use and load it with ctypes, or return None where that is
    not possible (no C compiler, a failed build, or `OMNI_ENCODERS_DISABLE_KERNELS=1`), after one warning: callers
    then run their PyTorch version.

    The library is built once per machine into `$OMNI_ENCODERS_CACHE/kernels` (default `~/.cache/omni_encoders`),
    under a name derived from the source, the flags, the compiler and the CPU (model and PyTorch's capability), and
    moved into place atomically, so concurrent processes share it. No source is built with `-march=native`: the
    kernels pick their instruction set at load time.
    Transformers compiles some custom kernels at run time the same way; plain C through ctypes needs no PyTorch
    headers and builds in well under a second.
    """
    if os.environ.get("OMNI_ENCODERS_DISABLE_KERNELS", "0") not in ("", "0"):
        return None
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        logger.warning_once(f"No C compiler found: the {name} kernel is not built; its (slower) PyTorch version runs.")
        return None
    # Keyed by the CPU too: a cache shared between machines (a network home) never hands one CPU's build to another.
    machine = (platform.machine(), cpu_model_name(), cpu_capability(), compiler)
    digest = hashlib.sha256("\0".join((source, *flags, *machine)).encode()).hexdigest()[:16]
    cache_dir = os.environ.get("OMNI_ENCODERS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "omni_encoders"))
    library = os.path.join(cache_dir, "kernels", f"{name}_{digest}.so")
    try:
        if not os.path.exists(library):
            os.makedirs(os.path.dirname(library), exist_ok=True)
            with tempfile.TemporaryDirectory(dir=os.path.dirname(library)) as build_dir:
                source_file, built = os.path.join(build_dir, f"{name}.c"), os.path.join(build_dir, f"{name}.so")
                with open(source_file, "w") as handle:
                    handle.write(source)
                subprocess.run(
                    [compiler, "-O3", "-shared", "-fPIC", *flags, "-o", built, source_file],
                    check=True, capture_output=True, timeout=120,
                )
                os.replace(built, library)
        return ctypes.CDLL(library)
    except (OSError, subprocess.SubprocessError) as error:
        details = getattr(error, "stderr", b"") or b""
        logger.warning_once(
            f"Could not build the {name} kernel ({error} {details.decode(errors='replace')[:500]}); its PyTorch "
            "version runs instead."
        )
        return None


# --------------------------------------------------------------------------------------------------------------------
# Hub integration
# --------------------------------------------------------------------------------------------------------------------


def model_type_auto_map(model_class: type[PreTrainedModel]) -> dict[str, str]:
    """`auto_map` entries for every model class of `model_class`'s model type.

    These are the classes defined in the same modeling file, for the same config class, that called
    `register_for_auto_class` (e.g. `{"AutoModel": "modeling_omni_vision.OmniVisionModel",
    "AutoModelForImageClassification": "modeling_omni_vision.OmniVisionForImageClassification"}`), each also under the
    Auto classes of its `_also_auto_classes` (the speech decoder's `AutoModel`). Remote code copies that one file (and
    its relative imports), so every entry resolves in a saved checkpoint.
    """
    module = sys.modules[model_class.__module__]
    file_name = model_class.__module__.rsplit(".", 1)[-1]
    auto_map = {}
    for candidate in vars(module).values():
        if (
            isinstance(candidate, type)
            and issubclass(candidate, PreTrainedModel)
            and candidate.__module__ == model_class.__module__
            and candidate.__dict__.get("_auto_class") is not None
            and candidate.config_class is model_class.config_class
        ):
            for auto_class in (candidate._auto_class, *getattr(candidate, "_also_auto_classes", ())):
                auto_map.setdefault(auto_class, f"{file_name}.{candidate.__name__}")
    # the saved class wins its own entries
    for auto_class in (model_class._auto_class, *getattr(model_class, "_also_auto_classes", ())):
        auto_map[auto_class] = f"{file_name}.{model_class.__name__}"
    return auto_map


# The description of the placeholder card transformers pushes when a repo has none (e.g. a processor pushed first).
_TRANSFORMERS_PLACEHOLDER_CARD = "This is the model card of a 🤗 transformers model that has been pushed on the Hub."


class OmniHubMixin:
    """Hub behaviour shared by every omni-encoders model; mixed into each model type's `PreTrainedModel`:

    - `save_pretrained` writes an `auto_map` with **every** Auto class of the model type, not only the saved class's,
      so a checkpoint of one head loads as any other (e.g. `AutoModel` on an image-classification checkpoint) with
      `trust_remote_code=True` where the package is not installed.
    - `push_to_hub` uploads the model type's model card (rendered from `model_cards/<model_type>.md` by
      `omni_encoders.modelcard`) when the repo has no card yet or only transformers' placeholder; an existing card is
      kept (only tagged), as transformers does. A model loaded as remote code, without the package, pushes
      transformers' card.
    """

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        if self.is_remote_code():
            auto_map = getattr(self.config, "auto_map", None) or {}
            self.config.auto_map = {**auto_map, **model_type_auto_map(type(self))}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | str | None = None,
    ):
        """Upload the model (config with `auto_map`, safetensors weights sharded at `max_shard_size`, the code files)
        and its model card to the Hub repo `repo_id`, as [`~transformers.PreTrainedModel.push_to_hub`] does."""
        from transformers.utils.hub import create_and_tag_model_card, hf_api

        tags = [tags] if isinstance(tags, str) else list(tags or [])
        tags = list(dict.fromkeys([*(self.model_tags or []), *tags]))
        repo_id = hf_api().create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        model_card = create_and_tag_model_card(repo_id, tags or None, token=token)
        if _TRANSFORMERS_PLACEHOLDER_CARD in model_card.text:
            model_card = self._render_model_card(repo_id, tags) or model_card
        with tempfile.TemporaryDirectory() as tmp_dir:
            self.save_pretrained(tmp_dir, max_shard_size=max_shard_size)
            model_card.save(os.path.join(tmp_dir, "README.md"))
            return self._upload_modified_files(
                tmp_dir,
                repo_id,
                files_timestamps={},
                commit_message=commit_message,
                token=token,
                create_pr=create_pr,
                revision=revision,
                commit_description=commit_description,
            )

    def _render_model_card(self, repo_id: str, tags: list[str]):
        """The model type's card, or None when the package (which ships the templates) is not installed or has no
        template for this model type (e.g. a user's subclass with its own `model_type`)."""
        try:
            from omni_encoders.modelcard import MODEL_CARD_SPECS, create_model_card
        except ImportError:
            return None
        if self.config.model_type not in MODEL_CARD_SPECS:
            return None
        return create_model_card(self, model_id=repo_id, tags=tags)


class OmniPreTrainedModel(OmniHubMixin, PreTrainedModel):
    """Base of every omni-encoders model type: what they all support (gradient checkpointing, every attention
    implementation, the Hub behaviour of [`OmniHubMixin`]) and the initialisation of the layers they share. Each model
    type's `*PreTrainedModel` sets its config class, input names and `_no_split_modules`, and extends `_init_weights`
    for its own layers."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    # Losses are batch means: `Trainer` scales them for gradient accumulation (no `num_items_in_batch` needed).
    accepts_loss_kwargs = False
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def post_init(self):
        """transformers' `post_init`, then `_no_split_modules` narrowed to the classes this model holds.

        transformers gathers the children's `_no_split_modules`, and a backbone declares those of its whole model
        type: a `SiglipVisionModel` names SigLIP's text embeddings and attention-pooling head, which our vision
        model does not build. FSDP's transformer auto-wrap policy (accelerate's, from `_no_split_modules`) looks every
        name up in the model and raises for the first it cannot find, so only the blocks present are kept.
        """
        super().post_init()
        present = {type(module).__name__ for module in self.modules()}
        self._no_split_modules = {name for name in self._no_split_modules if name in present}

    def _flex_attn_can_dispatch(self, is_init_check: bool = False) -> bool:
        """transformers' check, and on a machine without a GPU, ours: flex attention is refused where PyTorch's CPU
        flex kernels give wrong results (CPUs without AVX-512; see [`check_flex_attention_device`]). With a GPU, a
        model may still run on the CPU: the attention layers check their inputs' device at call time."""
        super()._flex_attn_can_dispatch(is_init_check)
        if not torch.cuda.is_available():
            check_flex_attention_device(torch.device("cpu"))
        return True

    def check_unused_kwargs(
        self, kwargs: dict, accepted: Sequence[str] = (), hints: dict[str, str] | None = None
    ) -> None:
        """Raise for the keyword arguments a `forward` gathers in `**kwargs` but does not use (a misspelt name, a mask
        the model takes under another name), instead of silently ignoring them: a `ValueError` with the hint for a name
        in `hints`, a `TypeError` otherwise. `None` values carry nothing and pass (generic wrappers fill unused inputs
        with `None`), as do the names in `accepted` (e.g. a processor output the model has no use for)."""
        unused = sorted(name for name, value in kwargs.items() if value is not None and name not in accepted)
        for name in unused:
            if hints and name in hints:
                raise ValueError(f"{type(self).__name__} takes no `{name}`: {hints[name]}")
        if unused:
            raise TypeError(
                f"{type(self).__name__}.forward() got unexpected keyword argument(s) {', '.join(map(repr, unused))}."
            )

    def _init_weights(self, module: nn.Module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, OmniTokenCompressor):
            init.normal_(module.query_embeddings, mean=0.0, std=std)

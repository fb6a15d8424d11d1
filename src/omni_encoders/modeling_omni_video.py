# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""The omni-encoders video encoder: per-frame vision features, 3D-RoPE factorised attention with a temporal
mixture-of-experts feed-forward layer, and per-frame token compression."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import causal_mask_function, create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_omni_video import OmniVideoConfig
from .modeling_omni_common import (
    OmniAttention,
    OmniClassifierOutput,
    OmniGatedMLP,
    OmniPreTrainedModel,
    OmniRotaryEmbedding,
    OmniTokenCompressor,
    grid_positions,
    returns_attention_weights,
    right_padding_lengths,
)
from .modeling_omni_vision import OmniVisionModel


@dataclass
class OmniVideoModelOutput(ModelOutput):
    """
    Output of [`OmniVideoModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_frames * tokens_per_frame, hidden_size)`):
            The compressed tokens, frame after frame (`tokens_per_frame = config.num_tokens_per_frame`).
        attention_mask (`torch.LongTensor` of shape `(batch_size, num_frames * tokens_per_frame)`):
            1 for the tokens of real frames, 0 for those of padded frames (from `frame_mask`).
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Mean of `last_hidden_state` over the tokens of the real frames (`config.pooling="mean"`) or of each video's
            last real frame (`"last_frame"`).
        patch_embeddings (`torch.FloatTensor` of shape `(batch_size, num_frames, num_patches, hidden_size)`):
            Patch features (`num_patches = grid_height * grid_width`, row-major) after the video blocks and the final
            LayerNorm, before compression.
        aux_loss (`torch.FloatTensor` of shape `()`):
            Load-balancing loss of the temporal MoE layers over the tokens of real frames, averaged over layers (1.0
            for a perfectly balanced router), unweighted.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The per-frame vision features followed by the output of every video block, each
            `(batch_size, num_frames * num_patches, hidden_size)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Spatial attention weights of every block, `(batch_size * num_frames, num_heads, num_patches, num_patches)`.
            Eager attention only.
        temporal_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Temporal attention weights of every block, `(batch_size * num_patches, num_heads, num_frames, num_frames)`.
            Eager attention only.
    """

    last_hidden_state: torch.FloatTensor | None = None
    attention_mask: torch.LongTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    patch_embeddings: torch.FloatTensor | None = None
    aux_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    temporal_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class OmniVideoClassifierOutput(OmniClassifierOutput):
    """
    Output of [`OmniVideoForVideoClassification`]: [`OmniClassifierOutput`] plus the temporal attention weights.

    Args:
        temporal_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Temporal attention weights of every video block (see [`OmniVideoModelOutput`]).
    """

    temporal_attentions: tuple[torch.FloatTensor, ...] | None = None


# --------------------------------------------------------------------------------------------------------------------
# Temporal mixture of experts
# --------------------------------------------------------------------------------------------------------------------


class OmniVideoTemporalRouter(nn.Module):
    """Motion-aware router: `gate(x + temporal_proj(x_t - x_{t-1}))`, with a zero change for the first frame."""

    def __init__(self, config: OmniVideoConfig):
        super().__init__()
        self.temporal_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`hidden_states [B, T, N, D]` -> router logits `[B, T, N, num_experts]`."""
        motion = torch.diff(hidden_states, dim=1, prepend=hidden_states[:, :1])
        return self.gate(hidden_states + self.temporal_proj(motion))


class OmniVideoTemporalMoE(nn.Module):
    """Temporal mixture-of-experts feed-forward layer: each token goes through its top-k of `num_experts` SwiGLU
    experts (weighted by the router's probabilities) plus, optionally, a shared SwiGLU expert.

    Dispatch sorts the `tokens * top_k` assignments by expert once, then gathers each expert's tokens, runs the expert
    on them and sums its weighted outputs back onto the tokens with `index_add_`: no loop over tokens, no
    per-(expert, slot) masks and no `[tokens, top_k, D]` intermediate.
    """

    def __init__(self, config: OmniVideoConfig):
        super().__init__()
        self.num_experts = config.num_experts
        self.top_k = config.num_experts_per_tok
        self.router = OmniVideoTemporalRouter(config)
        self.experts = nn.ModuleList(
            [
                OmniGatedMLP(config.hidden_size, config.moe_intermediate_size, config.hidden_act)
                for _ in range(config.num_experts)
            ]
        )
        self.shared_expert = (
            OmniGatedMLP(config.hidden_size, config.moe_intermediate_size, config.hidden_act)
            if config.use_shared_expert
            else None
        )

    def route(self, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router logits `[..., num_experts]` -> `(weights [..., top_k], expert indices [..., top_k])`; the weights
        are the softmax probabilities of the chosen experts (float32)."""
        probabilities = nn.functional.softmax(router_logits, dim=-1, dtype=torch.float32)
        return probabilities.topk(self.top_k, dim=-1)

    def experts_forward(
        self, hidden_states: torch.Tensor, expert_indices: torch.Tensor, expert_weights: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            hidden_states: `[N, D]` tokens.
            expert_indices: `[N, top_k]` the experts of each token.
            expert_weights: `[N, top_k]` their weights.

        Returns:
            `[N, D]`: the weighted sum of each token's experts.
        """
        if torch.compiler.is_compiling():
            # Grouped dispatch has data-dependent slice sizes (a graph break); under torch.compile every expert runs on
            # every token instead, the unchosen ones weighted 0: static shapes for num_experts / top_k x the FLOPs.
            combine_weights = expert_weights.new_zeros(hidden_states.shape[0], self.num_experts)
            combine_weights = combine_weights.scatter(1, expert_indices, expert_weights).to(hidden_states.dtype)
            return sum(
                expert(hidden_states) * combine_weights[:, index, None] for index, expert in enumerate(self.experts)
            )
        top_k = expert_indices.shape[1]
        assignments = expert_indices.flatten()
        order = assignments.argsort(stable=True)  # assignments grouped by expert
        counts = torch.bincount(assignments, minlength=self.num_experts).tolist()
        token_index = (order // top_k).split(counts)
        weights = expert_weights.flatten()[order].unsqueeze(-1).to(hidden_states.dtype).split(counts)
        # One expert at a time, gathered, weighted and summed onto its tokens: only one expert's `[tokens, D]` slices
        # are alive at once (the peak memory of the video model at inference).
        output = hidden_states.new_zeros(hidden_states.shape)
        for expert, index, weight in zip(self.experts, token_index, weights):
            output.index_add_(0, index, expert(hidden_states[index]) * weight)
        return output

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            hidden_states: `[B, T, N, D]` (frame-major, so that the router can see each token's previous frame).

        Returns:
            `(output [B, T, N, D], router logits [B, T, N, num_experts])`.
        """
        router_logits = self.router(hidden_states)
        expert_weights, expert_indices = self.route(router_logits)
        tokens = hidden_states.reshape(-1, hidden_states.shape[-1])
        output = self.experts_forward(tokens, expert_indices.flatten(0, -2), expert_weights.flatten(0, -2))
        if self.shared_expert is not None:
            shared_output = self.shared_expert(tokens)
            output = output + shared_output if torch.is_grad_enabled() else output.add_(shared_output)
        return output.view(hidden_states.shape), router_logits


def load_balancing_loss(
    router_logits: tuple[torch.Tensor, ...], top_k: int, frame_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Switch-Transformer load-balancing loss, averaged over layers, computed on the tokens of real frames only.

    Per layer: `num_experts * sum_e f_e * P_e`, with `f_e` the fraction of the top-k assignments that go to expert `e`
    and `P_e` the mean router probability of `e`. It is 1.0 when routing is perfectly balanced; the gradient reaches
    the router through `P_e`.

    Args:
        router_logits: one `[B, T, N, num_experts]` tensor per layer.
        top_k: experts per token.
        frame_mask: `[B, T]`, 1 for real frames; `None` counts every token.
    """
    logits = torch.stack(router_logits)  # [L, B, T, N, E]
    num_layers, num_experts = logits.shape[0], logits.shape[-1]
    probabilities = nn.functional.softmax(logits, dim=-1, dtype=torch.float32).flatten(1, -2)  # [L, tokens, E]
    selected = probabilities.topk(top_k, dim=-1).indices
    if frame_mask is None:
        valid = torch.ones(probabilities.shape[1], dtype=torch.bool, device=probabilities.device)
    else:
        valid = frame_mask.bool()[:, :, None].expand(logits.shape[1:4]).flatten()
    token_weights = valid.to(probabilities.dtype)
    assignments = torch.zeros_like(probabilities).scatter_add_(
        -1, selected, token_weights[None, :, None].expand(num_layers, -1, top_k).contiguous()
    )
    num_valid = token_weights.sum()
    tokens_per_expert = assignments.sum(1) / (num_valid * top_k)  # [L, E]
    # `where`, not a product with the mask: the probabilities of padded tokens must not reach the sum even if NaN
    probability_per_expert = torch.where(valid[None, :, None], probabilities, 0).sum(1) / num_valid  # [L, E]
    return num_experts * (tokens_per_expert * probability_per_expert).sum(-1).mean()


# --------------------------------------------------------------------------------------------------------------------
# Factorised space-time block
# --------------------------------------------------------------------------------------------------------------------


class OmniVideoBlock(GradientCheckpointingLayer):
    """Pre-norm block of factorised attention and a temporal MoE:

    1. spatial attention among the patches of each frame (`B * T` sequences of `N = h * w` tokens),
    2. temporal attention across frames at each patch position (`B * N` sequences of `T` tokens, frame-causal),
    3. the temporal mixture-of-experts feed-forward layer.

    Both attentions rotate queries and keys with the same 3D (x, y, t) rotary table, laid out for their batching.
    """

    def __init__(self, config: OmniVideoConfig):
        super().__init__()
        hidden_size, num_heads = config.hidden_size, config.num_attention_heads
        self.spatial_layernorm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.spatial_attn = OmniAttention(config, hidden_size, num_heads, attention_dropout=config.attention_dropout)
        self.temporal_layernorm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.temporal_attn = OmniAttention(
            config, hidden_size, num_heads, attention_dropout=config.attention_dropout, is_causal=config.frame_causal
        )
        self.post_attention_layernorm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = OmniVideoTemporalMoE(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        spatial_position_embeddings: tuple[torch.Tensor, torch.Tensor],
        temporal_position_embeddings: tuple[torch.Tensor, torch.Tensor],
        temporal_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """
        Args:
            hidden_states: `[B, T, N, D]`.
            spatial_position_embeddings: `(cos, sin)`, each `[B * T, N, head_dim]`.
            temporal_position_embeddings: `(cos, sin)`, each `[B * N, T, head_dim]`.
            temporal_attention_mask: frame-causal and frame-padding mask over `[B * N, T]` sequences, in the format of
                the attention implementation.

        Returns:
            `(hidden states [B, T, N, D], spatial weights [B*T, H, N, N] or None, temporal weights [B*N, H, T, T] or
            None, router logits [B, T, N, num_experts])`.
        """
        batch_size, num_frames, num_patches, hidden_size = hidden_states.shape

        frames = hidden_states.reshape(batch_size * num_frames, num_patches, hidden_size)
        attn_output, spatial_weights = self.spatial_attn(
            self.spatial_layernorm(frames), position_embeddings=spatial_position_embeddings, **kwargs
        )
        frames = frames + attn_output

        tracks = frames.view(batch_size, num_frames, num_patches, hidden_size).transpose(1, 2)
        tracks = tracks.reshape(batch_size * num_patches, num_frames, hidden_size)
        attn_output, temporal_weights = self.temporal_attn(
            self.temporal_layernorm(tracks),
            position_embeddings=temporal_position_embeddings,
            attention_mask=temporal_attention_mask,
            **kwargs,
        )
        tracks = tracks + attn_output

        hidden_states = tracks.view(batch_size, num_patches, num_frames, hidden_size).transpose(1, 2).contiguous()
        del frames, tracks, attn_output  # not needed by the MoE (the peak memory of the block in inference)
        moe_output, router_logits = self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states + moe_output, spatial_weights, temporal_weights, router_logits


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


class OmniVideoPreTrainedModel(OmniPreTrainedModel):
    config: OmniVideoConfig
    config_class = OmniVideoConfig
    main_input_name = "pixel_values_videos"
    input_modalities = ("video",)
    _no_split_modules = ["OmniVideoBlock", "OmniTokenCompressor"]


# `forward(**kwargs)`: the mask a user may pass under the name other models use.
FRAME_MASK_HINT = {
    "attention_mask": "mark the padded frames with `frame_mask` [batch, frames] (1 = real frame, 0 = padding), as the "
    "video processor returns it."
}


class OmniVideoModel(OmniVideoPreTrainedModel):
    """
    The video encoder: `pixel_values_videos [B, T, 3, H, W]` -> per-frame patch features from [`OmniVisionModel`]
    (all `B * T` frames in one batch) -> video blocks of spatial attention, frame-causal temporal attention and a
    temporal mixture of experts, all with 3D (x, y, t) rotary embeddings -> per-frame compression ->
    `last_hidden_state [B, T * num_tokens_per_frame, D]` with its `attention_mask`, a pooled embedding and the
    load-balancing `aux_loss`.

    Videos of different lengths share a batch through `frame_mask` (padded frames at the end): the outputs of each
    video's real frames equal those of the video run alone.
    """

    def __init__(self, config: OmniVideoConfig):
        super().__init__(config)
        self.vision_model = OmniVisionModel(config.vision_config, add_token_compressor=False)
        head_dim = config.hidden_size // config.num_attention_heads
        self.rotary_emb = OmniRotaryEmbedding(head_dim, num_axes=3, theta=config.rope_theta)
        self.layers = nn.ModuleList([OmniVideoBlock(config) for _ in range(config.num_hidden_layers)])
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.compressor = OmniTokenCompressor(
            config,
            config.hidden_size,
            config.num_attention_heads,
            config.num_tokens_per_frame,
            config.compressor_intermediate_size,
            layer_norm_eps=config.layer_norm_eps,
            attention_dropout=config.attention_dropout,
        )
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.get_input_embeddings()

    def validate_inputs(self, pixel_values_videos: torch.Tensor, frame_mask: torch.Tensor | None) -> None:
        """Raise a `ValueError` that says what is wrong with the inputs, if anything."""
        if pixel_values_videos.dim() != 5:
            raise ValueError(
                "pixel_values_videos must have shape [batch, frames, channels, height, width], got "
                f"{tuple(pixel_values_videos.shape)}."
            )
        batch_size, num_frames, num_channels = pixel_values_videos.shape[:3]
        expected_channels = self.config.vision_config.backbone_config.num_channels
        if num_channels != expected_channels:
            raise ValueError(
                f"pixel_values_videos has {num_channels} channels, the vision backbone expects {expected_channels} "
                "(shape [batch, frames, channels, height, width])."
            )
        if num_frames == 0 or num_frames > self.config.max_frames:
            raise ValueError(
                f"Got {num_frames} frames; the model takes 1 to max_frames={self.config.max_frames} frames (sample "
                "fewer frames, e.g. with the video processor's `num_frames`)."
            )
        if frame_mask is None:
            return
        if tuple(frame_mask.shape) != (batch_size, num_frames):
            raise ValueError(
                f"frame_mask must have shape [batch, frames] = {(batch_size, num_frames)}, got "
                f"{tuple(frame_mask.shape)}."
            )
        lengths = right_padding_lengths(frame_mask, "frame_mask", ": the real frames first, then the padded ones")
        if not torch.compiler.is_compiling() and bool((lengths == 0).any()):
            raise ValueError("Every video needs at least one real frame: frame_mask[:, 0] must be 1.")

    def rotary_tables(
        self, batch_size: int, grid: tuple[int, int, int], device: torch.device, dtype: torch.dtype = torch.float32
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """The 3D rotary table of a `(frames, height, width)` grid, laid out for the spatial attention
        (`[B * T, h * w, head_dim]`) and for the temporal attention (`[B * h * w, T, head_dim]`), computed in float32
        and cast to `dtype` (the dtype the attention layers rotate in) once for all layers."""
        num_frames, height, width = grid
        cos, sin = self.rotary_emb(grid_positions(grid, device=device))
        spatial, temporal = [], []
        for table in (cos.to(dtype), sin.to(dtype)):
            table = table.view(1, num_frames, height * width, -1).expand(batch_size, -1, -1, -1)
            spatial.append(table.reshape(batch_size * num_frames, height * width, -1))
            temporal.append(table.transpose(1, 2).reshape(batch_size * height * width, num_frames, -1))
        return tuple(spatial), tuple(temporal)

    def temporal_attention_mask(
        self,
        frame_mask: torch.Tensor | None,
        batch_size: int,
        num_frames: int,
        num_patches: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor | None:
        """Frame-causal (when `config.frame_causal`) and frame-padding mask for the `B * N` temporal sequences, in the
        attention implementation's format."""
        padding_mask = None
        if frame_mask is not None:
            padding_mask = frame_mask.bool()[:, None, :].expand(batch_size, num_patches, num_frames)
            padding_mask = padding_mask.reshape(batch_size * num_patches, num_frames)
        return create_bidirectional_mask(
            self.config,
            # only the shape, dtype and device of the embeddings are read
            inputs_embeds=torch.empty((batch_size * num_patches, num_frames, 0), dtype=dtype, device=device),
            attention_mask=padding_mask,
            and_mask_function=causal_mask_function if self.config.frame_causal else None,
        )

    def pool(self, tokens: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """The pooled video embedding (see `config.pooling`): compressed `tokens [B, T * K, D]` and `frame_mask [B, T]`
        (1s then 0s) -> `[B, D]`, the mean of the tokens of every real frame (`"mean"`) or of each video's last real
        frame (`"last_frame"`), computed in float32."""
        batch_size, num_frames = frame_mask.shape
        if self.config.pooling == "last_frame":
            frames = tokens.view(batch_size, num_frames, self.config.num_tokens_per_frame, -1)
            last_frame = frame_mask.long().sum(1) - 1
            return frames[torch.arange(batch_size, device=tokens.device), last_frame].float().mean(1).to(tokens.dtype)
        valid = frame_mask.bool().repeat_interleave(self.config.num_tokens_per_frame, dim=1).unsqueeze(-1)
        # `where`, not a product with the mask: padded tokens must not reach the sum even if not finite
        return (torch.where(valid, tokens.float(), 0).sum(1) / valid.sum(1)).to(tokens.dtype)

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> OmniVideoModelOutput | tuple:
        r"""
        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
                Normalised frames, e.g. from [`OmniVideoVideoProcessor`]. Pixels beyond the last whole patch are
                ignored.
            frame_mask (`torch.LongTensor` of shape `(batch_size, num_frames)`, *optional*):
                1 for real frames, 0 for padding frames, which must come after the real ones. The pixels of padding
                frames are ignored (zeroed before the vision encoder, so NaN or huge padding is harmless); padding
                frames are never attended to, and are left out of the pooled embedding and the aux loss.

            Other keyword arguments with a value raise an error (`attention_mask` too: use `frame_mask`); the video
            processor's `video_metadata` is accepted and ignored.

        Example:

        ```python
        >>> import torch
        >>> from omni_encoders import OmniVideoConfig, OmniVideoModel
        >>> model = OmniVideoModel(OmniVideoConfig())
        >>> outputs = model(torch.randn(1, 16, 3, 384, 384))
        >>> outputs.last_hidden_state.shape, outputs.pooler_output.shape
        (torch.Size([1, 1024, 1152]), torch.Size([1, 1152]))
        ```
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self.check_unused_kwargs(kwargs, accepted=("video_metadata",), hints=FRAME_MASK_HINT)
        self.validate_inputs(pixel_values_videos, frame_mask)
        batch_size, num_frames = pixel_values_videos.shape[:2]
        if frame_mask is not None:
            frame_mask = frame_mask.to(pixel_values_videos.device)
            # Attention gives the padded frames a weight of 0, but 0 * NaN (or * inf) is NaN: their pixels are zeroed
            # (out of place: a copy of the input, only made when something is padded) so that nothing non-finite in
            # the padding can reach a real frame.
            if torch.compiler.is_compiling() or not bool(frame_mask.bool().all()):
                pixel_values_videos = pixel_values_videos.masked_fill(~frame_mask.bool()[:, :, None, None, None], 0)

        frames = pixel_values_videos.flatten(0, 1)
        height, width = self.vision_model.patch_grid(frames)
        features = self.vision_model(frames, return_dict=True).last_hidden_state  # [B * T, h * w, D]
        num_patches, hidden_size = features.shape[1:]
        hidden_states = features.view(batch_size, num_frames, num_patches, hidden_size)

        spatial_position_embeddings, temporal_position_embeddings = self.rotary_tables(
            batch_size, (num_frames, height, width), features.device, features.dtype
        )
        temporal_attention_mask = self.temporal_attention_mask(
            frame_mask, batch_size, num_frames, num_patches, features.dtype, features.device
        )
        del features  # `hidden_states` views it; let the first block's output replace it

        all_hidden_states = (hidden_states.flatten(1, 2),) if output_hidden_states else None
        spatial_attentions = () if output_attentions else None
        temporal_attentions = () if output_attentions else None
        router_logits = ()
        collect_attentions = returns_attention_weights(self.config, output_attentions)
        for block in self.layers:
            hidden_states, spatial_weights, temporal_weights, layer_router_logits = block(
                hidden_states,
                spatial_position_embeddings,
                temporal_position_embeddings,
                temporal_attention_mask=temporal_attention_mask,
            )
            router_logits += (layer_router_logits,)
            if output_hidden_states:
                all_hidden_states += (hidden_states.flatten(1, 2),)
            if collect_attentions:
                spatial_attentions += (spatial_weights,)
                temporal_attentions += (temporal_weights,)
        patch_embeddings = self.post_layernorm(hidden_states)

        tokens = self.compressor(patch_embeddings.flatten(0, 1))[0]  # [B * T, K, D]
        tokens = tokens.view(batch_size, num_frames * self.config.num_tokens_per_frame, hidden_size)
        if frame_mask is None:
            frame_mask = torch.ones(batch_size, num_frames, dtype=torch.long, device=tokens.device)
        attention_mask = frame_mask.long().repeat_interleave(self.config.num_tokens_per_frame, dim=1)
        pooled = self.pool(tokens, frame_mask)

        if router_logits:
            aux_loss = load_balancing_loss(router_logits, self.config.num_experts_per_tok, frame_mask)
        else:
            aux_loss = tokens.new_zeros((), dtype=torch.float32)

        output = OmniVideoModelOutput(
            last_hidden_state=tokens,
            attention_mask=attention_mask,
            pooler_output=pooled,
            patch_embeddings=patch_embeddings,
            aux_loss=aux_loss,
            hidden_states=all_hidden_states,
            attentions=spatial_attentions,
            temporal_attentions=temporal_attentions,
        )
        return output if return_dict else output.to_tuple()


class OmniVideoForVideoClassification(OmniVideoPreTrainedModel):
    """[`OmniVideoModel`] with a linear classifier on the pooled video embedding. With `labels`, the loss is the
    classification loss plus `router_aux_loss_coef` × the MoE load-balancing loss."""

    def __init__(self, config: OmniVideoConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = OmniVideoModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = (
            nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> OmniVideoClassifierOutput | tuple:
        r"""
        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
                Normalised frames.
            frame_mask (`torch.LongTensor` of shape `(batch_size, num_frames)`, *optional*):
                1 for real frames, 0 for padding frames at the end.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Class indices in `[0, num_labels)` (float targets for regression or multi-label problems); the loss
                follows `config.problem_type` as in transformers' classifiers.

            Other keyword arguments with a value raise an error (`attention_mask` too: use `frame_mask`); the video
            processor's `video_metadata` is accepted and ignored.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self.check_unused_kwargs(kwargs, accepted=("video_metadata",), hints=FRAME_MASK_HINT)
        outputs = self.model(
            pixel_values_videos,
            frame_mask=frame_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config)
            loss = loss + self.config.router_aux_loss_coef * outputs.aux_loss.to(loss.dtype)
        output = OmniVideoClassifierOutput(
            loss=loss,
            logits=logits,
            pooler_output=outputs.pooler_output,
            aux_loss=outputs.aux_loss,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            temporal_attentions=outputs.temporal_attentions,
        )
        return output if return_dict else output.to_tuple()


OmniVideoModel.register_for_auto_class("AutoModel")
OmniVideoForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")

__all__ = [
    "OmniVideoForVideoClassification",
    "OmniVideoModel",
    "OmniVideoModelOutput",
    "OmniVideoPreTrainedModel",
]

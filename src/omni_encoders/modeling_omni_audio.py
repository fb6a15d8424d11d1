# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""The omni-encoders audio encoder: a raw-waveform tokenizer (optionally residual-quantised), Conformer blocks with
rotary multi-head latent attention, a speaker encoder, and CTC / audio-classification heads.

Padding never changes results: a batch of clips padded to a common length gives, on each clip's valid frames, the
features of the clip run alone (in training and evaluation mode). Every layer that mixes time steps only ever sees
zeros or masked positions beyond a clip's end: the tokenizer zeroes padded positions after each convolution and
normalises with statistics over valid frames only, the Conformer's depthwise convolution sees zeros at padded frames,
attention masks padded keys, pooling is masked, and the speaker encoder's LSTM reads each clip backwards from its
own last valid frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_omni_audio import OmniAudioConfig, audio_frame_lengths
from .modeling_omni_common import (
    OmniChunkedAttention,
    OmniClassifierOutput,
    OmniLatentAttention,
    OmniLatentCache,
    OmniMLP,
    OmniPreTrainedModel,
    OmniRotaryEmbedding,
    activation,
    lengths_to_mask,
    map_frame_chunks,
    returns_attention_weights,
    right_padding_lengths,
)


@dataclass
class OmniAudioModelOutput(ModelOutput):
    """
    Output of [`OmniAudioModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_frames, hidden_size)`):
            Frame features after the last Conformer block (`num_frames = samples // 64` by default), pooled by
            `config.output_downsample_rate` (`ceil((samples // 64) / output_downsample_rate)` frames). Padded frames
            are zero.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Mean of `last_hidden_state` over each clip's valid frames.
        frame_mask (`torch.LongTensor` of shape `(batch_size, num_frames)`):
            1 for the valid frames of `last_hidden_state`, 0 for padding (see [`audio_frame_lengths`]).
        audio_codes (`torch.LongTensor` of shape `(batch_size, samples // 64, num_codebooks)`, *optional*):
            Residual quantisation codes when `config.use_quantizer`, at the tokenizer's frame rate; -1 at padded
            frames.
            [`OmniAudioModel.decode_audio_codes`] maps them back to the quantised features.
        commitment_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Quantiser loss when `config.use_quantizer`: codebook term plus `commitment_cost` × commitment term, summed
            over the codebooks, each a mean squared error over the valid frames' features. The heads add it to their
            loss.
        speaker_embeddings (`torch.FloatTensor` of shape `(batch_size, speaker_embedding_size)`, *optional*):
            L2-normalised speaker embeddings, when `speaker_features` were given.
        cache (`OmniLatentCache`, *optional*, returned when `use_cache=True`):
            What each attention layer keyed and valued: the normalised K/V latent and the shared rotary key of every
            frame, `kv_lora_rank + qk_rope_head_dim` values per frame and layer.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The tokenizer output followed by the output of every Conformer block, `(batch_size, samples // 64,
            hidden_size)` each (before the output rate reduction).
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Attention weights of every block, `(batch_size, num_heads, num_frames, num_frames)`, or with chunked
            attention `(batch_size, num_chunks, num_heads, attention_chunk_size, window)` over each chunk's window of
            keys (see [`OmniChunkedAttention`]) (eager attention only).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    frame_mask: torch.LongTensor | None = None
    audio_codes: torch.LongTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    speaker_embeddings: torch.FloatTensor | None = None
    cache: OmniLatentCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class OmniAudioCTCOutput(ModelOutput):
    """
    Output of [`OmniAudioForCTC`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is provided):
            CTC loss, plus the quantiser's `aux_loss` when `config.use_quantizer`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_frames, vocab_size)`):
            Per-frame scores over the character vocabulary (blank = `config.pad_token_id`).
        aux_loss (`torch.FloatTensor`, *optional*):
            The backbone's quantiser loss (`commitment_loss` of [`OmniAudioModelOutput`]).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Hidden states of the backbone, when `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention weights of the backbone, when `output_attentions=True` (eager attention only).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    aux_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def masked_mean(hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `hidden_states [B, T, D]` over the positions where `mask [B, T]` is true (all positions if None)."""
    if mask is None:
        return hidden_states.mean(dim=1)
    mask = mask.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def pool_frames(
    hidden_states: torch.Tensor, frame_mask: torch.Tensor | None, rate: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Output rate reduction: the mean of every `rate` consecutive frames, over the valid ones only.

    Args:
        hidden_states: `[B, T, D]` frame features.
        frame_mask: `[B, T]`, True on valid frames (a prefix of each row; None: all valid).
        rate: frames per output frame.

    Returns:
        `(pooled [B, ceil(T / rate), D], pooled mask [B, ceil(T / rate)] or None)`. A window that is partly padding
        (the last one of a clip) is the mean of its valid frames, so a padded batch still gives every clip its own
        result; windows with no valid frame are zero and masked out.
    """
    batch, length, dim = hidden_states.shape
    num_windows = -(-length // rate)
    pad = num_windows * rate - length
    weights = torch.ones(batch, length, dtype=hidden_states.dtype, device=hidden_states.device)
    if frame_mask is not None:
        weights = frame_mask.to(hidden_states.dtype)
    weights = nn.functional.pad(weights, (0, pad)).view(batch, num_windows, rate, 1)
    windows = nn.functional.pad(hidden_states, (0, 0, 0, pad)).view(batch, num_windows, rate, dim)
    count = weights.sum(dim=2)
    pooled = (windows * weights).sum(dim=2) / count.clamp(min=1)
    return pooled, None if frame_mask is None else count[..., 0] > 0


class OmniAudioStreamState:
    """What [`OmniAudioModel.encode_stream`] keeps between audio pieces (one stream, batch size 1):

    - `samples`: the waveform from sample `sample_start` on: the samples of the attention chunk being filled and the
      receptive field of its tokenizer frames (a few dozen samples more by default), not the whole audio; they are
      tokenized once they complete a chunk;
    - `pending_frames [1, n, D]`: tokenizer frames not yet encoded (fewer than `attention_chunk_size`);
    - `cache`: an [`OmniLatentCache`] with the K/V latents and rotary keys of the last `attention_left_chunks` chunks of
      every layer (`kv_lora_rank + qk_rope_head_dim` values per frame and layer);
    - `conv_inputs`: per layer, the last `conv_kernel_size - 1` inputs of the causal depthwise convolution;
    - `tokenizer_norms`: with causal tokenizer norms, each layer's running sums ([`OmniCausalNormState`], two values
      per channel group);
    - `unpooled [1, n, D]`: encoded frames waiting for a complete `output_downsample_rate` window.
    """

    def __init__(self):
        self.samples: torch.Tensor | None = None
        self.sample_start = 0
        self.num_samples = 0
        self.tokenized_frames = 0
        self.encoded_frames = 0
        self.pending_frames: torch.Tensor | None = None
        self.unpooled: torch.Tensor | None = None
        self.cache = OmniLatentCache()
        self.conv_inputs: list[torch.Tensor] = []
        self.tokenizer_norms: list[OmniCausalNormState] = []

    def update_conv_inputs(self, hidden_states: torch.Tensor, layer_idx: int, context: int) -> torch.Tensor:
        """Prepend layer `layer_idx`'s last `context` depthwise-convolution inputs (zeros at the stream start) to
        `hidden_states [1, T, D]`, and keep the last `context` frames of the result for the next piece."""
        if layer_idx == len(self.conv_inputs):
            self.conv_inputs.append(hidden_states.new_zeros(hidden_states.shape[0], context, hidden_states.shape[-1]))
        hidden_states = torch.cat([self.conv_inputs[layer_idx], hidden_states], dim=1)
        self.conv_inputs[layer_idx] = hidden_states[:, hidden_states.shape[1] - context :]
        return hidden_states

    def memory_bytes(self) -> int:
        """Bytes held between pieces (the latent cache, convolution contexts and buffers)."""
        tensors = [*self.conv_inputs, self.samples, self.pending_frames, self.unpooled]
        tensors += [norm.sums for norm in self.tokenizer_norms]
        return self.cache.memory_bytes() + sum(t.numel() * t.element_size() for t in tensors if t is not None)


# --------------------------------------------------------------------------------------------------------------------
# Waveform tokenizer
# --------------------------------------------------------------------------------------------------------------------


class OmniCausalNormState:
    """What a causal tokenizer norm keeps between the calls of a stream ([`OmniAudioModel.encode_stream`]): the sum and
    the sum of squares of every channel group over the frames of the stream counted so far.

    The tokenizer sets `call_offset` (the stream index of the call's first frame) and `count_until` (the stream index
    up to which the call's frames are final and join the sums) before each call; the call's frames before `counted`
    are left over from the previous one and do not count again.
    """

    def __init__(self):
        self.sums: torch.Tensor | None = None  # [1, 2, G, 1] float64: sums and sums of squares
        self.counted = 0
        self.call_offset = 0
        self.count_until = 0


# Frames per step of the causal norm's running sums: bounds their float64 buffers on long audio (a 10-minute clip has
# 4.8 M frames at the first tokenizer layer).
CAUSAL_NORM_BLOCK_FRAMES = 65536


class OmniMaskedGroupNorm(nn.GroupNorm):
    """GroupNorm over frame-major `[B, T, C]` features whose statistics only count the valid time steps of each item.

    What the mean and variance of a channel group average over (`statistics`):

    - `"clip"`: the group's channels over all valid steps of the item. Plain GroupNorm averages over the whole time
      axis, so the padding of a batch would shift the statistics of the shorter clips: with `mask [B, T, 1]`
      (1 = valid) they come from the item's valid steps alone; without a mask this is `nn.GroupNorm` (torch's fused
      kernel).
    - `"frame"`: the group's channels within each step, so a frame's output never depends on other frames.
    - `"causal"`: the group's channels over the steps up to and including each step (running statistics), so a frame
      depends on the past and never on the future, as streaming needs, while the level of the signal relative to what
      came before (its loudness contour) survives. Valid steps are a prefix, so padding never reaches them.

    Statistics are computed in float32 (the causal sums in float64).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, statistics: str = "clip"):
        super().__init__(num_groups, num_channels, eps=eps)
        if statistics not in ("clip", "frame", "causal"):
            raise ValueError(f"statistics must be 'clip', 'frame' or 'causal', got {statistics!r}.")
        self.statistics = statistics

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None = None,
        stream: OmniCausalNormState | None = None,
    ) -> torch.Tensor:
        """`hidden_states [B, T, C]`, `mask [B, T, 1]` or None -> `[B, T, C]`. `stream`: with causal statistics, the
        running sums of the frames a stream has already seen (the call's frames continue them)."""
        batch, length, channels = hidden_states.shape
        if self.statistics == "frame":
            # A LayerNorm over each group's channels at every step: one fused pass over a free `[B, T, G, C / G]` view.
            grouped = hidden_states.reshape(batch, length, self.num_groups, -1)
            normed = nn.functional.layer_norm(grouped, grouped.shape[-1:], eps=self.eps)
            normed = normed.reshape(batch, length, channels)
        elif self.statistics == "causal":
            normed = self._causal_normalise(hidden_states, stream)
        elif mask is None:
            # torch's fused kernel on the channels-last `[B, C, 1, T]` view of the frame-major memory (no copy)
            normed = nn.functional.group_norm(
                hidden_states.transpose(1, 2).unsqueeze(2), self.num_groups, self.weight, self.bias, self.eps
            )
            return normed.squeeze(2).transpose(1, 2)
        else:
            grouped = hidden_states.float().reshape(batch, length, self.num_groups, -1)
            weights = mask.float().reshape(batch, length, 1, 1)
            count = weights.sum(dim=1, keepdim=True).clamp(min=1) * grouped.shape[-1]
            mean = (grouped * weights).sum(dim=(1, 3), keepdim=True) / count
            variance = ((grouped - mean).square() * weights).sum(dim=(1, 3), keepdim=True) / count
            normed = ((grouped - mean) * torch.rsqrt(variance + self.eps)).reshape(batch, length, channels)
            normed = normed.to(hidden_states.dtype)
        return torch.addcmul(self.bias, normed, self.weight) if self.affine else normed

    def _causal_normalise(self, hidden_states: torch.Tensor, stream: OmniCausalNormState | None) -> torch.Tensor:
        """Normalise step `t` by the statistics of steps `<= t` (of the whole stream with `stream`), block by block
        of `CAUSAL_NORM_BLOCK_FRAMES` steps, each block's running sums continuing the last one's."""
        batch, length, channels = hidden_states.shape
        group_size = channels // self.num_groups
        # the stream index of step 0; the first step that counts (earlier ones are stale); the end of the final steps
        offset, first, final_end = 0, 0, 0
        carry = hidden_states.new_zeros(batch, 2, self.num_groups, 1, dtype=torch.float64)
        if stream is not None:
            offset, first = stream.call_offset, stream.counted - stream.call_offset
            final_end = stream.count_until - offset
            if stream.sums is not None:
                carry = carry + stream.sums
        normed = torch.empty_like(hidden_states)
        for begin in range(0, length, CAUSAL_NORM_BLOCK_FRAMES):
            block = hidden_states[:, begin : begin + CAUSAL_NORM_BLOCK_FRAMES].float()
            sums = self._group_sums(block)  # [B, 2, G, t]
            if begin < first:
                sums[..., : first - begin] = 0
            running = sums.cumsum(dim=-1, dtype=torch.float64) + carry
            carry = running[..., -1:]
            if first < final_end and begin < final_end <= begin + block.shape[1]:
                # the stream's sums up to its last final step (a copy: a view would keep the block's buffer alive)
                stream.sums = running[..., final_end - 1 - begin : final_end - begin].clone()
            steps = torch.arange(begin, begin + block.shape[1], device=block.device)
            count = (offset + steps + 1) * group_size
            mean = running[:, 0] / count
            scale = torch.rsqrt((running[:, 1] / count - mean.square()).clamp(min=0) + self.eps)
            # (x - mean) * scale as one pass, x * scale + (-mean * scale), with both per (step, group): `[B, t, G, 1]`
            shift = (-mean * scale).float().mT.contiguous()[..., None]
            scale = scale.float().mT.contiguous()[..., None]
            grouped = block.view(batch, -1, self.num_groups, group_size)
            normed[:, begin : begin + block.shape[1]] = torch.addcmul(shift, grouped, scale).reshape(block.shape)
        if stream is not None:
            stream.counted = max(stream.counted, stream.count_until)
        return normed

    def _group_sums(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """float32 `[B, t, C]` -> the sum and the sum of squares of each step over each group's channels,
        `[B, 2, G, t]`: two small matrix products with the `[G, C]` group indicator, time on the last (contiguous) axis
        for the running sums."""
        groups = torch.arange(self.num_channels, device=hidden_states.device) // (self.num_channels // self.num_groups)
        indicator = (groups == torch.arange(self.num_groups, device=groups.device)[:, None]).float()
        with torch.autocast(hidden_states.device.type, enabled=False):  # the sums stay float32 under autocast
            return torch.stack([indicator @ hidden_states.mT, indicator @ hidden_states.square().mT], dim=1)


# Input channels below which the tokenizer's bfloat16 CPU convolutions avoid oneDNN (see OmniFrameMajorConv1d): the
# wrong outputs were seen with 8, 16 and 24 input channels and kernels of 4 and 8, never with 32 or more.
NARROW_BF16_CHANNELS = 32


def bfloat16_on_cpu(hidden_states: torch.Tensor) -> bool:
    """Whether a CPU convolution of `hidden_states` runs in bfloat16: a bf16 input, or CPU autocast to bf16 (which
    casts the input inside the convolution, e.g. in `Trainer`'s evaluation with `bf16=True`)."""
    if hidden_states.dtype == torch.bfloat16:
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


class OmniFrameMajorConv1d(nn.Conv1d):
    """`nn.Conv1d` (the same parameters and state dict) on frame-major features: `[B, L, C_in]` -> `[B, L_out, C_out]`.

    It runs as a channels-last 2D convolution on the `[B, C, 1, L]` view of the frame-major memory, which oneDNN reads
    and writes as it is: `Conv1d` on `[B, C, L]` converts its input and output to and from its blocked layout at every
    call, which took half of the waveform tokenizer's time, and more than that on long audio.

    In bfloat16 on the CPU a layer with fewer than `NARROW_BF16_CHANNELS` input channels runs as a matrix product over
    its input windows instead (`unfold`, then `linear`): PyTorch 2.13's oneDNN bfloat16 convolution returns wrong
    outputs (errors as large as the outputs) for some such layers and input lengths on AMX CPUs, e.g. 16 input
    channels, kernel 8, stride 4 and a length divisible by 4. Narrow layers cost little either way.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if (
            hidden_states.device.type == "cpu"
            and self.in_channels < NARROW_BF16_CHANNELS
            and (self.groups, self.dilation[0], self.padding[0]) == (1, 1, 0)
            and bfloat16_on_cpu(hidden_states)
        ):
            windows = hidden_states.unfold(1, self.kernel_size[0], self.stride[0])  # [B, L_out, C_in, kernel]
            return nn.functional.linear(windows.flatten(2), self.weight.flatten(1), self.bias)
        output = nn.functional.conv2d(
            hidden_states.transpose(1, 2).unsqueeze(2),
            self.weight.unsqueeze(2),
            self.bias,
            stride=(1, self.stride[0]),
            padding=(0, self.padding[0]),
            dilation=(1, self.dilation[0]),
            groups=self.groups,
        )
        return output.squeeze(2).transpose(1, 2)


def _cpu_autocast_training(weight: torch.Tensor) -> bool:
    """Whether `weight`'s layer runs under CPU autocast with its gradient wanted."""
    return weight.device.type == "cpu" and torch.is_autocast_enabled("cpu") and torch.is_grad_enabled() and (
        weight.requires_grad
    )


class OmniAudioConvLayer(nn.Module):
    """Strided convolution -> masked GroupNorm -> SiLU, mapping `L` steps to exactly `L // stride`, on frame-major
    `[B, L, C]` features.

    The input is padded by `(kernel - 1) // 2` zeros on the left and `kernel - stride - (kernel - 1) // 2` on the
    right (a negative right padding crops), so every output frame is centred on its input window and the output length
    is `L // stride`. Every input step reaches a frame when `kernel - (kernel - 1) // 2 >= stride`, as in the default
    64x and 320x layouts; a narrower kernel, such as `kernel == stride == 4`, leaves the last step or two of a clip
    out (the centring is worth more: moving such windows to start at their frame instead lowered the held-out accuracy
    of the tour's spoken-digit classifier from 0.63 to 0.58, mean of four seeds).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        num_groups: int,
        eps: float,
        norm_statistics: str = "clip",
    ):
        super().__init__()
        self.stride = stride
        self.kernel_size = kernel_size
        left = (kernel_size - 1) // 2
        self.padding = (left, kernel_size - stride - left)
        self.conv = OmniFrameMajorConv1d(in_channels, out_channels, kernel_size, stride=stride)
        self.norm = OmniMaskedGroupNorm(num_groups, out_channels, eps=eps, statistics=norm_statistics)
        self.activation = activation("silu", owner=self, producer="norm")

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None = None,
        norm_stream: OmniCausalNormState | None = None,
    ) -> torch.Tensor:
        """`hidden_states [B, L, C_in]` (zero beyond each item's length), `mask [B, L // stride, 1]` of the output ->
        `[B, L // stride, C_out]`. `norm_stream`: a causal norm's running sums over a stream (see
        [`OmniMaskedGroupNorm`]).

        The features stay frame-major from layer to layer (see [`OmniFrameMajorConv1d`]).
        """
        hidden_states = nn.functional.pad(hidden_states, (0, 0, *self.padding))
        if _cpu_autocast_training(self.conv.weight):
            # PyTorch 2.13's oneDNN bfloat16 convolution on AMX CPUs now and then returns a NaN weight gradient when it
            # runs on several threads (seen in about one backward pass in 30 of the same batch, never with one
            # thread): under CPU autocast, training keeps these convolutions in float32.
            with torch.autocast("cpu", enabled=False):
                hidden_states = self.conv(hidden_states.float())
        else:
            hidden_states = self.conv(hidden_states)
        hidden_states = self.activation(self.norm(hidden_states, mask, norm_stream))
        return hidden_states if mask is None else hidden_states * mask


class OmniAudioResidualVectorQuantizer(nn.Module):
    """Residual vector quantisation with `num_codebooks` stages of `codebook_size` entries.

    Stage `i` picks the entry nearest (Euclidean) to the residual left by the stages before it; the quantised features
    are the sum of the picked entries. Gradients reach the encoder through the straight-through estimator and the
    commitment term, and the codebooks through the codebook term of the loss.
    """

    def __init__(self, config: OmniAudioConfig):
        super().__init__()
        self.commitment_cost = config.commitment_cost
        self.codebooks = nn.ModuleList(
            [nn.Embedding(config.codebook_size, config.hidden_size) for _ in range(config.num_codebooks)]
        )

    def forward(
        self, features: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.LongTensor, torch.Tensor]:
        """
        Args:
            features: `[B, T, D]` continuous features.
            frame_mask: `[B, T]` boolean, True on valid frames.

        Returns:
            `(quantised features [B, T, D]` (straight-through; zero at padded frames), `codes [B, T, num_codebooks]`
            (-1 at padded frames), `loss` (scalar))`.
        """
        valid = frame_mask
        if valid is None:
            valid = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        weights = valid.to(torch.float32).unsqueeze(-1)
        denominator = weights.sum().clamp(min=1) * features.shape[-1]

        residual = features.float()
        quantized = torch.zeros_like(residual)
        loss = features.new_zeros((), dtype=torch.float32)
        codes = []
        for codebook in self.codebooks:
            entries = codebook.weight.float()
            # argmin ||r - e||^2 = argmin (||e||^2 - 2 r.e), computed as one matmul for all frames
            distances = entries.square().sum(-1) - 2 * residual @ entries.T
            indices = distances.argmin(dim=-1)
            selected = nn.functional.embedding(indices, entries)
            codebook_loss = ((selected - residual.detach()).square() * weights).sum() / denominator
            commitment_loss = ((residual - selected.detach()).square() * weights).sum() / denominator
            loss = loss + codebook_loss + self.commitment_cost * commitment_loss
            quantized = quantized + selected
            residual = residual - selected.detach()
            codes.append(indices)

        codes = torch.stack(codes, dim=-1).masked_fill(~valid.unsqueeze(-1), -1)
        quantized = (quantized * weights).to(features.dtype)
        # straight-through: the value of `quantized`, the gradient of the identity
        return features + (quantized - features).detach(), codes, loss

    def decode(self, codes: torch.LongTensor) -> torch.Tensor:
        """`codes [B, T, num_codebooks]` -> quantised features `[B, T, D]`: the sum of the selected entries of every
        codebook (zero where codes are -1)."""
        if codes.shape[-1] != len(self.codebooks):
            raise ValueError(
                f"Expected codes with {len(self.codebooks)} codebooks in the last dim, got {tuple(codes.shape)}."
            )
        valid = codes >= 0
        quantized = 0
        for stage, codebook in enumerate(self.codebooks):
            selected = codebook(codes[..., stage].clamp(min=0))
            quantized = quantized + selected * valid[..., stage, None].to(selected.dtype)
        return quantized


class OmniAudioWaveformTokenizer(nn.Module):
    """Raw waveform -> frame features: strided convolutions (64× downsampling by default), a projection to the model
    width and optional residual vector quantisation."""

    def __init__(self, config: OmniAudioConfig):
        super().__init__()
        in_channels = [1] + config.tokenizer_channels[:-1]
        self.conv_layers = nn.ModuleList(
            [
                OmniAudioConvLayer(
                    c_in,
                    c_out,
                    kernel,
                    stride,
                    config.tokenizer_norm_groups,
                    config.layer_norm_eps,
                    norm_statistics=config.tokenizer_norm_statistics,
                )
                for c_in, c_out, kernel, stride in zip(
                    in_channels, config.tokenizer_channels, config.tokenizer_kernel_sizes, config.tokenizer_strides
                )
            ]
        )
        self.output_proj = nn.Linear(config.tokenizer_channels[-1], config.hidden_size)
        self.quantizer = OmniAudioResidualVectorQuantizer(config) if config.use_quantizer else None

    def receptive_field(self) -> list[tuple[int, int, int, int]]:
        """What output frame `t` reads at every level: one `(steps_per_level, multiplier, left, right)` per level,
        from the waveform (level 0, 1 sample per step) up to the last convolution's output: frame `t` depends on the
        steps `[multiplier * t - left, multiplier * t + right]` of that level (zeros outside it). Streaming uses it to
        tell which frames a prefix of the audio already determines."""
        levels = [(math.prod(layer.stride for layer in self.conv_layers), 1, 0, 0)]
        for layer in reversed(self.conv_layers):
            steps, multiplier, left, right = levels[0]
            levels.insert(
                0,
                (
                    steps // layer.stride,
                    multiplier * layer.stride,
                    left * layer.stride + layer.padding[0],
                    right * layer.stride - layer.padding[0] + layer.kernel_size - 1,
                ),
            )
        return levels

    def complete_frames(self, num_samples: int) -> int:
        """Leading frames that the first `num_samples` samples of a longer stream already determine exactly: frames
        whose receptive field, at every level, lies within what those samples give that level."""
        counts = []
        for steps, multiplier, _, right in self.receptive_field():
            available = num_samples // steps
            counts.append(max(0, -(-(available - right) // multiplier)))
        return min(counts)

    def first_sample(self, frame: int) -> int:
        """The first sample that frame `frame` (and every later frame) reads, clamped at 0."""
        _, multiplier, left, _ = self.receptive_field()[0]
        return max(0, multiplier * frame - left)

    def start_stream_call(
        self, norm_states: list[OmniCausalNormState], sample_start: int, frames_end: int
    ) -> list[OmniCausalNormState]:
        """Prepare the causal norms' stream states (one per layer, created on the first call) for a call on the samples
        from stream sample `sample_start` on, after which the stream's first `frames_end` output frames are final:
        every layer's frames that those frames read are final too, and join its running sums."""
        if not norm_states:
            norm_states.extend(OmniCausalNormState() for _ in self.conv_layers)
        for state, (steps, multiplier, left, _) in zip(norm_states, self.receptive_field()[1:]):
            state.call_offset = sample_start // steps
            state.count_until = max(0, multiplier * frames_end - left)
        return norm_states

    def forward(
        self,
        input_values: torch.Tensor,
        sample_lengths: torch.Tensor | None = None,
        norm_states: list[OmniCausalNormState] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.LongTensor | None, torch.Tensor | None]:
        """
        Args:
            input_values: `[B, S]` waveforms.
            sample_lengths: `[B]` valid samples per clip (None: all valid).
            norm_states: with causal norms, one running state per layer over a stream (see `start_stream_call`).

        Returns:
            `(features [B, S // 64, D], frame mask [B, S // 64] or None, codes or None, quantiser loss or None)`.
        """
        hidden_states = input_values[..., None]  # [B, S, 1]: frame-major from the start (see OmniAudioConvLayer)
        lengths = sample_lengths
        mask = None
        if lengths is not None:
            hidden_states = hidden_states * lengths_to_mask(lengths, hidden_states.shape[1])[..., None]
        for index, layer in enumerate(self.conv_layers):
            if lengths is not None:
                lengths = audio_frame_lengths(lengths, layer.stride)
                mask = lengths_to_mask(lengths, hidden_states.shape[1] // layer.stride)[..., None]
            hidden_states = layer(
                hidden_states,
                mask.to(hidden_states.dtype) if mask is not None else None,
                norm_states[index] if norm_states is not None else None,
            )
        features = self.output_proj(hidden_states)
        frame_mask = None if mask is None else mask[..., 0]
        if frame_mask is not None:
            features = features * frame_mask[..., None].to(features.dtype)
        if self.quantizer is None:
            return features, frame_mask, None, None
        features, codes, loss = self.quantizer(features, frame_mask)
        return features, frame_mask, codes, loss


# --------------------------------------------------------------------------------------------------------------------
# Conformer
# --------------------------------------------------------------------------------------------------------------------


class OmniAudioConvModule(nn.Module):
    """Conformer convolution module: LayerNorm -> pointwise conv (2D) + GLU -> depthwise conv -> LayerNorm -> SiLU ->
    pointwise conv.

    The norm after the depthwise convolution normalises each frame over channels (the original Conformer's BatchNorm
    would mix the statistics of padded frames and of other clips in the batch during training). Padded frames are
    zeroed before the depthwise convolution, so they read exactly like the convolution's own zero padding.

    With `config.conv_module_causal` the depthwise convolution is causal: frame `t` reads frames `t - kernel + 1 .. t`
    (zeros before the start, or the previous piece's frames when streaming), so a chunk needs no future frames.
    """

    def __init__(self, config: OmniAudioConfig):
        super().__init__()
        self.causal = config.conv_module_causal
        hidden_size = config.hidden_size
        self.layer_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.pointwise_conv1 = nn.Conv1d(hidden_size, 2 * hidden_size, kernel_size=1)
        self.depthwise_conv = nn.Conv1d(
            hidden_size,
            hidden_size,
            config.conv_kernel_size,
            padding=(config.conv_kernel_size - 1) // 2,
            groups=hidden_size,
        )
        self.norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.activation = activation("silu", owner=self, producer="norm")
        self.pointwise_conv2 = nn.Conv1d(hidden_size, hidden_size, kernel_size=1)

    def forward(
        self,
        hidden_states: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        stream_state: OmniAudioStreamState | None = None,
        layer_idx: int = 0,
    ) -> torch.Tensor:
        """`hidden_states [B, T, D]`, `frame_mask [B, T, 1]` (1 = valid) -> `[B, T, D]`.

        Computed in the `[B, T, D]` layout throughout, with no transposing copy: the pointwise convolutions are
        matmuls with their `[out, in, 1]` kernels, and the depthwise one runs as a channels-last 2D convolution over a
        `[B, D, 1, T]` view (on CPU about 20x faster than `Conv1d` on `[B, D, T]` in bf16).

        With a `stream_state` (causal convolution only), the depthwise convolution reads the last `kernel - 1` input
        frames of layer `layer_idx`'s previous piece from it instead of zeros, and stores this piece's.
        """
        hidden_states = map_frame_chunks(self._gated_pointwise, hidden_states, frame_mask)
        conv = self.depthwise_conv
        padding = conv.padding[0]
        if self.causal:
            context = conv.kernel_size[0] - 1
            if stream_state is not None:
                hidden_states = stream_state.update_conv_inputs(hidden_states, layer_idx, context)
            else:
                hidden_states = nn.functional.pad(hidden_states, (0, 0, context, 0))
            padding = 0
        hidden_states = nn.functional.conv2d(
            hidden_states.transpose(1, 2).unsqueeze(2),  # [B, D, 1, T], channels-last in memory
            conv.weight.unsqueeze(2),
            conv.bias,
            padding=(0, padding),
            groups=conv.groups,
        )
        hidden_states = hidden_states.squeeze(2).transpose(1, 2)  # [B, T, D], contiguous
        return map_frame_chunks(self._output_pointwise, hidden_states)

    def _gated_pointwise(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        """LayerNorm -> pointwise conv to `2 D` -> GLU -> padded frames zeroed (frame-wise)."""
        hidden_states = self.layer_norm(hidden_states)
        hidden_states = nn.functional.linear(
            hidden_states, self.pointwise_conv1.weight.squeeze(-1), self.pointwise_conv1.bias
        )
        hidden_states = nn.functional.glu(hidden_states, dim=-1)
        return hidden_states if frame_mask is None else hidden_states * frame_mask

    def _output_pointwise(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """LayerNorm -> SiLU -> pointwise conv (frame-wise)."""
        hidden_states = self.activation(self.norm(hidden_states))
        return nn.functional.linear(hidden_states, self.pointwise_conv2.weight.squeeze(-1), self.pointwise_conv2.bias)


class OmniAudioConformerBlock(GradientCheckpointingLayer):
    """Macaron Conformer block with rotary multi-head latent attention (all modules pre-norm, residual):

    `x + ½·FFN(x)` -> `+ RMLA` -> `+ ConvModule` -> `+ ½·FFN` -> LayerNorm.
    """

    def __init__(self, config: OmniAudioConfig, layer_idx: int):
        super().__init__()
        hidden_size = config.hidden_size
        self.ff1_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.ff1 = OmniMLP(hidden_size, config.intermediate_size, config.hidden_act)
        self.attn_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attn = OmniLatentAttention(
            config,
            hidden_size,
            num_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            kv_lora_rank=config.kv_lora_rank,
            qk_head_dim=config.head_dim,
            qk_rope_head_dim=config.qk_rope_head_dim,
            v_head_dim=config.head_dim,
            attention_dropout=config.attention_dropout,
            layer_idx=layer_idx,
            eps=config.layer_norm_eps,
        )
        self.layer_idx = layer_idx
        self.conv = OmniAudioConvModule(config)
        self.ff2_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.ff2 = OmniMLP(hidden_size, config.intermediate_size, config.hidden_act)
        self.final_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        cache: OmniLatentCache | None = None,
        chunked_attention: OmniChunkedAttention | None = None,
        stream_state: OmniAudioStreamState | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: `[B, T, D]`.
            position_embeddings: `(cos, sin)` `[T, qk_rope_head_dim]` of the frame positions.
            attention_mask: padding mask over the `T` keys in the attention implementation's format.
            frame_mask: `[B, T, 1]` 1 on valid frames (None: all valid); padded frames are zero on output.
            cache: an [`OmniLatentCache`] that records this layer's K/V latents (when streaming: the left chunks').
            chunked_attention: chunked attention instead of full attention (see [`OmniChunkedAttention`]).
            stream_state: the state of [`OmniAudioModel.encode_stream`] (the causal convolution's left context).

        Returns:
            `(hidden_states [B, T, D], attention weights [B, H, T, T] (chunked: [B, num_chunks, H, C, window]) or
            None)`.
        """
        hidden_states = map_frame_chunks(self._first_feed_forward, hidden_states)
        attn_output, attn_weights = self.attn(
            self.attn_norm(hidden_states),
            position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            chunked_attention=chunked_attention,
        )
        # `hidden_states` is now this block's own buffer: on long inputs the residual sums update it in place.
        hidden_states = map_frame_chunks(self._add_residual, hidden_states, attn_output, out=hidden_states)
        conv_output = self.conv(hidden_states, frame_mask, stream_state=stream_state, layer_idx=self.layer_idx)
        hidden_states = map_frame_chunks(
            self._second_feed_forward, hidden_states, conv_output, frame_mask, out=hidden_states
        )
        return hidden_states, attn_weights

    # The frame-wise steps of the block, run a chunk of frames at a time on long inputs without autograd
    # (`map_frame_chunks`): their buffers then stay small and in cache.

    def _first_feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + 0.5 * self.dropout(self.ff1(self.ff1_norm(hidden_states)))

    def _add_residual(self, hidden_states: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.dropout(update)

    def _second_feed_forward(
        self, hidden_states: torch.Tensor, conv_output: torch.Tensor, frame_mask: torch.Tensor | None
    ) -> torch.Tensor:
        hidden_states = hidden_states + self.dropout(conv_output)
        hidden_states = hidden_states + 0.5 * self.dropout(self.ff2(self.ff2_norm(hidden_states)))
        hidden_states = self.final_norm(hidden_states)
        return hidden_states if frame_mask is None else hidden_states * frame_mask


# --------------------------------------------------------------------------------------------------------------------
# Speaker encoder
# --------------------------------------------------------------------------------------------------------------------


class OmniAudioSpeakerConvLayer(nn.Module):
    """Convolution over mel frames -> ReLU -> per-frame LayerNorm over channels (no statistics over time)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, eps: float):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2)
        self.activation = nn.ReLU()
        self.norm = nn.LayerNorm(out_channels, eps=eps)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`hidden_states [B, C_in, F]`, `mask [B, 1, F]` -> `[B, C_out, F]`, zero at padded frames."""
        if mask is not None:
            hidden_states = hidden_states * mask
        hidden_states = self.activation(self.conv(hidden_states))
        hidden_states = self.norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        return hidden_states if mask is None else hidden_states * mask


def reverse_within_lengths(hidden_states: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each row of `hidden_states [B, T, C]` over its first `lengths[b]` steps, leaving the padding in place
    (its own inverse). Without lengths, a plain flip over time."""
    if lengths is None:
        return hidden_states.flip(1)
    steps = torch.arange(hidden_states.shape[1], device=hidden_states.device)
    index = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    return hidden_states.gather(1, index[..., None].expand_as(hidden_states))


class OmniAudioBidirectionalLSTM(nn.Module):
    """Stacked bidirectional LSTM over padded sequences, without packing.

    Every layer runs one LSTM per direction; the backward one reads each sequence reversed within its own length, so
    it starts at the sequence's last valid step and padding (kept at the end) never reaches valid outputs. Unlike
    `pack_padded_sequence`, this needs no device-to-host copy of the lengths and compiles with `torch.compile(...,
    fullgraph=True)` (dynamo traces LSTMs once `torch._dynamo.config.allow_rnn = True`).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        sizes = [input_size] + [2 * hidden_size] * (num_layers - 1)
        self.forward_layers = nn.ModuleList([nn.LSTM(size, hidden_size, batch_first=True) for size in sizes])
        self.backward_layers = nn.ModuleList([nn.LSTM(size, hidden_size, batch_first=True) for size in sizes])

    def forward(self, hidden_states: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`hidden_states [B, T, C]`, `lengths [B]` (None: all valid) -> `[B, T, 2 * hidden_size]`, valid steps
        equal to those of each sequence alone."""
        for forward_layer, backward_layer in zip(self.forward_layers, self.backward_layers):
            forward_output, _ = forward_layer(hidden_states)
            backward_output, _ = backward_layer(reverse_within_lengths(hidden_states, lengths))
            hidden_states = torch.cat([forward_output, reverse_within_lengths(backward_output, lengths)], dim=-1)
        return hidden_states


class OmniAudioSpeakerEncoder(nn.Module):
    """Zero-shot speaker encoder: log-mel frames of a reference -> convolutions -> bidirectional LSTM -> attentive
    pooling -> projection -> L2-normalised embedding.

    Padded frames never reach the result: the convolutions see zeros there, the LSTM's backward direction starts at
    each clip's own last frame and the pooling weights of padded frames are zero.
    """

    def __init__(self, config: OmniAudioConfig):
        super().__init__()
        hidden_size = config.speaker_hidden_size
        self.num_mel_bins = config.speaker_num_mel_bins
        self.frame_encoder = nn.ModuleList(
            [
                OmniAudioSpeakerConvLayer(
                    config.speaker_num_mel_bins if index == 0 else hidden_size,
                    hidden_size,
                    config.speaker_conv_kernel_size,
                    config.layer_norm_eps,
                )
                for index in range(config.speaker_num_conv_layers)
            ]
        )
        self.lstm = OmniAudioBidirectionalLSTM(hidden_size, hidden_size, config.speaker_num_lstm_layers)
        self.attention = nn.Sequential(nn.Linear(2 * hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1))
        self.output_proj = nn.Linear(2 * hidden_size, config.speaker_embedding_size)

    def forward(
        self, speaker_features: torch.Tensor, speaker_attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            speaker_features: `[B, F, num_mel_bins]` log-mel frames of the reference audio.
            speaker_attention_mask: `[B, F]`, 1 on valid frames (a prefix of each row).

        Returns:
            `[B, speaker_embedding_size]` L2-normalised speaker embeddings.
        """
        batch, num_frames, _ = speaker_features.shape
        dtype = self.output_proj.weight.dtype
        hidden_states = speaker_features.to(dtype).transpose(1, 2)
        lengths = mask = conv_mask = None
        if speaker_attention_mask is not None:
            lengths = speaker_attention_mask.sum(-1).long()
            mask = lengths_to_mask(lengths, num_frames)
            conv_mask = mask[:, None].to(dtype)
        for layer in self.frame_encoder:
            hidden_states = layer(hidden_states, conv_mask)
        hidden_states = self.lstm(hidden_states.transpose(1, 2), lengths)

        scores = self.attention(hidden_states).squeeze(-1).float()
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1).to(hidden_states.dtype)
        pooled = torch.bmm(weights[:, None], hidden_states).squeeze(1)
        return nn.functional.normalize(self.output_proj(pooled).float(), dim=-1).to(dtype)


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


class OmniAudioPreTrainedModel(OmniPreTrainedModel):
    config: OmniAudioConfig
    config_class = OmniAudioConfig
    main_input_name = "input_values"
    input_modalities = ("audio",)
    _no_split_modules = ["OmniAudioConformerBlock", "OmniAudioSpeakerEncoder"]

    def _init_weights(self, module: nn.Module):
        if isinstance(module, nn.Conv1d):
            init.kaiming_normal_(module.weight)
            if module.bias is not None:
                fan_in = module.in_channels // module.groups * module.kernel_size[0]
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(module.bias, a=-bound, b=bound)
        elif isinstance(module, nn.LSTM):
            bound = 1 / math.sqrt(module.hidden_size)
            for parameter in module.parameters():
                init.uniform_(parameter, a=-bound, b=bound)
        else:  # linear layers, norms and the quantiser's codebooks (embeddings)
            super()._init_weights(module)

    def _get_feat_extract_output_lengths(self, input_lengths: torch.LongTensor | int) -> torch.LongTensor | int:
        """Output frames the encoder gives for `input_lengths` samples: `input_lengths // 64` tokenizer frames, pooled
        by `config.output_downsample_rate` (see [`audio_frame_lengths`])."""
        config = self.config
        return audio_frame_lengths(input_lengths, config.tokenizer_samples_per_frame, config.output_downsample_rate)


class OmniAudioModel(OmniAudioPreTrainedModel):
    """
    The audio encoder: 16 kHz `input_values [B, S]` -> waveform tokenizer (`S // 64` frames, optionally residual
    quantised) -> Conformer blocks with rotary multi-head latent attention -> `last_hidden_state [B, S // 64, D]`, and,
    given the log-mel frames of a reference, the speaker encoder's L2-normalised `speaker_embeddings [B, E]`.

    Padded batches give on every clip's valid frames the features of the clip alone (pass the `attention_mask` the
    feature extractor returns; right padding).

    Long audio: with `config.attention_chunk_size` the attention is chunked (each chunk of frames attends to
    `attention_left_chunks` chunks before it and `attention_right_context` frames after it), computed as a batch of
    chunks, so time and memory are linear in the audio; `config.output_downsample_rate` pools the output frames
    (e.g. 10: 25 frames/s for a language model); [`~OmniAudioModel.encode_stream`] encodes audio piece by piece and
    yields exactly the frames of the offline chunked forward.
    """

    def __init__(self, config: OmniAudioConfig):
        super().__init__(config)
        self.waveform_tokenizer = OmniAudioWaveformTokenizer(config)
        self.rotary_emb = OmniRotaryEmbedding(config.qk_rope_head_dim, num_axes=1, theta=config.rope_theta)
        self.conformer_blocks = nn.ModuleList(
            [OmniAudioConformerBlock(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.speaker_encoder = OmniAudioSpeakerEncoder(config) if config.use_speaker_encoder else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.waveform_tokenizer.conv_layers[0].conv

    def _sample_lengths(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Validate the waveform batch and return the valid samples per clip (None when nothing is padded)."""
        if input_values.dim() != 2:
            raise ValueError(
                "input_values must have shape [batch, samples] (or [batch, 1, samples]), got "
                f"{tuple(input_values.shape)}."
            )
        samples_per_frame = self.config.tokenizer_samples_per_frame
        if input_values.shape[0] == 0:
            raise ValueError("input_values is an empty batch (batch size 0).")
        if input_values.shape[-1] < samples_per_frame:
            raise ValueError(
                f"Audio of {input_values.shape[-1]} samples is shorter than one encoder frame ({samples_per_frame} "
                "samples)."
            )
        if attention_mask is None:
            return None
        if attention_mask.shape != input_values.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected {tuple(input_values.shape)} (one "
                "entry per sample)."
            )
        lengths = right_padding_lengths(attention_mask, "attention_mask")
        if not torch.compiler.is_compiling() and bool((lengths < samples_per_frame).any()):
            raise ValueError(
                f"Clip lengths {lengths.tolist()} (samples): every clip needs at least one encoder frame "
                f"({samples_per_frame} samples)."
            )
        return lengths

    def get_speaker_embeddings(
        self, speaker_features: torch.Tensor, speaker_attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embed reference audio alone (for zero-shot voice cloning).

        Args:
            speaker_features (`torch.FloatTensor` of shape `(batch_size, num_mel_frames, speaker_num_mel_bins)`):
                Log-mel frames of the reference, the `speaker_features` of [`OmniAudioFeatureExtractor`] called with
                `return_speaker_features=True`.
            speaker_attention_mask (`torch.LongTensor` of shape `(batch_size, num_mel_frames)`, *optional*):
                1 on valid frames (the extractor's `speaker_attention_mask`).

        Returns:
            `torch.FloatTensor` of shape `(batch_size, speaker_embedding_size)`, L2-normalised: the
            `speaker_embeddings` the audio decoder takes.
        """
        if self.speaker_encoder is None:
            raise ValueError("This model has no speaker encoder (config.use_speaker_encoder=False).")
        if speaker_features.dim() != 3 or speaker_features.shape[-1] != self.config.speaker_num_mel_bins:
            raise ValueError(
                f"speaker_features must have shape [batch, frames, {self.config.speaker_num_mel_bins}], got "
                f"{tuple(speaker_features.shape)}."
            )
        if speaker_features.shape[1] == 0:
            raise ValueError("speaker_features has no frames.")
        if speaker_attention_mask is not None:
            if speaker_attention_mask.shape != speaker_features.shape[:2]:
                raise ValueError(
                    f"speaker_attention_mask has shape {tuple(speaker_attention_mask.shape)}, expected "
                    f"{tuple(speaker_features.shape[:2])}."
                )
            lengths = right_padding_lengths(speaker_attention_mask, "speaker_attention_mask")
            if not torch.compiler.is_compiling() and bool((lengths == 0).any()):
                raise ValueError("Every reference needs at least one valid mel frame in speaker_attention_mask.")
        return self.speaker_encoder(speaker_features, speaker_attention_mask)

    def decode_audio_codes(self, audio_codes: torch.LongTensor) -> torch.Tensor:
        """Residual quantisation codes `[B, T, num_codebooks]` -> the quantised features `[B, T, hidden_size]` the
        Conformer sees (the sum of the selected codebook entries; frames coded -1 give zeros)."""
        if self.waveform_tokenizer.quantizer is None:
            raise ValueError("This model has no quantizer (config.use_quantizer=False).")
        return self.waveform_tokenizer.quantizer.decode(audio_codes)

    def streaming_requirements_missing(self) -> list[str]:
        """What this model's config lacks for [`encode_stream`] (empty when it can stream): frames that depend on
        bounded past and no future audio."""
        config, needs = self.config, []
        if config.attention_chunk_size is None:
            needs.append("chunked attention (attention_chunk_size)")
        if config.attention_right_context != 0:
            needs.append("no look-ahead (attention_right_context=0)")
        if not config.conv_module_causal:
            needs.append("a causal convolution module (conv_module_causal=True)")
        if config.tokenizer_norm_statistics == "clip":
            needs.append('causal or per-frame tokenizer norms (tokenizer_norm_statistics="causal" or "frame")')
        elif config.tokenizer_norm_statistics == "causal" and any(
            multiplier > left + right + 1 for _, multiplier, left, right in self.waveform_tokenizer.receptive_field()
        ):
            # a layer frame read by no output frame could still wait for audio when the frames around it are final
            needs.append("tokenizer kernels at least as wide as their strides (causal norms count every layer frame)")
        return needs

    def _check_streamable(self) -> None:
        needs = self.streaming_requirements_missing()
        if needs:
            raise ValueError(
                "encode_stream gives exactly the offline forward's frames only for a model whose frames depend on "
                f"bounded past and no future audio; this config lacks: {'; '.join(needs)}."
            )

    @torch.no_grad()
    def encode_stream(
        self, audio_pieces: Iterable[torch.Tensor], state: OmniAudioStreamState | None = None
    ) -> Iterator[torch.Tensor]:
        """Encode one 16 kHz stream piece by piece, yielding output frames as soon as they are determined.

        The concatenation of the yielded frames equals `self(whole_audio).last_hidden_state[0]` (the offline chunked
        forward on the whole audio, up to float rounding): the samples are tokenized once they complete an attention
        chunk, keeping the samples of the tokenizer's receptive field for the next (its frames only read a few dozen
        samples around them), every attention chunk of
        `attention_chunk_size` frames is encoded once complete, attending to the K/V latents of the
        `attention_left_chunks` chunks before it, which is all [`OmniAudioStreamState`] keeps of them
        (`kv_lora_rank + qk_rope_head_dim` values per frame and layer), and frames are pooled by
        `output_downsample_rate` as windows complete. The last, partial chunk is encoded when the pieces end.

        It needs a config whose frames depend on bounded past and no future audio: `attention_chunk_size` set,
        `attention_right_context=0`, `conv_module_causal=True` and `tokenizer_norm_statistics="causal"` (or
        `"frame"`).

        Args:
            audio_pieces (iterable of `torch.Tensor` or `np.ndarray` of shape `(num_samples,)`):
                Consecutive pieces of one waveform, of any lengths (a generator reading a microphone works).
            state (`OmniAudioStreamState`, *optional*):
                A fresh state to use (e.g. to watch `state.memory_bytes()`); one is created otherwise.

        Yields:
            `torch.FloatTensor` of shape `(1, num_new_frames, hidden_size)`: the next output frames.

        Example:

        ```python
        >>> import torch
        >>> from omni_encoders import OmniAudioConfig, OmniAudioModel
        >>> config = OmniAudioConfig(
        ...     attention_chunk_size=50, attention_left_chunks=4, conv_module_causal=True,
        ...     tokenizer_norm_statistics="causal", num_hidden_layers=2, hidden_size=256, qk_rope_head_dim=16,
        ...     intermediate_size=512,
        ... )
        >>> model = OmniAudioModel(config).eval()
        >>> audio = torch.randn(32000)
        >>> frames = torch.cat(list(model.encode_stream(audio.split(1600))), dim=1)  # 100 ms pieces
        >>> frames.shape
        torch.Size([1, 500, 256])
        ```
        """
        self._check_streamable()
        state = OmniAudioStreamState() if state is None else state
        parameter = self.waveform_tokenizer.output_proj.weight
        for piece in audio_pieces:
            piece = torch.as_tensor(piece).to(device=parameter.device, dtype=parameter.dtype)
            if piece.dim() != 1:
                raise ValueError(f"Each audio piece must be a 1-D waveform, got shape {tuple(piece.shape)}.")
            frames = self._stream_step(state, piece, is_last=False)
            if frames.shape[1] > 0:
                yield frames
        frames = self._stream_step(state, parameter.new_zeros(0), is_last=True)
        if frames.shape[1] > 0:
            yield frames

    def _stream_step(self, state: OmniAudioStreamState, piece: torch.Tensor, is_last: bool) -> torch.Tensor:
        """Take one piece of the stream; return the output frames `[1, n, D]` it completes."""
        config, tokenizer = self.config, self.waveform_tokenizer
        samples_per_frame = config.tokenizer_samples_per_frame
        state.samples = piece if state.samples is None else torch.cat([state.samples, piece])
        state.num_samples += piece.shape[0]
        if is_last and state.num_samples < samples_per_frame:
            raise ValueError(
                f"The stream has {state.num_samples} samples, shorter than one encoder frame ({samples_per_frame})."
            )

        # Tokenizer: once the samples determine enough frames to complete an attention chunk (or the stream ends),
        # compute the frames over the kept samples and keep those the samples seen so far determine. Until then the
        # samples only accumulate: one tokenizer call per chunk, not one per piece (a call costs milliseconds however
        # few its samples).
        frames_end = (
            state.num_samples // samples_per_frame if is_last else tokenizer.complete_frames(state.num_samples)
        )
        num_pending = 0 if state.pending_frames is None else state.pending_frames.shape[1]
        completes_chunk = num_pending + frames_end - state.tokenized_frames >= config.attention_chunk_size
        new_frames = None
        if (
            (is_last or completes_chunk)
            and frames_end > state.tokenized_frames
            and state.samples.shape[0] >= samples_per_frame
        ):
            norm_states = None
            if config.tokenizer_norm_statistics == "causal":
                norm_states = tokenizer.start_stream_call(state.tokenizer_norms, state.sample_start, frames_end)
            features, _, _, _ = tokenizer(state.samples[None], norm_states=norm_states)
            offset = state.sample_start // samples_per_frame
            new_frames = features[:, state.tokenized_frames - offset : frames_end - offset]
            state.tokenized_frames = frames_end
            keep_from = tokenizer.first_sample(frames_end) // samples_per_frame * samples_per_frame
            state.samples = state.samples[keep_from - state.sample_start :]
            state.sample_start = keep_from
        if new_frames is not None:
            pending = state.pending_frames
            state.pending_frames = new_frames if pending is None else torch.cat([pending, new_frames], dim=1)

        # Conformer: encode every complete chunk (and the partial last one at the end), one chunk after another.
        chunk_size = config.attention_chunk_size
        encoded = []
        while state.pending_frames is not None and (
            state.pending_frames.shape[1] >= chunk_size or (is_last and state.pending_frames.shape[1] > 0)
        ):
            chunk, state.pending_frames = state.pending_frames[:, :chunk_size], state.pending_frames[:, chunk_size:]
            positions = torch.arange(state.encoded_frames, state.encoded_frames + chunk.shape[1], device=chunk.device)
            position_embeddings = self.rotary_emb(positions)
            for block in self.conformer_blocks:
                chunk, _ = block(chunk, position_embeddings, cache=state.cache, stream_state=state)
            state.cache.keep_last(config.attention_left_chunks * chunk_size)
            state.encoded_frames += chunk.shape[1]
            encoded.append(chunk)
        if not encoded:
            return piece.new_zeros(1, 0, config.hidden_size)
        hidden_states = torch.cat(encoded, dim=1)

        # Output rate: pool complete windows now, the partial last one at the end.
        rate = config.output_downsample_rate
        if rate == 1:
            return hidden_states
        if state.unpooled is not None:
            hidden_states = torch.cat([state.unpooled, hidden_states], dim=1)
        complete = hidden_states.shape[1] if is_last else hidden_states.shape[1] // rate * rate
        state.unpooled = hidden_states[:, complete:]
        return pool_frames(hidden_states[:, :complete], None, rate)[0]

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        speaker_features: torch.Tensor | None = None,
        speaker_attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache: OmniLatentCache | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> OmniAudioModelOutput | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, num_samples)`):
                16 kHz mono waveforms, e.g. from [`OmniAudioFeatureExtractor`] (`(batch_size, 1, num_samples)` is
                accepted too). At least `config.tokenizer_samples_per_frame` (64) samples.
            attention_mask (`torch.LongTensor` of shape `(batch_size, num_samples)`, *optional*):
                1 on the valid samples of each clip, 0 on right padding.
            speaker_features (`torch.FloatTensor` of shape `(batch_size, num_mel_frames, speaker_num_mel_bins)`):
                Log-mel frames of reference audio for the speaker encoder; `speaker_embeddings` are returned then.
            speaker_attention_mask (`torch.LongTensor` of shape `(batch_size, num_mel_frames)`, *optional*):
                1 on the valid mel frames.
            use_cache (`bool`, *optional*):
                Return the attention layers' compressed K/V as `cache` (an [`OmniLatentCache`]): per layer and frame,
                the normalised latent and the rotary key (`kv_lora_rank + qk_rope_head_dim` values), from which
                [`OmniLatentAttention.expand`] rebuilds the keys and values, e.g. for a decoder to reuse.
            cache (`OmniLatentCache`, *optional*):
                An empty cache to fill (one is created when `use_cache=True`). The encoder is bidirectional, so it does
                not attend to earlier segments: a non-empty cache is an error.

        Example:

        ```python
        >>> import torch
        >>> from omni_encoders import OmniAudioConfig, OmniAudioModel
        >>> model = OmniAudioModel(OmniAudioConfig())
        >>> outputs = model(torch.randn(1, 16000))
        >>> outputs.last_hidden_state.shape  # 16000 // 64 = 250 frames
        torch.Size([1, 250, 1024])
        ```
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self.check_unused_kwargs(kwargs)
        if cache is not None:
            use_cache = True
            if len(cache) > 0:
                raise ValueError(
                    "OmniAudioModel fills an empty OmniLatentCache with the K/V latents of this input; it does not "
                    f"attend to a previous segment, but the given cache already holds {len(cache)} layers."
                )
        elif use_cache:
            cache = OmniLatentCache()

        if input_values.dim() == 3 and input_values.shape[1] == 1:
            input_values = input_values[:, 0]
        sample_lengths = self._sample_lengths(input_values, attention_mask)
        input_values = input_values.to(self.waveform_tokenizer.output_proj.weight.dtype)

        hidden_states, frame_mask, audio_codes, commitment_loss = self.waveform_tokenizer(input_values, sample_lengths)
        num_frames = hidden_states.shape[1]
        position_embeddings = self.rotary_emb(torch.arange(num_frames, device=hidden_states.device))
        chunked_attention = attention_mask = None
        if self.config.attention_chunk_size is None:
            attention_mask = create_bidirectional_mask(self.config, hidden_states, frame_mask)
        else:
            chunked_attention = OmniChunkedAttention.build(
                self.config,
                hidden_states,
                None if frame_mask is None else frame_mask.sum(-1),
                self.config.attention_chunk_size,
                self.config.attention_left_chunks,
                self.config.attention_right_context,
            )
        frame_scale = None if frame_mask is None else frame_mask[..., None].to(hidden_states.dtype)

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        collect_attentions = returns_attention_weights(self.config, output_attentions)
        for block in self.conformer_blocks:
            hidden_states, attn_weights = block(
                hidden_states,
                position_embeddings,
                attention_mask=attention_mask,
                frame_mask=frame_scale,
                cache=cache,
                chunked_attention=chunked_attention,
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if collect_attentions:
                all_attentions += (attn_weights,)

        speaker_embeddings = None
        if speaker_features is not None:
            speaker_embeddings = self.get_speaker_embeddings(speaker_features, speaker_attention_mask)

        if self.config.output_downsample_rate > 1:
            hidden_states, frame_mask = pool_frames(hidden_states, frame_mask, self.config.output_downsample_rate)
        if frame_mask is None:
            frame_mask = torch.ones(hidden_states.shape[:2], dtype=torch.long, device=hidden_states.device)
        output = OmniAudioModelOutput(
            last_hidden_state=hidden_states,
            pooler_output=masked_mean(hidden_states, frame_mask),
            frame_mask=frame_mask.long(),
            audio_codes=audio_codes,
            commitment_loss=commitment_loss,
            speaker_embeddings=speaker_embeddings,
            cache=cache,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()


class OmniAudioForCTC(OmniAudioPreTrainedModel):
    """[`OmniAudioModel`] with a linear layer over the frame features for CTC speech recognition over a character
    vocabulary (`Wav2Vec2CTCTokenizer`; the blank is the pad token). `pipeline("automatic-speech-recognition")`
    decodes it greedily."""

    def __init__(self, config: OmniAudioConfig):
        super().__init__(config)
        self.model = OmniAudioModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> OmniAudioCTCOutput | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, num_samples)`):
                16 kHz mono waveforms.
            attention_mask (`torch.LongTensor` of shape `(batch_size, num_samples)`, *optional*):
                1 on valid samples, 0 on right padding.
            labels (`torch.LongTensor` of shape `(batch_size, target_length)`, *optional*):
                Character ids of the transcripts, padded with -100 (or the blank); gives the CTC loss. A transcript
                may not be longer than its clip's frame count.

        Returns:
            [`OmniAudioCTCOutput`]: `logits [B, frames, vocab_size]`. On the padded frames of a batch they put all
            the probability on the blank, so greedy decoding of a padded batch (as the pipeline does) gives each clip
            the text it gets alone.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self.check_unused_kwargs(kwargs)
        if labels is not None:
            self._check_labels(labels, input_values.shape[0])
        outputs = self.model(
            input_values,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.lm_head(self.dropout(outputs.last_hidden_state))
        if attention_mask is not None:
            blank_only = torch.full_like(logits[0, 0], torch.finfo(logits.dtype).min)
            blank_only[self.config.pad_token_id] = 0
            logits = torch.where(outputs.frame_mask.bool()[..., None], logits, blank_only)

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits,
                labels=labels,
                logit_lengths=outputs.frame_mask.sum(-1),
                blank_token_id=self.config.pad_token_id,
                reduction=self.config.ctc_loss_reduction,
                zero_infinity=self.config.ctc_zero_infinity,
            )
            if outputs.commitment_loss is not None:
                loss = loss + outputs.commitment_loss
        output = OmniAudioCTCOutput(
            loss=loss,
            logits=logits,
            aux_loss=outputs.commitment_loss,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def stream_logits(
        self, audio_pieces: Iterable[torch.Tensor], state: OmniAudioStreamState | None = None
    ) -> Iterator[torch.Tensor]:
        """Streaming speech recognition: the CTC logits of one 16 kHz stream, piece by piece, as
        [`OmniAudioModel.encode_stream`] yields its frames (it needs a streamable config; see there). Concatenated,
        they are the logits of the offline forward on the whole audio.

        Example (greedy decoding as the frames come; `processor` is the model's [`OmniAudioProcessor`]):

        ```python
        >>> ids = [logits.argmax(-1) for logits in model.stream_logits(microphone_pieces)]  # doctest: +SKIP
        >>> processor.batch_decode(torch.cat(ids, dim=1))  # doctest: +SKIP
        ```

        Yields:
            `torch.FloatTensor` of shape `(1, num_new_frames, vocab_size)`.
        """
        for frames in self.model.encode_stream(audio_pieces, state=state):
            yield self.lm_head(frames)

    def _check_labels(self, labels: torch.Tensor, batch_size: int) -> None:
        vocab_size = self.config.vocab_size
        if labels.is_floating_point() or labels.is_complex() or labels.dim() != 2 or labels.shape[0] != batch_size:
            raise ValueError(
                f"labels must be integer character ids of shape [batch={batch_size}, target_length], got a "
                f"{labels.dtype} tensor of shape {tuple(labels.shape)}."
            )
        if torch.compiler.is_compiling():
            return
        invalid = (labels != -100) & ((labels < 0) | (labels >= vocab_size))
        if bool(invalid.any()):
            raise ValueError(
                f"Label values must be in [0, vocab_size={vocab_size}) or -100 (padding), got "
                f"{sorted(set(labels[invalid].tolist()))}."
            )


class OmniAudioForAudioClassification(OmniAudioPreTrainedModel):
    """[`OmniAudioModel`] with a linear classifier on the mean of each clip's valid frames (padding-invariant)."""

    def __init__(self, config: OmniAudioConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = OmniAudioModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> OmniClassifierOutput | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, num_samples)`):
                16 kHz mono waveforms.
            attention_mask (`torch.LongTensor` of shape `(batch_size, num_samples)`, *optional*):
                1 on valid samples, 0 on right padding.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Class indices in `[0, num_labels)` (float targets for regression or multi-label problems); the loss
                follows `config.problem_type` as in transformers' classifiers, plus the quantiser loss when
                `config.use_quantizer`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self.check_unused_kwargs(kwargs)
        outputs = self.model(
            input_values,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config)
            if outputs.commitment_loss is not None:
                loss = loss + outputs.commitment_loss
        output = OmniClassifierOutput(
            loss=loss,
            logits=logits,
            pooler_output=outputs.pooler_output,
            aux_loss=outputs.commitment_loss,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


OmniAudioModel.register_for_auto_class("AutoModel")
OmniAudioForCTC.register_for_auto_class("AutoModelForCTC")
OmniAudioForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")

__all__ = [
    "OmniAudioCTCOutput",
    "OmniAudioForAudioClassification",
    "OmniAudioForCTC",
    "OmniAudioModel",
    "OmniAudioModelOutput",
    "OmniAudioPreTrainedModel",
    "OmniAudioStreamState",
    "pool_frames",
]

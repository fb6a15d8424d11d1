# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Convert checkpoints of the spec's reference implementation into omni-encoders models.

The reference stores each model under a component prefix (`vision_encoder.`, `video_encoder.`, `audio_encoder.`,
`audio_decoder.`, `waveform_decoder.`; see `shared/reference/reference_checkpoint_keys.json`). Every tensor whose
module exists in our design is mapped onto it (fused projections are split); the others are dropped, and the
parameters of ours the reference does not have are newly initialised: the report names both. Inputs are safetensors
or pickled torch files (read with `torch.load(weights_only=True)`), a whole multi-component checkpoint or one component
on its own.

    python -m omni_encoders.conversion.reference xoron.safetensors ./omni-vision --model-type omni_vision
    python -m omni_encoders.conversion.reference xoron.safetensors ./omni-video --model-type omni_video
    python -m omni_encoders.conversion.reference audio.pt ./omni-audio --model-type omni_audio --set use_quantizer=true
    python -m omni_encoders.conversion.reference xoron.safetensors ./omni-tts --model-type omni_audio_decoder

Without `--config`, the target config is our default (the spec's full size) with the reference's sizes where they
differ ([`ReferenceLayout.reference_config`]); `--set` overrides single arguments.

The spec names the reference's modules and gives their shapes, but little of its forward code. Where a mapping rests
on an assumption about what a reference module computes, the assumption is stated below. Where the reference computes
something our design does not, or computes it differently, its tensors are dropped with the reason rather than forced
onto a module of another meaning.

**Vision encoder** (`vision_encoder.*` -> `OmniVisionModel`):

| reference | omni-encoders |
|---|---|
| `vision_model.*` (SigLIP; `vision_model.vision_model.*` if saved by transformers 4.x) | `backbone.*` |
| `dual_stream_layers.N.dual_attn.to_qkv_X` (q, k, v stacked) | `layers.N.stream_X.self_attn.{q,k,v}_proj` |
| `dual_stream_layers.N.dual_attn.to_out_X` | `layers.N.stream_X.self_attn.o_proj` |
| `dual_stream_layers.N.dual_attn.norm_X` | `layers.N.stream_X.input_layernorm` |
| `dual_stream_layers.N.ffn_X.0` (LayerNorm) | `layers.N.stream_X.post_attention_layernorm` |
| `dual_stream_layers.N.ffn_X.1` / `.3` (Linear, act, Linear) | `layers.N.stream_X.mlp.fc1` / `.fc2` |
| `titok.token_queries` `[1, T, D]` | `compressor.query_embeddings` `[T, D]` |
| `titok.compress_attn` (`nn.MultiheadAttention`) | `compressor.cross_attn.{q,k,v,o}_proj` |
| `titok.compress_norm` | `compressor.final_layernorm` |

(`X` is the stream, `a` or `b`.) Dropped: the SigLIP attention-pooling head (our models read the patch features and
do not build it), and `titok.compress.*`, the reference's D->D projection after the
compression attention (our compressor's feed-forward layer is a residual `D -> intermediate_size -> D` MLP). Newly
initialised: the q/k/v/o biases of the dual-stream blocks (zeros; the reference has none), the compressor's pre-norms
and feed-forward layer, and the final `post_layernorm` of the patch embeddings.

**Video encoder** (`video_encoder.*` -> `OmniVideoModel`). The nested `video_encoder.vision_encoder.*` maps onto
`vision_model.*` as the vision encoder above, except its TiTok compressor (`titok.*`, dropped: our video model
compresses each frame after the video blocks, with its own `num_tokens_per_frame` queries). The video blocks:

| reference | omni-encoders |
|---|---|
| `encoder_blocks.N.attn.to_qkv` (q, k, v stacked) | `layers.N.{spatial,temporal}_attn.{q,k,v}_proj` (both) |
| `encoder_blocks.N.attn.to_out` | `layers.N.{spatial,temporal}_attn.o_proj` (both) |
| `encoder_blocks.N.attn.norm` | `layers.N.{spatial,temporal}_layernorm` (both) |
| `encoder_blocks.N.norm` | `layers.N.post_attention_layernorm` (before the MoE) |
| `encoder_blocks.N.moe.router.{temporal_proj,gate}` | `layers.N.mlp.router.{temporal_proj,gate}` |
| `encoder_blocks.N.moe.experts.E.*`, `.shared_expert.*` (SwiGLU) | `layers.N.mlp.experts.E.*`, `.shared_expert.*` |

Assumptions: the reference's factorised 3D attention runs its spatial and its frame-causal temporal pass with the one
set of weights it stores (`attn.*`, pre-normed by `attn.norm`), so both of our attentions get a copy; its router's
temporal context is the token's change from the previous frame, as in ours. Dropped: `frame_pos_embed` (learned
absolute frame positions; ours encodes time with 3D-RoPE) and `temporal_pool_*` (attention pooling of the video into
one vector; our pooled embedding is the mean of the frame tokens). Newly initialised: the attention biases, the final
`post_layernorm`, the per-frame `compressor` and the vision model's `post_layernorm`.

**Audio encoder** (`audio_encoder.*` -> `OmniAudioModel`; `ffK` is `ff1` or `ff2`):

| reference | omni-encoders |
|---|---|
| `waveform_tokenizer.conv_layers.N.0` / `.1` (Conv1d, GroupNorm) | `waveform_tokenizer.conv_layers.N.conv` / `.norm` |
| `waveform_tokenizer.output_proj` | `waveform_tokenizer.output_proj` |
| `waveform_tokenizer.codebooks.K` | `waveform_tokenizer.quantizer.codebooks.K` (with `use_quantizer=True`) |
| `conformer_blocks.N.ffK.0` / `.3` (Linear, act, dropout, Linear) | `conformer_blocks.N.ffK.fc1` / `.fc2` |
| `conformer_blocks.N.{ff1_norm,ff2_norm,final_norm}` | the same |
| `conformer_blocks.N.attn.{q_proj,o_proj,kv_norm}` | `conformer_blocks.N.attn.{q_proj,o_proj,kv_a_layernorm}` |
| `conformer_blocks.N.conv.{layer_norm,pointwise_conv1,depthwise_conv,pointwise_conv2}` | the same |
| `speaker_encoder.frame_encoder.{0,3,6}` (`[Conv1d, ReLU, BatchNorm1d] x 3`) | `...frame_encoder.{0,1,2}.conv` |
| `speaker_encoder.lstm.*_lL` / `*_lL_reverse` (bidirectional) | `...lstm.{forward,backward}_layers.L.*_l0` |
| `speaker_encoder.attention.{0,2}`, `speaker_encoder.output_proj` | the same |

Assumptions: the feed-forward modules use SiLU and the speaker pooling tanh between its two linear layers, as ours.
Dropped: the K/V projections of the latent attention, `attn.kv_a_proj` (D -> `kv_lora_rank + head_dim`) and
`attn.kv_b_proj` (latent -> full K and V heads, `2 x num_key_value_heads x head_dim`): the reference rotates the keys
expanded from the latent, while ours keeps the latent position-free and adds a separate rotary key of
`qk_rope_head_dim`, so no config of ours has the reference's K/V projections; the rotary tables (`attn.inv_freq`,
`cos_cached`, `sin_cached`: derived data); the BatchNorms after the depthwise convolution and in the speaker's frame
encoder (ours normalise each frame with a LayerNorm, so that padding never changes results: another operation);
`audio_prompting.*` (a prompt cross-attention module our design does not have); the final `output_proj` (our encoder
outputs the last block's states); the codebooks unless `use_quantizer=True` (off by default, as in our config). Newly
initialised: the latent attention's K/V projections and its pre-norm (`attn_norm`; the reference has none), and the
LayerNorms in place of the BatchNorms.

**Audio decoder** (`audio_decoder.*` and `waveform_decoder.*` -> `OmniAudioDecoderModel`; `X` is `encoder` or
`decoder`):

| reference | omni-encoders |
|---|---|
| `speaker_embed` | `speaker_table` |
| `X_blocks.N.attn.{q_proj,o_proj,kv_norm}` | `X_layers.N.self_attn.{q_proj,o_proj,kv_a_layernorm}` |
| `X_blocks.N.{attn_norm,ff_norm,ff.0}` (`ff.0`: Conv1d, kernel 9) | `X_layers.N.{attn_norm,ffn_norm,ffn.conv1}` |
| `{duration,pitch,energy}_predictor.{conv1,norm1,conv2,norm2,linear}` | the same |
| `{pitch,energy}_embed` (Conv1d) | `{pitch,energy}_embed.conv` |
| `mel_linear` | `mel_proj` |
| `postnet.{0..3}.0`, `postnet.4` (the Conv1ds of `[Conv1d, BatchNorm1d] x 4, Conv1d`) | `postnet.convs.{0..4}` |
| `waveform_decoder.{upsamplers.S,final_activation,output_conv}` (weight norm: g, v) | `vocoder.` + the same |
| `waveform_decoder.mrf_blocks.S.resblocks.K.J.conv1` / `.conv2` | `vocoder.mrf_blocks.S.resblocks.K.convs{1,2}.J` |
| `waveform_decoder.mrf_blocks.S.resblocks.K.J.activation` | `vocoder.mrf_blocks.S.resblocks.K.activations.{2J,2J+1}` |

Assumptions: each residual unit `resblocks.K.J` of the reference applies its one Snake before each of its two
convolutions, as our AMP units do with two Snakes (both get its alpha); its attention heads are 256 wide (4 heads, 2
K/V heads, read from the widths of its rotary tables and K/V projections) and its variance predictors have 1024
channels: the default target config follows both. Dropped: the latent attention's K/V projections and rotary tables
(as for the audio encoder); `ff.2`, the second FFN convolution (kernel 9 in the reference, pointwise in ours as in
FastSpeech 2); `speaker_proj` and `input_proj` (the reference concatenates the text states with a 256-dim projection
of the speaker vector and projects the concatenation back to the hidden size; ours adds a projection of the speaker
vector to the states); `mas.*` (its alignment scorer is an MLP over concatenated text and audio states, while ours
compares convolutional projections of text states and mel frames; its second duration predictor has no counterpart);
the postnet's BatchNorms (LayerNorms in ours); `audio_prompting.*`; and the vocoder's `input_proj`, which reads the
decoder's 1024-dim hidden states where ours reads the `n_mels` mel spectrogram. Newly initialised: the token
embeddings (the reference takes its text embeddings from the language model: pass `inputs_embeds`), the latent
attention's K/V projections, the FFNs' second convolutions, `speaker_proj`, the final `encoder_norm` and
`decoder_norm`, the aligner, the postnet's LayerNorms and the vocoder's `input_proj`: the vocoder must be fine-tuned on
mel spectrograms before it produces speech.

Another model type plugs in with one [`ReferenceLayout`] in `REFERENCE_LAYOUTS`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedConfig

from .mapping import (
    DTYPES,
    Component,
    Rule,
    convert_state_dict,
    drop,
    load_converted,
    load_state_dict,
    most_common_float_dtype,
    parse_overrides,
    save_converted,
)
from .vision_tower import tower_rules


COMMAND = "python -m omni_encoders.conversion.reference"


# -------------------------------------------------------------------------------------------------------- vision


def _flatten_leading(tensor: torch.Tensor) -> torch.Tensor:
    """`[1, T, D]` learned queries -> `[T, D]`."""
    return tensor.reshape(-1, tensor.shape[-1])


def vision_encoder_rules(backbone_prefix: str = "backbone.") -> tuple[Rule, ...]:
    """Rules from the reference vision encoder (`vision_encoder.*` without its prefix) to `OmniVisionModel`."""
    attn = "layers.{0}.stream_{1}.self_attn"
    stream = "layers.{0}.stream_{1}"
    block = r"dual_stream_layers\.(\d+)"
    return (
        *tower_rules(backbone_prefix, nested_only=True),  # the SigLIP tower under vision_model.*
        Rule(rf"{block}\.dual_attn\.to_qkv_([ab])\.weight", tuple(f"{attn}.{p}_proj.weight" for p in "qkv")),
        Rule(rf"{block}\.dual_attn\.to_out_([ab])\.weight", f"{attn}.o_proj.weight"),
        Rule(rf"{block}\.dual_attn\.norm_([ab])\.(weight|bias)", stream + ".input_layernorm.{2}"),
        Rule(rf"{block}\.ffn_([ab])\.0\.(weight|bias)", stream + ".post_attention_layernorm.{2}"),
        Rule(rf"{block}\.ffn_([ab])\.1\.(weight|bias)", stream + ".mlp.fc1.{2}"),
        Rule(rf"{block}\.ffn_([ab])\.3\.(weight|bias)", stream + ".mlp.fc2.{2}"),
        Rule(r"titok\.token_queries", "compressor.query_embeddings", transform=_flatten_leading),
        Rule(r"titok\.compress_attn\.in_proj_weight", tuple(f"compressor.cross_attn.{p}_proj.weight" for p in "qkv")),
        Rule(r"titok\.compress_attn\.in_proj_bias", tuple(f"compressor.cross_attn.{p}_proj.bias" for p in "qkv")),
        Rule(r"titok\.compress_attn\.out_proj\.(weight|bias)", "compressor.cross_attn.o_proj.{0}"),
        Rule(r"titok\.compress_norm\.(weight|bias)", "compressor.final_layernorm.{0}"),
        drop(
            r"titok\.compress\.\d+\.(?:weight|bias)",
            "the reference's D->D projection after the compression attention has no counterpart (our compressor's "
            "feed-forward layer is a residual D -> intermediate_size -> D MLP)",
        ),
    )


# --------------------------------------------------------------------------------------------------------- video


def _stacked_twice(tensor: torch.Tensor) -> torch.Tensor:
    """q/k/v `[3D, D]` -> `[6D, D]` (q, k, v, q, k, v): the one stored attention, for both of our attentions."""
    return torch.cat([tensor, tensor])


def video_encoder_rules() -> tuple[Rule, ...]:
    """Rules from the reference video encoder's own modules (`video_encoder.*` without its prefix, apart from its
    nested `vision_encoder.*`) to `OmniVideoModel`."""
    block = r"encoder_blocks\.(\d+)"
    attentions = ("spatial_attn", "temporal_attn")
    return (
        Rule(
            rf"{block}\.attn\.to_qkv\.weight",
            tuple(f"layers.{{0}}.{attn}.{p}_proj.weight" for attn in attentions for p in "qkv"),
            transform=_stacked_twice,
        ),
        Rule(
            rf"{block}\.attn\.to_out\.weight",
            tuple(f"layers.{{0}}.{attn}.o_proj.weight" for attn in attentions),
            split_dim=None,
        ),
        Rule(
            rf"{block}\.attn\.norm\.(weight|bias)",
            ("layers.{0}.spatial_layernorm.{1}", "layers.{0}.temporal_layernorm.{1}"),
            split_dim=None,
        ),
        Rule(rf"{block}\.norm\.(weight|bias)", "layers.{0}.post_attention_layernorm.{1}"),
        Rule(rf"{block}\.moe\.router\.(temporal_proj|gate)\.(weight|bias)", "layers.{0}.mlp.router.{1}.{2}"),
        Rule(rf"{block}\.moe\.experts\.(\d+)\.(\w+_proj)\.weight", "layers.{0}.mlp.experts.{1}.{2}.weight"),
        Rule(rf"{block}\.moe\.shared_expert\.(\w+_proj)\.weight", "layers.{0}.mlp.shared_expert.{1}.weight"),
        drop(r"frame_pos_embed", "learned absolute frame positions: our video blocks encode time with 3D-RoPE"),
        drop(
            r"temporal_pool_(?:query|attn\..+|norm\..+)",
            "attention pooling of the video into one vector: our pooled embedding is the mean of the frame tokens",
        ),
    )


def video_vision_encoder_rules() -> tuple[Rule, ...]:
    """Rules for the video encoder's nested vision encoder (`video_encoder.vision_encoder.*`): the vision encoder's,
    without its TiTok compressor."""
    return (
        drop(
            r"titok\..+",
            "the vision encoder's TiTok compressor: our video model compresses each frame after the video blocks, "
            "with its own queries (compressor.*, newly initialised)",
        ),
        *vision_encoder_rules(),
    )


# ----------------------------------------------------------------------------------------------------- audio (both)


ROTARY_TABLES_REASON = "rotary tables: derived data, recomputed from the config"
LATENT_KV_REASON = (
    "the reference's latent attention expands its latent to full, rotated K and V heads (kv_b_proj: latent -> 2 x "
    "num_key_value_heads x head_dim) and takes an extra head_dim-wide key from kv_a_proj; ours keeps the latent "
    "position-free and adds a separate rotary key of qk_rope_head_dim, so no config of ours has these projections"
)
PROMPTING_REASON = "the reference's audio prompting (learned prompt tokens, cross-attention, gate): not in our design"


def latent_attention_rules(block: str, attention: str) -> tuple[Rule, ...]:
    """Rules from the reference's RMLA (`{block}.attn.*`, `block` a pattern with groups) to our
    [`OmniLatentAttention`] at `attention` (a template over the groups of `block`)."""
    next_group = re.compile(block).groups
    return (
        Rule(rf"{block}\.attn\.(q_proj|o_proj)\.weight", attention + f".{{{next_group}}}.weight"),
        Rule(rf"{block}\.attn\.kv_norm\.(weight|bias)", attention + f".kv_a_layernorm.{{{next_group}}}"),
        drop(rf"{block}\.attn\.kv_[ab]_proj\.weight", LATENT_KV_REASON),
        drop(rf"{block}\.attn\.(?:inv_freq|cos_cached|sin_cached)", ROTARY_TABLES_REASON),
    )


def _batch_norm_reason(where: str) -> str:
    return (
        f"the BatchNorm of {where} (statistics over the batch); ours normalises each frame with a LayerNorm so that "
        "padding never changes results, another operation"
    )


def _speaker_frame_encoder_target(index: str, name: str) -> str | None:
    # `[Conv1d, ReLU, BatchNorm1d] x N`: the convolutions are modules 0, 3, 6, ...; the rest are BatchNorms.
    return f"speaker_encoder.frame_encoder.{int(index) // 3}.conv.{name}" if int(index) % 3 == 0 else None


def _speaker_lstm_target(kind: str, gate: str, layer: str, reverse: str | None) -> str:
    # `nn.LSTM(bidirectional=True, num_layers=L)` -> one single-layer LSTM per layer and direction
    direction = "backward" if reverse else "forward"
    return f"speaker_encoder.lstm.{direction}_layers.{layer}.{kind}_{gate}_l0"


def audio_encoder_rules() -> tuple[Rule, ...]:
    """Rules from the reference audio encoder (`audio_encoder.*` without its prefix) to `OmniAudioModel`."""
    conv_layer = r"waveform_tokenizer\.conv_layers\.(\d+)"
    block = r"conformer_blocks\.(\d+)"
    return (
        Rule(rf"{conv_layer}\.0\.(weight|bias)", "waveform_tokenizer.conv_layers.{0}.conv.{1}"),
        Rule(rf"{conv_layer}\.1\.(weight|bias)", "waveform_tokenizer.conv_layers.{0}.norm.{1}"),
        Rule(r"waveform_tokenizer\.codebooks\.(\d+)\.weight", "waveform_tokenizer.quantizer.codebooks.{0}.weight"),
        Rule(r"waveform_tokenizer\.output_proj\.(weight|bias)", "waveform_tokenizer.output_proj.{0}"),
        Rule(rf"{block}\.(ff1|ff2)\.0\.(weight|bias)", "conformer_blocks.{0}.{1}.fc1.{2}"),
        Rule(rf"{block}\.(ff1|ff2)\.3\.(weight|bias)", "conformer_blocks.{0}.{1}.fc2.{2}"),
        Rule(rf"{block}\.(ff1_norm|ff2_norm|final_norm)\.(weight|bias)", "conformer_blocks.{0}.{1}.{2}"),
        *latent_attention_rules(block, "conformer_blocks.{0}.attn"),
        Rule(
            rf"{block}\.conv\.(layer_norm|pointwise_conv1|depthwise_conv|pointwise_conv2)\.(weight|bias)",
            "conformer_blocks.{0}.conv.{1}.{2}",
        ),
        drop(rf"{block}\.conv\.batch_norm\..+", _batch_norm_reason("the convolution module")),
        Rule(
            r"speaker_encoder\.frame_encoder\.(\d+)\.(\w+)",
            _speaker_frame_encoder_target,
            reason=_batch_norm_reason("the speaker encoder's frame encoder"),
        ),
        Rule(r"speaker_encoder\.lstm\.(weight|bias)_(ih|hh)_l(\d+)(_reverse)?", _speaker_lstm_target),
        Rule(r"speaker_encoder\.(attention\.[02]|output_proj)\.(weight|bias)", "speaker_encoder.{0}.{1}"),
        drop(r"audio_prompting\..+", PROMPTING_REASON),
        drop(r"output_proj\.(?:weight|bias)", "a D->D projection after the Conformer: ours outputs the last block's"),
    )


def audio_decoder_rules() -> tuple[Rule, ...]:
    """Rules from the reference audio decoder (`audio_decoder.*` without its prefix) to `OmniAudioDecoderModel`
    (its vocoder apart: see [`waveform_decoder_rules`])."""
    block = r"(encoder|decoder)_blocks\.(\d+)"
    return (
        Rule(r"speaker_embed\.weight", "speaker_table.weight"),
        drop(
            r"(?:speaker_proj|input_proj)\.(?:weight|bias)",
            "the reference concatenates the text states with a projected speaker vector and projects the "
            "concatenation back to the hidden size (input_proj); ours adds a projection of the speaker vector "
            "(speaker_proj, newly initialised) to the states",
        ),
        *latent_attention_rules(block, "{0}_layers.{1}.self_attn"),
        Rule(rf"{block}\.attn_norm\.(weight|bias)", "{0}_layers.{1}.attn_norm.{2}"),
        Rule(rf"{block}\.ff_norm\.(weight|bias)", "{0}_layers.{1}.ffn_norm.{2}"),
        Rule(rf"{block}\.ff\.0\.(weight|bias)", "{0}_layers.{1}.ffn.conv1.{2}"),
        drop(
            rf"{block}\.ff\.2\.(?:weight|bias)",
            "the second convolution of the reference's feed-forward layer has kernel 9; ours is pointwise "
            "(FastSpeech 2)",
        ),
        Rule(
            r"(duration|pitch|energy)_predictor\.(conv1|norm1|conv2|norm2|linear)\.(weight|bias)",
            "{0}_predictor.{1}.{2}",
        ),
        Rule(r"(pitch|energy)_embed\.(weight|bias)", "{0}_embed.conv.{1}"),
        Rule(r"mel_linear\.(weight|bias)", "mel_proj.{0}"),
        Rule(r"postnet\.(\d+)\.0\.(weight|bias)", "postnet.convs.{0}.{1}"),
        drop(r"postnet\.\d+\.1\..+", _batch_norm_reason("the postnet")),
        Rule(r"postnet\.(\d+)\.(weight|bias)", "postnet.convs.{0}.{1}"),
        drop(
            r"mas\.alignment_proj\..+",
            "the reference's alignment scorer (an MLP over concatenated text and audio states); our aligner compares "
            "convolutional projections of the text states and the mel frames (RAD-TTS)",
        ),
        drop(
            r"mas\.duration_predictor\..+",
            "a second duration predictor inside the reference's MAS module; our variance adaptor's duration "
            "predictor takes the reference's top-level duration_predictor",
        ),
        drop(r"audio_prompting\..+", PROMPTING_REASON),
    )


def _snake_alpha_targets(stage: str, block: str, unit: str) -> tuple[str, str]:
    # One Snake per reference unit; ours has one before each of the unit's two convolutions.
    activations = f"mrf_blocks.{stage}.resblocks.{block}.activations"
    return f"{activations}.{2 * int(unit)}.alpha", f"{activations}.{2 * int(unit) + 1}.alpha"


def waveform_decoder_rules() -> tuple[Rule, ...]:
    """Rules from the reference waveform decoder (`waveform_decoder.*` without its prefix) to [`OmniVocoder`]. Its
    weight-normed convolutions (`parametrizations.weight.original0/1`, g and v) map 1:1 onto ours."""
    tensor = r"(bias|parametrizations\.weight\.original[01])"
    unit = r"mrf_blocks\.(\d+)\.resblocks\.(\d+)\.(\d+)"
    return (
        drop(
            r"input_proj\..+",
            "the reference's vocoder reads the decoder's hidden states (1024 channels) where ours reads the n_mels "
            "mel spectrogram: its input convolution has another meaning",
        ),
        Rule(rf"upsamplers\.(\d+)\.{tensor}", "upsamplers.{0}.{1}"),
        Rule(rf"{unit}\.conv([12])\.{tensor}", "mrf_blocks.{0}.resblocks.{1}.convs{3}.{2}.{4}"),
        Rule(rf"{unit}\.activation\.alpha", _snake_alpha_targets, split_dim=None),
        Rule(r"final_activation\.alpha", "final_activation.alpha"),
        Rule(rf"output_conv\.{tensor}", "output_conv.{0}"),
    )


# ---------------------------------------------------------------------------------------------------- processors


def _vision_processor(config):
    from ..image_processing_omni_vision import OmniVisionImageProcessor

    return OmniVisionImageProcessor(size={"height": config.image_size, "width": config.image_size})


def _video_processor(config):
    from ..video_processing_omni_video import OmniVideoVideoProcessor

    size = {"height": config.image_size, "width": config.image_size}
    return OmniVideoVideoProcessor(size=size, num_frames=config.num_frames)


def _audio_processor(config):
    from ..feature_extraction_omni_audio import OmniAudioFeatureExtractor

    return OmniAudioFeatureExtractor(
        samples_per_frame=config.tokenizer_samples_per_frame, speaker_num_mel_bins=config.speaker_num_mel_bins
    )


def _audio_decoder_processor(config):
    from ..feature_extraction_omni_audio_decoder import OmniAudioDecoderFeatureExtractor
    from ..processing_omni_audio_decoder import OmniAudioDecoderProcessor
    from ..tokenization_omni_audio_decoder import OmniAudioDecoderTokenizer

    feature_extractor = OmniAudioDecoderFeatureExtractor.from_model_config(config)
    return OmniAudioDecoderProcessor(feature_extractor, OmniAudioDecoderTokenizer())


# ------------------------------------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class ReferenceLayout:
    """How the reference stores one of our model types.

    Args:
        model_class, config_class: names of the target classes in `omni_encoders`.
        components: where the tensors are (source prefix -> target prefix) and how they map. A checkpoint of one
            component saved on its own, without its prefix, is read as the component whose rules its keys match.
        build_processor: `config -> processor` saved with the converted model.
        reference_config: config arguments where the reference's default sizes differ from our config's defaults;
            the target config is built from them, then from the arguments given.
    """

    model_class: str
    config_class: str
    components: tuple[Component, ...]
    build_processor: Callable | None = None
    reference_config: dict = field(default_factory=dict)


REFERENCE_LAYOUTS: dict[str, ReferenceLayout] = {
    "omni_vision": ReferenceLayout(
        "OmniVisionModel",
        "OmniVisionConfig",
        (Component("vision_encoder.", "", vision_encoder_rules()),),
        _vision_processor,
    ),
    "omni_video": ReferenceLayout(
        "OmniVideoModel",
        "OmniVideoConfig",
        (
            Component("video_encoder.vision_encoder.", "vision_model.", video_vision_encoder_rules()),
            Component("video_encoder.", "", video_encoder_rules()),
        ),
        _video_processor,
    ),
    "omni_audio": ReferenceLayout(
        "OmniAudioModel",
        "OmniAudioConfig",
        (Component("audio_encoder.", "", audio_encoder_rules()),),
        _audio_processor,
    ),
    "omni_audio_decoder": ReferenceLayout(
        "OmniAudioDecoderModel",
        "OmniAudioDecoderConfig",
        (
            Component("waveform_decoder.", "vocoder.", waveform_decoder_rules()),
            Component("audio_decoder.", "", audio_decoder_rules()),
        ),
        _audio_decoder_processor,
        # 256-wide heads (the width of its rotary tables) with 2 K/V heads, and 1024-channel variance predictors
        reference_config={"num_attention_heads": 4, "num_key_value_heads": 2, "variance_predictor_hidden_size": 1024},
    ),
}


def _build_config(layout: ReferenceLayout, config) -> PreTrainedConfig:
    import omni_encoders

    if isinstance(config, PreTrainedConfig):
        return config
    if config is not None and not isinstance(config, dict):
        config = json.loads(Path(config).read_text())
    config_class = getattr(omni_encoders, layout.config_class)
    return config_class.from_dict({**layout.reference_config, **(config or {})})


def convert_reference_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    model_type: str = "omni_vision",
    config: PreTrainedConfig | dict | str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    model_id: str | None = None,
):
    """Convert a reference-implementation checkpoint into a `model_type` model.

    Args:
        checkpoint: safetensors or pickled torch file (or a folder of them) holding the reference's state dict, whole
            (all components, with their prefixes) or one component.
        output_dir: when given, the model, its processor, `conversion_report.json` and a model card are saved there.
        model_type: the omni-encoders model type to convert to (see `REFERENCE_LAYOUTS`).
        config: config of the target model: a config, or config arguments (a dict or a config.json path) over the
            reference's default sizes (our defaults, the spec's full size, with `ReferenceLayout.reference_config`),
            which are the target config when `config` is None. Its sizes must match the checkpoint's.
        dtype: dtype of the converted model; defaults to the dtype of the checkpoint's weights.
        model_id: name the model card uses in its loading snippets (defaults to the output folder's name).

    Returns:
        `(model, report)`: the converted model and its [`ConversionReport`].

    Raises:
        ValueError: when a tensor does not fit the config (all mismatches are listed), or the checkpoint holds none
            of the model type's tensors.
    """
    import omni_encoders

    if model_type not in REFERENCE_LAYOUTS:
        raise ValueError(f"No reference layout for model_type '{model_type}'; known: {sorted(REFERENCE_LAYOUTS)}.")
    layout = REFERENCE_LAYOUTS[model_type]
    config = _build_config(layout, config)
    model = getattr(omni_encoders, layout.model_class)(config)

    state_dict = load_state_dict(checkpoint)
    target_shapes = {key: tensor.shape for key, tensor in model.state_dict().items()}
    converted, report = convert_state_dict(
        state_dict,
        target_shapes,
        layout.components,
        source=Path(checkpoint).name,  # not the local path: the report and card may be published
        layout=f"reference {model_type}",
    )
    if not converted:
        prefixes = ", ".join(component.source_prefix for component in layout.components)
        raise ValueError(f"{checkpoint} holds no tensor of the reference's {prefixes} component(s).")
    load_converted(model, converted)
    model = model.to(dtype or most_common_float_dtype(state_dict)).eval()

    if output_dir is not None:
        processor = layout.build_processor(config) if layout.build_processor is not None else None
        save_converted(model, output_dir, report, COMMAND, processor=processor, model_id=model_id)
    return model, report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="safetensors or pickled torch checkpoint of the reference implementation")
    parser.add_argument("output_dir", help="folder to write the converted model to")
    parser.add_argument("--model-type", default="omni_vision", choices=sorted(REFERENCE_LAYOUTS))
    parser.add_argument("--config", help="config.json of the target model (default: the reference's sizes)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config argument")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="dtype of the saved weights (default: the source's)")
    parser.add_argument("--model-id", help="Hub id the model card's snippets use (default: the output folder's name)")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text()) if args.config else {}
    try:
        overrides = parse_overrides(args.set, args.model_type)
    except ValueError as error:
        parser.error(f"--set: {error}")
    _, report = convert_reference_checkpoint(
        args.checkpoint,
        args.output_dir,
        model_type=args.model_type,
        config={**config, **overrides},
        dtype=DTYPES.get(args.dtype),
        model_id=args.model_id,
    )
    print(report)
    print(f"Saved to {args.output_dir}")


if __name__ == "__main__":
    main()

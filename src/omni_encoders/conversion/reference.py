# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Convert checkpoints of the spec's reference implementation into omni-encoders models.

The reference stores each model under a component prefix (`vision_encoder.`, `video_encoder.`, `audio_encoder.`,
`audio_decoder.`, `waveform_decoder.`; see `shared/reference/reference_checkpoint_keys.json`). Every tensor whose
module exists in our design is mapped onto it (fused projections are split); the others are dropped, and the
parameters of ours the reference does not have are newly initialised: the report names both. Inputs are safetensors
or pickled torch files (read with `torch.load(weights_only=True)`), a whole multi-component checkpoint or one component
on its own.

    python -m omni_encoders.conversion.reference xoron.safetensors ./omni-vision --model-type omni_vision
    python -m omni_encoders.conversion.reference vision.pt ./omni-vision --config my_config.json

The vision encoder (`vision_encoder.*`):

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

(`X` is the stream, `a` or `b`.)

Dropped: the SigLIP attention-pooling head when the config's backbone has none (`vision_use_head=False`, as our
default), and `titok.compress.*`, the reference's D→D projection after the compression attention (our compressor's
feed-forward layer is a residual `D -> intermediate_size -> D` MLP). Newly initialised: the q/k/v/o biases of the
dual-stream blocks (zeros; the reference has none), the compressor's pre-norms and feed-forward layer, and the final
`post_layernorm` of the patch embeddings.

Another model type plugs in with one [`ReferenceLayout`] in `REFERENCE_LAYOUTS`: its components and rules (e.g. the
video encoder: `Component("video_encoder.vision_encoder.", "vision_model.", vision_encoder_rules())` for its nested
vision encoder, whose TiTok tensors are then reported as dropped since that model has no compressor, plus
`Component("video_encoder.", "", ...)` for its own blocks; the audio decoder: `audio_decoder.` and
`waveform_decoder.` components; weight-norm `parametrizations.weight.original0/1` map 1:1 onto a model that uses
`torch.nn.utils.parametrizations.weight_norm` too).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


def _flatten_leading(tensor: torch.Tensor) -> torch.Tensor:
    """`[1, T, D]` learned queries -> `[T, D]`."""
    return tensor.reshape(-1, tensor.shape[-1])


def vision_encoder_rules(backbone_prefix: str = "backbone.") -> tuple[Rule, ...]:
    """Rules from the reference vision encoder (`vision_encoder.*` without its prefix) to `OmniVisionModel`."""
    attn = "layers.{0}.stream_{1}.self_attn"
    stream = "layers.{0}.stream_{1}"
    block = r"dual_stream_layers\.(\d+)"
    return (
        *tower_rules(backbone_prefix)[:2],  # the SigLIP tower under vision_model.* (4.x: vision_model.vision_model.*)
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


def _vision_processor(config):
    from ..image_processing_omni_vision import OmniVisionImageProcessor

    return OmniVisionImageProcessor(size={"height": config.image_size, "width": config.image_size})


@dataclass(frozen=True)
class ReferenceLayout:
    """How the reference stores one of our model types.

    Args:
        model_class, config_class: names of the target classes in `omni_encoders`.
        components: where the tensors are (source prefix -> target prefix) and how they map; the last one is used
            for a checkpoint of that component saved on its own, without its prefix.
        build_processor: `config -> processor` saved with the converted model.
    """

    model_class: str
    config_class: str
    components: tuple[Component, ...]
    build_processor: Callable | None = None


REFERENCE_LAYOUTS: dict[str, ReferenceLayout] = {
    "omni_vision": ReferenceLayout(
        "OmniVisionModel",
        "OmniVisionConfig",
        (Component("vision_encoder.", "", vision_encoder_rules()),),
        _vision_processor,
    ),
}


def _build_config(config_class, config) -> PreTrainedConfig:
    if isinstance(config, PreTrainedConfig):
        return config
    if config is None:
        return config_class()  # the spec's full size, the reference's defaults
    config_dict = config if isinstance(config, dict) else json.loads(Path(config).read_text())
    return config_class.from_dict(config_dict)


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
        config: config of the target model (a config, a dict, or a config.json path); defaults to the spec's full
            size, which is the reference's default. Its sizes must match the checkpoint's.
        dtype: dtype of the converted model; defaults to the dtype of the checkpoint's weights.
        model_id: name the model card uses in its loading snippets (defaults to the output folder's name).

    Returns:
        `(model, report)`: the converted model and its [`ConversionReport`].

    Raises:
        ValueError: when a tensor does not fit the config (all mismatches are listed), or the checkpoint holds none
            of the component's tensors.
    """
    import omni_encoders

    if model_type not in REFERENCE_LAYOUTS:
        raise ValueError(f"No reference layout for model_type '{model_type}'; known: {sorted(REFERENCE_LAYOUTS)}.")
    layout = REFERENCE_LAYOUTS[model_type]
    config = _build_config(getattr(omni_encoders, layout.config_class), config)
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
    parser.add_argument("--config", help="config.json of the target model (default: the spec's full size)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config argument")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="dtype of the saved weights (default: the source's)")
    parser.add_argument("--model-id", help="Hub id the model card's snippets use (default: the output folder's name)")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text()) if args.config else {}
    _, report = convert_reference_checkpoint(
        args.checkpoint,
        args.output_dir,
        model_type=args.model_type,
        config={**config, **parse_overrides(args.set)},
        dtype=DTYPES.get(args.dtype),
        model_id=args.model_id,
    )
    print(report)
    print(f"Saved to {args.output_dir}")


if __name__ == "__main__":
    main()

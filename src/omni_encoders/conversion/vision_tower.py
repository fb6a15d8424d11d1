# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Build an omni-encoders model around a pretrained vision tower: SigLIP, SigLIP 2 or CLIP, from a vision-only or a
full image-text checkpoint, laid out as transformers 5.x saves it or as 4.x did (including a 4.x vision model nested in
a wrapper, `vision_model.vision_model.*`).

The tower's tensors go to the model's backbone; the layers on top (dual-stream blocks, compressor) are newly
initialised, and the report says so by name. For a standard transformers checkpoint,
`OmniVisionModel.from_backbone_pretrained(...)` does the same in one call without the report; this converter also
reads raw weight files (with `--backbone-config`), and writes a `save_pretrained` folder with an image processor,
`conversion_report.json` and a model card.

    python -m omni_encoders.conversion.vision_tower google/siglip-so400m-patch14-384 ./omni-vision-so400m
    python -m omni_encoders.conversion.vision_tower ./clip-vit-b16 ./omni-vision-clip --set num_tokens=64
    python -m omni_encoders.conversion.vision_tower google/siglip-so400m-patch14-384 ./omni-video-so400m \
        --model-type omni_video --set num_tokens_per_frame=32 --set 'vision_config={"num_hidden_layers": 1}'

Targets ([`TowerTarget`] in `TOWER_TARGETS`): `omni_vision` (`OmniVisionModel`, the tower under `backbone.`) and
`omni_video` (`OmniVideoModel`, the tower under `vision_model.backbone.`: the per-frame vision encoder's backbone;
`--set` arguments go to the `OmniVideoConfig`, and `vision_config` to the `OmniVisionConfig` built around the tower).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, PreTrainedConfig

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
    resolve_checkpoint,
    save_converted,
)


SUPPORTED_TOWERS = ("siglip_vision_model", "siglip2_vision_model", "clip_vision_model")
COMMAND = "python -m omni_encoders.conversion.vision_tower"


def tower_rules(backbone_prefix: str = "backbone.", *, nested_only: bool = False) -> tuple[Rule, ...]:
    """Rules that put a SigLIP/SigLIP 2/CLIP vision tower under `backbone_prefix`, whatever its layout.

    `nested_only=True` keeps the rules for a tower under `vision_model.` (and the pooling-head drop) and leaves out
    those for a bare 5.x vision model and for the text tower of an image-text model: for a tower nested in a larger
    checkpoint whose other keys mean something else (the spec's reference vision encoder)."""
    nested = (
        drop(
            r"(?:vision_model\.){0,2}head\..+", "attention-pooling head of the tower (the model reads patch features)"
        ),
        # a 4.x vision model inside a wrapper; image-text models and 4.x vision-only models
        Rule(r"vision_model\.vision_model\.(.+)", backbone_prefix + "{0}"),
        Rule(r"vision_model\.(.+)", backbone_prefix + "{0}"),
    )
    if nested_only:
        return nested
    return (
        *nested,
        # 5.x vision-only models
        Rule(r"((?:embeddings|encoder|pre_layrnorm|post_layernorm)\..+)", backbone_prefix + "{0}"),
        drop(
            r"text_model\..+|text_projection\..+|visual_projection\..+|logit_scale|logit_bias",
            "text tower or contrastive head of the image-text model",
        ),
    )


def _vision_config(tower_config: PreTrainedConfig, overrides: dict) -> PreTrainedConfig:
    from ..configuration_omni_vision import OmniVisionConfig

    return OmniVisionConfig(backbone_config=tower_config, **overrides)


def _video_config(tower_config: PreTrainedConfig, overrides: dict) -> PreTrainedConfig:
    """An `OmniVideoConfig` around the tower; `overrides` are its arguments, `vision_config` (a dict) those of the
    per-frame vision encoder."""
    from ..configuration_omni_video import OmniVideoConfig

    overrides = dict(overrides)
    vision_config = _vision_config(tower_config, dict(overrides.pop("vision_config", None) or {}))
    return OmniVideoConfig(vision_config=vision_config, **overrides)


def _normalisation(source_folder: Path | None) -> dict:
    """The tower's `image_mean`/`image_std` (e.g. CLIP's), from its `preprocessor_config.json` when it has one."""
    preprocessor_file = source_folder / "preprocessor_config.json" if source_folder is not None else None
    if preprocessor_file is None or not preprocessor_file.is_file():
        return {}
    source = json.loads(preprocessor_file.read_text())
    return {key: source[key] for key in ("image_mean", "image_std") if key in source}


def _vision_processor(config, source_folder: Path | None):
    from ..image_processing_omni_vision import OmniVisionImageProcessor

    size = {"height": config.image_size, "width": config.image_size}
    return OmniVisionImageProcessor(size=size, **_normalisation(source_folder))


def _video_processor(config, source_folder: Path | None):
    from ..video_processing_omni_video import OmniVideoVideoProcessor

    size = {"height": config.image_size, "width": config.image_size}
    return OmniVideoVideoProcessor(size=size, num_frames=config.num_frames, **_normalisation(source_folder))


@dataclass(frozen=True)
class TowerTarget:
    """How a model type takes a vision tower.

    Args:
        model_class: name of the model class in `omni_encoders`.
        backbone_prefix: where the tower's tensors go in the model's state dict.
        build_config: `(tower_config, overrides) -> config of the model`.
        build_processor: `(config, source folder or None) -> processor`, saved with the model.
    """

    model_class: str
    backbone_prefix: str
    build_config: Callable[[PreTrainedConfig, dict], PreTrainedConfig]
    build_processor: Callable | None = None


TOWER_TARGETS: dict[str, TowerTarget] = {
    "omni_vision": TowerTarget("OmniVisionModel", "backbone.", _vision_config, _vision_processor),
    "omni_video": TowerTarget("OmniVideoModel", "vision_model.backbone.", _video_config, _video_processor),
}


def read_tower_config(source: Path, backbone_config: str | os.PathLike | dict | PreTrainedConfig | None = None):
    """The vision config of the tower: `backbone_config` when given (a config, a dict or a config.json path), else the
    `config.json` next to the weights (a full image-text config contributes its `vision_config`)."""
    if isinstance(backbone_config, PreTrainedConfig):
        config = backbone_config
    elif backbone_config is not None:
        if not isinstance(backbone_config, dict):
            backbone_config = json.loads(Path(backbone_config).read_text())
        config = AutoConfig.for_model(**backbone_config)
    else:
        folder = source if source.is_dir() else source.parent
        if not (folder / "config.json").is_file():
            raise ValueError(
                f"{source} has no config.json next to its weights: pass the tower's config (backbone_config=..., or "
                "--backbone-config path/to/config.json)."
            )
        config = AutoConfig.from_pretrained(folder)
    config = getattr(config, "vision_config", None) or config
    if config.model_type not in SUPPORTED_TOWERS:
        raise ValueError(
            f"Unsupported vision tower of model_type '{config.model_type}'; expected one of {SUPPORTED_TOWERS} or a "
            "full siglip/siglip2/clip config."
        )
    return config


def convert_vision_tower(
    source: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    model_type: str = "omni_vision",
    backbone_config: str | os.PathLike | dict | PreTrainedConfig | None = None,
    dtype: torch.dtype | None = None,
    model_id: str | None = None,
    **config_overrides,
):
    """Build a `model_type` model around the vision tower of `source`.

    Args:
        source: a Hub id or a local checkpoint (folder or weight file) of a SigLIP, SigLIP 2 or CLIP model,
            vision-only or image-text.
        output_dir: when given, the model, its image processor, `conversion_report.json` and a model card are saved
            there.
        model_type: the omni-encoders model type to build (see `TOWER_TARGETS`).
        backbone_config: the tower's config, for sources without a `config.json`.
        dtype: dtype of the converted model; defaults to the dtype of the source's weights.
        model_id: name the model card uses in its loading snippets (defaults to the output folder's name).
        config_overrides: arguments of the new config (e.g. `num_tokens=64`; for `omni_video`, `vision_config` is a
            dict of arguments of its `OmniVisionConfig`).

    Returns:
        `(model, report)`: the converted model and its [`ConversionReport`].
    """
    import omni_encoders

    if model_type not in TOWER_TARGETS:
        raise ValueError(f"No vision-tower conversion for model_type '{model_type}'; known: {sorted(TOWER_TARGETS)}.")
    target = TOWER_TARGETS[model_type]
    is_hub_id = not Path(source).exists()
    local_source = resolve_checkpoint(source)
    tower_config = read_tower_config(local_source, backbone_config)
    config = target.build_config(tower_config, config_overrides)
    model = getattr(omni_encoders, target.model_class)(config)

    state_dict = load_state_dict(local_source)
    target_shapes = {key: tensor.shape for key, tensor in model.state_dict().items()}
    converted, report = convert_state_dict(
        state_dict,
        target_shapes,
        (Component("", "", tower_rules(target.backbone_prefix)),),
        source=str(source) if is_hub_id else Path(source).name,  # not a local path: the card may be published
        layout=f"{tower_config.model_type} tower",
    )
    if not any(key.startswith(target.backbone_prefix) for key in converted):
        raise ValueError(f"No vision-tower tensors found in {source}: is it a SigLIP, SigLIP 2 or CLIP checkpoint?")
    load_converted(model, converted)
    model = model.to(dtype or most_common_float_dtype(state_dict)).eval()

    if output_dir is not None:
        folder = local_source if local_source.is_dir() else local_source.parent
        processor = target.build_processor(config, folder) if target.build_processor is not None else None
        base_model = str(source) if is_hub_id else None
        save_converted(
            model, output_dir, report, COMMAND, processor=processor, base_model=base_model, model_id=model_id
        )
    return model, report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="Hub id or local checkpoint (folder or weight file) of the vision tower")
    parser.add_argument("output_dir", help="folder to write the converted model to")
    parser.add_argument("--model-type", default="omni_vision", choices=sorted(TOWER_TARGETS))
    parser.add_argument("--backbone-config", help="config.json of the tower, for weights without one")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config argument of the new model"
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="dtype of the saved weights (default: the source's)")
    parser.add_argument("--model-id", help="Hub id the model card's snippets use (default: the output folder's name)")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.set, args.model_type)
    except ValueError as error:
        parser.error(f"--set: {error}")
    _, report = convert_vision_tower(
        args.source,
        args.output_dir,
        model_type=args.model_type,
        backbone_config=args.backbone_config,
        dtype=DTYPES.get(args.dtype),
        model_id=args.model_id,
        **overrides,
    )
    print(report)
    print(f"Saved to {args.output_dir}")


if __name__ == "__main__":
    main()

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Configuration of the omni-encoders vision encoder."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.activations import ACT2FN
from transformers.configuration_utils import SubConfigSpec


# Vision towers the model can sit on. Composite configs (`siglip`, `siglip2`, `clip`) are reduced to their vision part.
SUPPORTED_BACKBONES = ("siglip_vision_model", "siglip2_vision_model", "clip_vision_model")

# google/siglip-so400m-patch14-384, the spec's backbone. The attention-pooling head is not used by this model.
SIGLIP_SO400M_PATCH14_384 = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
    "vision_use_head": False,
}


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_common_fields(config: PreTrainedConfig) -> None:
    """The checks the vision and video configs share: `rope_theta` and `layer_norm_eps` positive and finite,
    `hidden_act` one of transformers' activations, `attention_dropout` and `classifier_dropout` in [0, 1)."""
    for name in ("rope_theta", "layer_norm_eps"):
        value = getattr(config, name)
        if not _is_real(value) or not 0 < value < math.inf:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    if not isinstance(config.hidden_act, str) or config.hidden_act not in ACT2FN:
        raise ValueError(
            f"Unknown hidden_act {config.hidden_act!r}; expected one of transformers' activations: "
            f"{', '.join(sorted(ACT2FN))}."
        )
    for name in ("attention_dropout", "classifier_dropout"):
        value = getattr(config, name)
        if not _is_real(value) or not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}.")


@strict
class OmniVisionConfig(PreTrainedConfig):
    r"""
    Configuration of [`OmniVisionModel`]: a pretrained vision tower, 2D rotary embeddings over the patch grid,
    dual-stream attention blocks and TiTok compression of the patches into `num_tokens` learned-query tokens.

    The defaults build the spec's full size: SigLIP so400m-patch14-384 (hidden 1152, 27 layers, a 27×27 = 729 patch
    grid at 384 px), 2 dual-stream blocks with 8 heads and a ×4 feed-forward, 256 output tokens.

    Args:
        backbone_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the vision tower: a `SiglipVisionConfig`, `Siglip2VisionConfig` or `CLIPVisionConfig` (or a dict
            with their `model_type`; a full `siglip`/`siglip2`/`clip` config contributes its `vision_config`).
            Defaults to SigLIP so400m-patch14-384.
        num_hidden_layers (`int`, *optional*, defaults to 2):
            Number of dual-stream blocks on top of the backbone (0 is allowed).
        num_attention_heads (`int`, *optional*, defaults to 8):
            Heads of the dual-stream and compression attention. Must divide the backbone's hidden size, and the head
            dimension must be divisible by 4 (half of it rotates with x, half with y).
        intermediate_size (`int`, *optional*):
            Width of the feed-forward layers; defaults to 4 × the hidden size.
        hidden_act (`str`, *optional*, defaults to `"gelu_pytorch_tanh"`):
            Activation of the feed-forward layers, a name in transformers' `ACT2FN`.
        num_tokens (`int`, *optional*, defaults to 256):
            Number of TiTok output tokens (the spec's table says 64, its TiTok section 256; see the README). `0`
            disables the token compressor: the model then has no compressor weights and its `last_hidden_state` is
            the patch embeddings, `[batch_size, grid_height * grid_width, hidden_size]`.
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the 2D rotary embedding (positive).
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the LayerNorms (positive).
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities in training.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the initialisation of the layers on top of the backbone.
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout before the classifier of [`OmniVisionForImageClassification`].

    Example:

    ```python
    >>> from omni_encoders import OmniVisionConfig, OmniVisionModel
    >>> config = OmniVisionConfig()  # SigLIP so400m backbone, 256 output tokens
    >>> model = OmniVisionModel(config)
    ```
    """

    model_type = "omni_vision"
    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(
            config_class=AutoConfig, model_type="siglip_vision_model", init_kwargs=SIGLIP_SO400M_PATCH14_384
        )
    }

    backbone_config: dict | PreTrainedConfig | None = None
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    intermediate_size: int | None = None
    hidden_act: str = "gelu_pytorch_tanh"
    num_tokens: int = 256
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    classifier_dropout: float = 0.0

    def __post_init__(self, **kwargs):
        if isinstance(self.backbone_config, dict) and self.backbone_config.get("model_type") in ("siglip", "siglip2", "clip"):
            vision_model_type = f"{self.backbone_config['model_type']}_vision_model"
            self.backbone_config = {**(self.backbone_config.get("vision_config") or {}), "model_type": vision_model_type}
        elif isinstance(self.backbone_config, PreTrainedConfig) and hasattr(self.backbone_config, "vision_config"):
            self.backbone_config = self.backbone_config.vision_config
        super().__post_init__(**kwargs)
        if self.backbone_config.model_type not in SUPPORTED_BACKBONES:
            raise ValueError(
                f"Unsupported backbone_config of model_type '{self.backbone_config.model_type}'; expected one of "
                f"{SUPPORTED_BACKBONES} (or a full siglip/siglip2/clip config)."
            )
        if getattr(self.backbone_config, "vision_use_head", False):
            # The model reads the patch features: SigLIP's attention-pooling head would be parameters without a
            # gradient (which DDP without `find_unused_parameters` refuses), so it is not built.
            self.backbone_config.vision_use_head = False
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        self._validate()

    def _validate(self):
        for name in ("num_hidden_layers", "num_attention_heads", "intermediate_size", "num_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):  # bool is an int subclass
                raise ValueError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}.")
        for name in ("num_hidden_layers", "num_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("num_attention_heads", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"The backbone's hidden size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if (self.hidden_size // self.num_attention_heads) % 4 != 0:
            raise ValueError(
                f"The head dimension ({self.hidden_size // self.num_attention_heads}) must be divisible by 4 so that "
                "the 2D rotary embedding can give x and y an equal number of frequency pairs."
            )
        validate_common_fields(self)

    @property
    def hidden_size(self) -> int:
        """Width of the model: the backbone's hidden size."""
        return self.backbone_config.hidden_size

    @property
    def patch_size(self) -> int:
        """Side of a square patch in pixels."""
        patch_size = self.backbone_config.patch_size
        return patch_size[0] if isinstance(patch_size, (list, tuple)) else patch_size

    @property
    def image_size(self) -> int:
        """The backbone's native square resolution (other sizes divisible by `patch_size` work too)."""
        image_size = getattr(self.backbone_config, "image_size", None)
        if image_size is None:  # SigLIP2 is trained at variable resolution; its native grid is `num_patches`
            return int(self.backbone_config.num_patches**0.5) * self.patch_size
        return image_size[0] if isinstance(image_size, (list, tuple)) else image_size


OmniVisionConfig.register_for_auto_class()

__all__ = ["OmniVisionConfig"]

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Configuration of the omni-encoders video encoder."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .configuration_omni_vision import OmniVisionConfig, validate_common_fields


# How the pooled video embedding is made from the compressed tokens (see `OmniVideoConfig.pooling`).
POOLING_MODES = ("mean", "last_frame")


@strict
class OmniVideoConfig(PreTrainedConfig):
    r"""
    Configuration of [`OmniVideoModel`]: per-frame features from the vision encoder, 3D rotary embeddings over
    `(x, y, t)`, blocks of factorised (spatial, then frame-causal temporal) attention with a temporal
    mixture-of-experts feed-forward layer, and per-frame compression into `num_tokens_per_frame` tokens.

    The defaults build the spec's full size: the default [`OmniVisionConfig`] (SigLIP so400m-patch14-384 and 2
    dual-stream blocks, hidden size 1152, a 27×27 patch grid at 384 px), 4 video blocks with 8 heads, 4 SwiGLU experts
    (top-2) plus a shared expert, 64 tokens per frame.

    Args:
        vision_config (`dict` or `OmniVisionConfig`, *optional*):
            Config of the per-frame vision encoder (its backbone and dual-stream blocks; its TiTok compressor is not
            built). Defaults to [`OmniVisionConfig`]'s defaults. The video model's width is its hidden size.
        num_hidden_layers (`int`, *optional*, defaults to 4):
            Number of video blocks (spatial attention, temporal attention, temporal MoE).
        num_attention_heads (`int`, *optional*, defaults to 8):
            Heads of the spatial, temporal and compression attention. Must divide the hidden size; the head dimension
            is split three ways for the x, y and t rotary axes, so it must be even and at least 6.
        num_experts (`int`, *optional*, defaults to 4):
            Routed SwiGLU experts per temporal MoE layer.
        num_experts_per_tok (`int`, *optional*, defaults to 2):
            Experts each token is routed to (top-k).
        use_shared_expert (`bool`, *optional*, defaults to `True`):
            Add a shared SwiGLU expert that every token goes through.
        moe_intermediate_size (`int`, *optional*):
            Width of each (routed and shared) expert; defaults to 4 × the hidden size.
        hidden_act (`str`, *optional*, defaults to `"silu"`):
            Activation of the gated experts (`silu` gives SwiGLU).
        router_aux_loss_coef (`float`, *optional*, defaults to 0.01):
            Weight of the load-balancing loss added to the loss of the task heads.
        num_tokens_per_frame (`int`, *optional*, defaults to 64):
            Tokens each frame is compressed to; `last_hidden_state` has `num_frames * num_tokens_per_frame` tokens.
        compressor_intermediate_size (`int`, *optional*):
            Width of the per-frame compressor's feed-forward layer; defaults to 4 × the hidden size.
        num_frames (`int`, *optional*, defaults to 16):
            Frames sampled per video by default (read by the `video-classification` pipeline).
        max_frames (`int`, *optional*, defaults to 32):
            Longest clip the model accepts.
        frame_causal (`bool`, *optional*, defaults to `True`):
            Whether the temporal attention is frame-causal (a token of frame t sees frames <= t). With `False` it sees
            every (valid) frame.
        pooling (`str`, *optional*, defaults to `"mean"`):
            How the pooled video embedding (`pooler_output`, which the classifier reads) is made from the compressed
            tokens: `"mean"` averages the tokens of all real frames; `"last_frame"` averages the tokens of each video's
            last real frame, which with frame-causal temporal attention have seen the whole clip. Prefer
            `"last_frame"` when the order of events matters (e.g. the direction of motion): the mean over frames
            dilutes what the temporal attention learns about order with what every frame shows, and a small model
            trained on such a task can sit at chance far longer with it.
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the 3D rotary embedding.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the LayerNorms.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities in training.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the initialisation of the layers on top of the vision encoder.
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout before the classifier of [`OmniVideoForVideoClassification`].

    Example:

    ```python
    >>> from omni_encoders import OmniVideoConfig, OmniVideoModel
    >>> config = OmniVideoConfig()  # SigLIP so400m frames, 4 blocks, 64 tokens per frame
    >>> model = OmniVideoModel(config)
    ```
    """

    model_type = "omni_video"
    sub_configs_defaults = {"vision_config": OmniVisionConfig}

    vision_config: dict | OmniVisionConfig | None = None
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_experts: int = 4
    num_experts_per_tok: int = 2
    use_shared_expert: bool = True
    moe_intermediate_size: int | None = None
    hidden_act: str = "silu"
    router_aux_loss_coef: float = 0.01
    num_tokens_per_frame: int = 64
    compressor_intermediate_size: int | None = None
    num_frames: int = 16
    max_frames: int = 32
    frame_causal: bool = True
    pooling: str = "mean"
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    classifier_dropout: float = 0.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.moe_intermediate_size is None:
            self.moe_intermediate_size = 4 * self.hidden_size
        if self.compressor_intermediate_size is None:
            self.compressor_intermediate_size = 4 * self.hidden_size
        self._validate()

    def _validate(self):
        if self.num_attention_heads <= 0 or self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"The hidden size ({self.hidden_size}, from vision_config) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        head_dim = self.hidden_size // self.num_attention_heads
        if head_dim % 2 != 0 or head_dim < 6:
            raise ValueError(
                f"The head dimension ({head_dim}) must be even and at least 6 so that the 3D rotary embedding can "
                "give each of x, y and t a frequency pair."
            )
        if self.num_hidden_layers < 0:
            raise ValueError(f"num_hidden_layers must be >= 0, got {self.num_hidden_layers}.")
        for name in ("num_experts", "num_tokens_per_frame", "num_frames", "max_frames", "moe_intermediate_size",
                     "compressor_intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) must be between 1 and num_experts "
                f"({self.num_experts})."
            )
        if self.num_frames > self.max_frames:
            raise ValueError(f"num_frames ({self.num_frames}) must not exceed max_frames ({self.max_frames}).")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}.")
        if self.router_aux_loss_coef < 0:
            raise ValueError(f"router_aux_loss_coef must be >= 0, got {self.router_aux_loss_coef}.")
        validate_common_fields(self)

    @property
    def hidden_size(self) -> int:
        """Width of the model: the vision encoder's hidden size."""
        return self.vision_config.hidden_size

    @property
    def patch_size(self) -> int:
        """Side of a square patch in pixels (from the vision encoder)."""
        return self.vision_config.patch_size

    @property
    def image_size(self) -> int:
        """The vision backbone's native square frame resolution."""
        return self.vision_config.image_size


OmniVideoConfig.register_for_auto_class()

__all__ = ["OmniVideoConfig"]

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""The omni-encoders vision encoder: a pretrained vision tower, 2D-RoPE dual-stream blocks and TiTok compression."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_omni_vision import OmniVisionConfig
from .modeling_omni_common import (
    OmniActivation,
    OmniAttention,
    OmniClassifierOutput,
    OmniMLP,
    OmniPreTrainedModel,
    OmniRotaryEmbedding,
    OmniTokenCompressor,
    dispatch_attention,
    grid_positions,
    returns_attention_weights,
)

@dataclass
class OmniVisionModelOutput(ModelOutput):
    """
    Output of [`OmniVisionModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_tokens, hidden_size)`):
            The TiTok tokens (or the patch embeddings when the model has no token compressor).
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Mean of `last_hidden_state` over tokens.
        patch_embeddings (`torch.FloatTensor` of shape `(batch_size, grid_height * grid_width, hidden_size)`):
            Patch features after the dual-stream blocks (streams averaged) and the final LayerNorm, row-major.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The backbone's hidden states followed by the (stream-averaged) output of every dual-stream block,
            `(batch_size, num_patches, hidden_size)`. With a CLIP backbone, the backbone's hidden states include its
            class token first: `num_patches + 1` tokens, one more than the entries of the dual-stream blocks.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            The backbone's attention weights followed by the joint attention weights of every dual-stream block,
            `(batch_size, num_heads, 2 * num_patches, 2 * num_patches)`. Eager attention only, as in transformers: with
            another implementation the dual-stream blocks add no entries (and with `sdpa` the backbone none either,
            the tuple is empty).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    patch_embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class OmniDualStreamBranch(nn.Module):
    """The weights of one stream of a dual-stream block: pre-norm attention projections and a feed-forward layer."""

    def __init__(self, config: OmniVisionConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = OmniAttention(
            config, config.hidden_size, config.num_attention_heads, attention_dropout=config.attention_dropout
        )
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = OmniMLP(config.hidden_size, config.intermediate_size, config.hidden_act)


class OmniDualStreamBlock(GradientCheckpointingLayer):
    """SD3/Flux-style dual-stream block.

    Two streams with separate weights; the queries of both attend over the concatenated keys/values of both (joint
    attention over `2 * N` tokens), then each stream runs its own feed-forward layer.
    """

    def __init__(self, config: OmniVisionConfig):
        super().__init__()
        self.stream_a = OmniDualStreamBranch(config)
        self.stream_b = OmniDualStreamBranch(config)

    def forward(
        self,
        hidden_states_a: torch.Tensor,
        hidden_states_b: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states_a, hidden_states_b: `[B, N, D]` the two streams over the same `N` patches.
            position_embeddings: `(cos, sin)` `[N, head_dim]` for the patch grid, shared by both streams.
            output_attentions: return the joint attention weights (eager attention only); they are not kept otherwise.

        Returns:
            `(stream a [B, N, D], stream b [B, N, D], joint attention weights [B, H, 2N, 2N] or None)`.
        """
        attn_a, attn_b = self.stream_a.self_attn, self.stream_b.self_attn
        query_a, key_a, value_a = attn_a.project(
            self.stream_a.input_layernorm(hidden_states_a), position_embeddings=position_embeddings
        )
        query_b, key_b, value_b = attn_b.project(
            self.stream_b.input_layernorm(hidden_states_b), position_embeddings=position_embeddings
        )
        # Only the keys and values are joint. Each stream's queries attend over them in a call of their own, which is
        # the joint attention (its query rows are independent) without the joint query and output tensors; each
        # stream's parts are freed as soon as they are used, so that inference keeps the block's peak memory low.
        key = torch.cat([key_a, key_b], dim=2)
        del key_a, key_b
        value = torch.cat([value_a, value_b], dim=2)
        del value_a, value_b
        output_a, weights_a = dispatch_attention(attn_a, query_a, key, value, **kwargs)
        del query_a
        if not output_attentions:
            weights_a = None  # eager's `[B, H, N, 2N]` probabilities: not kept while stream b attends
        hidden_states_a = hidden_states_a + attn_a.o_proj(output_a)
        del output_a
        output_b, weights_b = dispatch_attention(attn_b, query_b, key, value, **kwargs)
        del query_b, key, value
        hidden_states_b = hidden_states_b + attn_b.o_proj(output_b)
        del output_b
        attn_weights = None
        if output_attentions and weights_a is not None:
            attn_weights = torch.cat([weights_a, weights_b], dim=2)
        del weights_a, weights_b
        hidden_states_a = hidden_states_a + self.stream_a.mlp(self.stream_a.post_attention_layernorm(hidden_states_a))
        hidden_states_b = hidden_states_b + self.stream_b.mlp(self.stream_b.post_attention_layernorm(hidden_states_b))
        return hidden_states_a, hidden_states_b, attn_weights


class OmniVisionPreTrainedModel(OmniPreTrainedModel):
    config: OmniVisionConfig
    config_class = OmniVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["OmniDualStreamBlock", "OmniTokenCompressor"]

    # `from_pretrained` arguments that say where to find the files: the backbone's config is read with them too.
    _HUB_KWARGS = (
        "cache_dir",
        "force_download",
        "local_files_only",
        "proxies",
        "revision",
        "subfolder",
        "token",
        "trust_remote_code",
    )

    @classmethod
    def from_backbone_pretrained(cls, backbone_name_or_path: str, **kwargs) -> OmniVisionPreTrainedModel:
        """Build a fresh model (the encoder, or a head on it) around a pretrained vision tower, in one call, in
        evaluation mode (as `from_pretrained`).

        The tower is loaded by `AutoModel.from_pretrained` and becomes the model's backbone; the layers on top are
        newly initialised, in the tower's dtype and on its device.

        Args:
            backbone_name_or_path: a Hub id or local folder of a SigLIP, SigLIP2 or CLIP checkpoint (vision-only or
                full image-text; only the vision tower is loaded and SigLIP's attention-pooling head is dropped:
                transformers' loading report lists the checkpoint's other weights, e.g. the text tower, as
                "UNEXPECTED", as for `SiglipVisionModel.from_pretrained` on such a checkpoint).
            kwargs: [`OmniVisionConfig`] arguments for the layers on top (e.g. `num_tokens=64`); every other argument
                is an `AutoModel.from_pretrained` option for the tower (`dtype`, `attn_implementation`, `device_map`,
                `revision`, `subfolder`, `cache_dir`, `token`, `local_files_only`, ...), with its defaults: without
                `dtype`, the checkpoint's dtype. `attn_implementation` applies to the whole model.

        Example:

        ```python
        >>> model = OmniVisionModel.from_backbone_pretrained("google/siglip-so400m-patch14-384", dtype=torch.bfloat16)
        >>> classifier = OmniVisionForImageClassification.from_backbone_pretrained(
        ...     "google/siglip-so400m-patch14-384", num_labels=10
        ... )
        ```
        """
        if "backbone_config" in kwargs:
            raise ValueError(
                "from_backbone_pretrained reads the backbone config from `backbone_name_or_path`; to build a model "
                "around another backbone config, use `OmniVisionModel(OmniVisionConfig(backbone_config=...))`."
            )
        config_names = set(inspect.signature(cls.config_class).parameters) - {"dtype"}
        config_names |= {"num_labels", "output_attentions"}
        config_kwargs = {name: kwargs.pop(name) for name in list(kwargs) if name in config_names}
        hub_kwargs = {name: kwargs[name] for name in cls._HUB_KWARGS if name in kwargs}

        backbone_config = AutoConfig.from_pretrained(backbone_name_or_path, **hub_kwargs)
        backbone_config = getattr(backbone_config, "vision_config", backbone_config)
        if hasattr(backbone_config, "vision_use_head"):
            backbone_config.vision_use_head = False
        if config_kwargs.get("output_attentions") and "attn_implementation" not in kwargs:
            kwargs["attn_implementation"] = "eager"  # as `from_pretrained(..., output_attentions=True)` chooses
        backbone = AutoModel.from_pretrained(backbone_name_or_path, config=backbone_config, **kwargs)

        # The layers on top follow the tower as transformers loaded it: its dtype, device and attention implementation.
        attn_implementation = backbone.config._attn_implementation
        config = cls.config_class(backbone_config=backbone.config, **config_kwargs)
        with torch.device(backbone.device):
            model = cls._from_config(
                config, backbone=backbone, dtype=backbone.dtype, attn_implementation=attn_implementation
            )
        return model.eval()


class OmniVisionModel(OmniVisionPreTrainedModel):
    """
    The vision encoder: `pixel_values [B, 3, H, W]` -> backbone patch features -> 2D rotary dual-stream blocks ->
    TiTok compression -> `last_hidden_state [B, num_tokens, D]`, plus `patch_embeddings [B, (H/p)*(W/p), D]` and a
    pooled embedding.

    Any `H` and `W` work, square or not: the patch grid is `(H // patch_size, W // patch_size)` (as the backbone's patch
    convolution sees it), the backbone's position embeddings are interpolated to it and the rotary tables are built
    for it.

    Args:
        config ([`OmniVisionConfig`]): model configuration.
        add_token_compressor (`bool`, defaults to `True`): build the TiTok compressor. The video encoder reuses this
            model without it and gets the patch embeddings as `last_hidden_state`.
        backbone ([`PreTrainedModel`], *optional*): the vision tower to use, a model of `config.backbone_config` (the
            same config object), e.g. a pretrained one (see [`~OmniVisionModel.from_backbone_pretrained`]); it runs
            with the model's attention implementation. By default a new one is built from `config.backbone_config`.
    """

    def __init__(
        self,
        config: OmniVisionConfig,
        add_token_compressor: bool = True,
        backbone: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        if backbone is None:
            backbone = AutoModel.from_config(config.backbone_config)
        elif backbone.config is not config.backbone_config:
            raise ValueError(
                "`backbone` must be the model of `config.backbone_config`: build the config around it, with "
                "`OmniVisionConfig(backbone_config=backbone.config, ...)`."
            )
        elif backbone.config._attn_implementation is None:  # reset by the config built around it: the model's
            backbone.config._attn_implementation = self.config._attn_implementation
        self.backbone = backbone
        self._activations_in_place_at_inference(self.backbone, config.backbone_config.hidden_act)
        head_dim = config.hidden_size // config.num_attention_heads
        self.rotary_emb = OmniRotaryEmbedding(head_dim, num_axes=2, theta=config.rope_theta)
        self.layers = nn.ModuleList([OmniDualStreamBlock(config) for _ in range(config.num_hidden_layers)])
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.compressor = (
            OmniTokenCompressor(
                config,
                config.hidden_size,
                config.num_attention_heads,
                config.num_tokens,
                config.intermediate_size,
                config.hidden_act,
                config.layer_norm_eps,
                config.attention_dropout,
            )
            if add_token_compressor and config.num_tokens > 0
            else None
        )
        self.gradient_checkpointing = False
        self.post_init()

    @staticmethod
    def _activations_in_place_at_inference(backbone: nn.Module, hidden_act: str) -> None:
        """Swap the activation of the backbone's feed-forward layers (`fc1 -> activation_fn -> fc2` in SigLIP, SigLIP2
        and CLIP) for [`OmniActivation`]: the same function, applied in place without autograd. Their
        `[tokens, intermediate_size]` buffers are the peak memory of the model at inference; this drops one of the
        two. It runs out of place while `fc1` has forward hooks, so that they see its output and not the activation
        written over it. Activations without an in-place kernel (e.g. CLIP's quick GELU) are left as they are."""
        if hidden_act not in OmniActivation.IN_PLACE:
            return
        for module in backbone.modules():
            if all(hasattr(module, name) for name in ("fc1", "activation_fn", "fc2")):
                module.activation_fn = OmniActivation(hidden_act, module, "fc1")

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def patch_grid(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        """Validate `pixel_values [B, C, H, W]` and return the patch grid `(H // patch_size, W // patch_size)`.

        Like the backbone's patch convolution, trailing rows/columns that do not fill a whole patch are ignored (SigLIP
        so400m-patch14-384 turns 384 px into a 27×27 grid).
        """
        backbone_config = self.config.backbone_config
        if pixel_values.dim() != 4:
            raise ValueError(
                f"pixel_values must have shape [batch, channels, height, width], got {tuple(pixel_values.shape)}."
            )
        if pixel_values.shape[0] == 0:
            raise ValueError(
                f"pixel_values is an empty batch (shape {tuple(pixel_values.shape)}); pass at least one image."
            )
        if pixel_values.shape[1] != backbone_config.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels, the backbone expects "
                f"{backbone_config.num_channels} (shape [batch, channels, height, width])."
            )
        height, width = pixel_values.shape[-2:]
        patch_size = self.config.patch_size
        if height < patch_size or width < patch_size:
            raise ValueError(
                f"Image size {height}x{width} is smaller than one {patch_size}x{patch_size} patch; resize it (e.g. "
                "with the model's image processor)."
            )
        return height // patch_size, width // patch_size

    def backbone_features(
        self, pixel_values: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[int, int], ModelOutput]:
        """Patch features of the backbone, `[B, grid_h * grid_w, D]` row-major, with the grid and its raw output."""
        grid_height, grid_width = self.patch_grid(pixel_values)
        backbone_config = self.config.backbone_config
        capture = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        if backbone_config.model_type == "siglip2_vision_model":
            # SigLIP2 takes pre-patchified pixels: (patch_row, patch_col, channel) within each patch, row-major patches.
            batch_size, channels = pixel_values.shape[:2]
            patch_size = self.config.patch_size
            pixel_values = pixel_values[..., : grid_height * patch_size, : grid_width * patch_size]
            patches = pixel_values.reshape(batch_size, channels, grid_height, patch_size, grid_width, patch_size)
            patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(batch_size, grid_height * grid_width, -1)
            outputs = self.backbone(
                pixel_values=patches,
                pixel_attention_mask=torch.ones(patches.shape[:2], dtype=torch.long, device=patches.device),
                spatial_shapes=torch.tensor([[grid_height, grid_width]] * batch_size, device=patches.device),
                **capture,
            )
            return outputs.last_hidden_state, (grid_height, grid_width), outputs

        native = self.config.image_size
        interpolate = tuple(pixel_values.shape[-2:]) != (native, native)
        outputs = self.backbone(pixel_values=pixel_values, interpolate_pos_encoding=interpolate, **capture)
        features = outputs.last_hidden_state
        if backbone_config.model_type == "clip_vision_model":
            features = features[:, 1:]  # drop the class token
        return features, (grid_height, grid_width), outputs

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> OmniVisionModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised pixels, e.g. from [`OmniVisionImageProcessor`]. Pixels beyond the last whole patch are
                ignored.

        Example:

        ```python
        >>> import torch
        >>> from omni_encoders import OmniVisionConfig, OmniVisionModel
        >>> model = OmniVisionModel(OmniVisionConfig())
        >>> outputs = model(torch.randn(1, 3, 384, 384))
        >>> outputs.last_hidden_state.shape, outputs.patch_embeddings.shape
        (torch.Size([1, 256, 1152]), torch.Size([1, 729, 1152]))
        ```
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self.check_unused_kwargs(kwargs)
        blocks_output_attentions = returns_attention_weights(self.config, output_attentions)

        features, grid, backbone_outputs = self.backbone_features(
            pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        all_hidden_states = tuple(backbone_outputs.hidden_states) if output_hidden_states else None
        all_attentions = tuple(backbone_outputs.attentions) if output_attentions else None
        del backbone_outputs  # holds the features: let the first block's outputs replace them in memory

        position_embeddings = self.rotary_emb(grid_positions(grid, device=features.device))
        stream_a = stream_b = features
        del features
        for block in self.layers:
            stream_a, stream_b, attn_weights = block(
                stream_a, stream_b, position_embeddings, output_attentions=blocks_output_attentions
            )
            if output_hidden_states:
                all_hidden_states += ((stream_a + stream_b) / 2,)
            if blocks_output_attentions:
                all_attentions += (attn_weights,)
        patch_embeddings = self.post_layernorm((stream_a + stream_b) / 2)

        tokens = patch_embeddings if self.compressor is None else self.compressor(patch_embeddings)[0]
        output = OmniVisionModelOutput(
            last_hidden_state=tokens,
            pooler_output=tokens.mean(dim=1),
            patch_embeddings=patch_embeddings,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()


class OmniVisionForImageClassification(OmniVisionPreTrainedModel):
    """[`OmniVisionModel`] with a linear classifier on the pooled TiTok tokens.

    Args:
        config ([`OmniVisionConfig`]): model configuration.
        backbone ([`PreTrainedModel`], *optional*): the vision tower, as in [`OmniVisionModel`].
    """

    def __init__(self, config: OmniVisionConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = OmniVisionModel(config, backbone=backbone)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = (
            nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> OmniClassifierOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised pixels.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Class indices in `[0, num_labels)` (float targets for regression or multi-label problems); the loss
                follows `config.problem_type` as in transformers' classifiers.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self.check_unused_kwargs(kwargs)
        outputs = self.model(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        output = OmniClassifierOutput(
            loss=loss,
            logits=logits,
            pooler_output=outputs.pooler_output,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


OmniVisionModel.register_for_auto_class("AutoModel")
OmniVisionForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "OmniVisionForImageClassification",
    "OmniVisionModel",
    "OmniVisionModelOutput",
    "OmniVisionPreTrainedModel",
]

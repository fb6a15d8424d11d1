# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""The omni-modal LLM: a causal language model reading the tokens of our image, video and audio encoders, optionally
speaking its answers through our audio decoder (LLaVA / Qwen2.5-Omni style)."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from .configuration_omni import OmniConfig
from .modeling_omni_audio import OmniAudioModel
from .modeling_omni_audio_decoder import OmniAudioDecoderModel, OmniAudioDecoderOutput
from .modeling_omni_common import OmniPreTrainedModel
from .modeling_omni_video import OmniVideoModel
from .modeling_omni_vision import OmniVisionModel


@dataclass
class OmniEncoderOutput(ModelOutput):
    """
    What `get_image_features`, `get_video_features` and `get_audio_features` return: the encoder's tokens and the LM
    tokens they become.

    Args:
        pooler_output (`tuple(torch.FloatTensor)`):
            The LM tokens of each input, `(num_tokens_i, text_hidden_size)` each: the projected encoder tokens of the
            real content only (for a video, `real_frames × num_tokens_per_frame`; for audio, its valid frames), in
            the order the processor expands the placeholders (as transformers' multimodal models return them).
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_tokens, encoder_hidden_size)`):
            The encoder's tokens before the projector, padding included.
        token_mask (`torch.BoolTensor` of shape `(batch_size, num_tokens)`):
            True for the tokens of real content (the ones that become LM tokens).
        aux_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The encoder's training loss term: the video MoE's load-balancing loss × `router_aux_loss_coef`, or the
            audio quantiser's commitment loss; added to the LM loss when `labels` are given.
        encoder_outputs (`ModelOutput`):
            The encoder's whole output (hidden states, attentions, pooled embedding, ...).
    """

    pooler_output: tuple[torch.FloatTensor, ...] | None = None
    last_hidden_state: torch.FloatTensor | None = None
    token_mask: torch.BoolTensor | None = None
    aux_loss: torch.FloatTensor | None = None
    encoder_outputs: ModelOutput | None = None


@dataclass
class OmniCausalLMOutputWithPast(ModelOutput):
    """
    Output of [`OmniForConditionalGeneration`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Next-token cross-entropy over the label positions (-100 ignored; averaged as `config.loss_reduction`
            says), plus the encoders' `aux_loss` and the weighted `audio_ctc_loss`.
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
            The LM's next-token scores (only the last `logits_to_keep` positions when set).
        cache (`transformers.Cache`, *optional*):
            The LM's key/value cache, for generation.
        hidden_states, attentions (`tuple(torch.FloatTensor)`, *optional*):
            The LM's, as transformers' causal LMs return them.
        aux_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Sum of the encoders' training loss terms (see [`OmniEncoderOutput`]).
        audio_ctc_loss (`torch.FloatTensor` of shape `()`, *optional*, returned with `audio_ctc_labels`):
            The auxiliary CTC loss of the audio clips against their transcripts (unweighted; `loss` includes it
            × `config.audio_ctc_loss_weight`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    aux_loss: torch.FloatTensor | None = None
    audio_ctc_loss: torch.FloatTensor | None = None


@dataclass
class OmniGenerateOutput(ModelOutput):
    """
    What `OmniForConditionalGeneration.generate(..., return_audio=True)` returns.

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, prompt_length + new_tokens)`):
            The prompts and the generated answers, as `generate` returns them.
        waveform (`torch.FloatTensor` of shape `(batch_size, samples)`):
            Each answer spoken by the speech decoder, in [-1, 1] at `speech_decoder_config.sampling_rate`; zero after
            each item's `waveform_lengths`.
        waveform_lengths (`torch.LongTensor` of shape `(batch_size,)`):
            Valid samples of each waveform.
        speech_outputs ([`OmniAudioDecoderOutput`]):
            The speech decoder's whole output (mel, durations, pitch, energy).
    """

    sequences: torch.LongTensor | None = None
    waveform: torch.FloatTensor | None = None
    waveform_lengths: torch.LongTensor | None = None
    speech_outputs: OmniAudioDecoderOutput | None = None


class OmniProjector(nn.Module):
    """The MLP that maps an encoder's tokens `[..., input_size]` into another model's width `[..., output_size]`:
    `config.projector_num_layers` linear layers (`linears.0`, `linears.1`, ...; the names LoRA targets) with
    `config.projector_hidden_act` between them."""

    def __init__(self, input_size: int, output_size: int, config: OmniConfig):
        super().__init__()
        sizes = [input_size] + [config.projector_hidden_size] * (config.projector_num_layers - 1) + [output_size]
        self.linears = nn.ModuleList(
            nn.Linear(size_in, size_out, bias=config.projector_bias) for size_in, size_out in zip(sizes, sizes[1:])
        )
        self.act = ACT2FN[config.projector_hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.linears[0](hidden_states)
        for linear in self.linears[1:]:
            hidden_states = linear(self.act(hidden_states))
        return hidden_states


# Each modality: the encoder's attribute, the projector's attribute and the name of its placeholder token.
_MODALITIES = {
    "image": ("vision_model", "image_projector", "<image>"),
    "video": ("video_model", "video_projector", "<video>"),
    "audio": ("audio_model", "audio_projector", "<audio>"),
}
# The parts `freeze` knows, by name, and their attributes.
_PARTS = {
    "text": ("language_model",),
    "vision": ("vision_model",),
    "video": ("video_model",),
    "audio": ("audio_model",),
    "speech_decoder": ("speech_decoder",),
    "projectors": ("image_projector", "video_projector", "audio_projector", "speech_projector", "audio_ctc_head"),
}


class OmniForConditionalGeneration(OmniPreTrainedModel, GenerationMixin):
    r"""
    The omni-modal LLM: a causal language model (`config.text_config`, built by `AutoModelForCausalLM.from_config`)
    whose input embeddings take, in place of each `<image>`, `<video>` and `<audio>` placeholder token, the projected
    tokens of our encoders ([`OmniVisionModel`], [`OmniVideoModel`], [`OmniAudioModel`]); optionally
    [`OmniAudioDecoderModel`] voices the answers from the LM's hidden states.

    The placeholder of each input must be repeated exactly as many times as the encoder gives tokens for it (see
    [`OmniConfig`]); [`OmniProcessor`] does that. Padded video frames and padded audio give no tokens.

    `generate` works as for any transformers LM (KV cache, left padding, sampling, ...), with the media inputs used in
    the prefill step only. Parts: `language_model`, `vision_model`, `video_model`, `audio_model`, `speech_decoder`, and
    the projectors `image_projector`, `video_projector`, `audio_projector`, `speech_projector` (each an
    [`OmniProjector`], linear layers `linears.0`, `linears.1`, ...).

    Example:

    ```python
    >>> processor = OmniProcessor.from_pretrained("org/omni")
    >>> model = OmniForConditionalGeneration.from_pretrained("org/omni")
    >>> messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What digit is this?"}]}]
    >>> prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    >>> inputs = processor(text=prompt, images=image, return_tensors="pt")
    >>> answer = model.generate(**inputs, max_new_tokens=8)
    >>> processor.batch_decode(answer[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    ['seven']
    ```
    """

    config: OmniConfig
    config_class = OmniConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "video", "audio", "text")
    _also_auto_classes = ("AutoModelForMultimodalLM",)
    _skip_keys_device_placement = ["cache"]
    _supports_flex_attn = False  # our encoders run flex, but not every LM an OmniConfig names does

    def __init__(self, config: OmniConfig):
        super().__init__(config)
        self.input_modalities = config.modalities
        text_config = config.text_config
        self.language_model = AutoModelForCausalLM.from_config(text_config)
        text_size = text_config.hidden_size
        self.vision_model = self.video_model = self.audio_model = self.speech_decoder = None
        self.image_projector = self.video_projector = self.audio_projector = self.speech_projector = None
        if config.vision_config is not None:
            self.vision_model = OmniVisionModel(config.vision_config)
            self.image_projector = OmniProjector(config.vision_config.hidden_size, text_size, config)
        if config.video_config is not None:
            self.video_model = OmniVideoModel(config.video_config)
            self.video_projector = OmniProjector(config.video_config.hidden_size, text_size, config)
        self.audio_ctc_head = None
        if config.audio_config is not None:
            self.audio_model = OmniAudioModel(config.audio_config)
            self.audio_projector = OmniProjector(config.audio_config.hidden_size, text_size, config)
            if config.audio_ctc_loss_weight > 0:
                self.audio_ctc_head = nn.Linear(config.audio_config.hidden_size, text_config.vocab_size)
        if config.speech_decoder_config is not None:
            self.speech_decoder = OmniAudioDecoderModel(config.speech_decoder_config)
            self.speech_projector = OmniProjector(text_size, config.speech_decoder_config.hidden_size, config)
        parts = [self.language_model, self.vision_model, self.video_model, self.audio_model, self.speech_decoder]
        self._no_split_modules = list(
            dict.fromkeys(name for part in parts if part is not None for name in (part._no_split_modules or []))
        )
        self.post_init()

    # ---------------------------------------------------------------------------------------------------------------
    # The language model's embeddings (so `resize_token_embeddings` and weight tying work as for the LM alone)
    # ---------------------------------------------------------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # ---------------------------------------------------------------------------------------------------------------
    # The encoders
    # ---------------------------------------------------------------------------------------------------------------

    def _require(self, modality: str) -> tuple[nn.Module, nn.Module]:
        encoder_name, projector_name, _ = _MODALITIES[modality]
        encoder = getattr(self, encoder_name)
        if encoder is None:
            field = {"image": "vision_config", "video": "video_config", "audio": "audio_config"}[modality]
            raise ValueError(
                f"This model has no {modality} encoder (its config's {field} is None), so it cannot read {modality} "
                f"inputs; its modalities are {', '.join(self.config.modalities)}."
            )
        return encoder, getattr(self, projector_name)

    def _encoder_output(self, encoder_outputs, tokens, token_mask, projector, aux_loss) -> OmniEncoderOutput:
        projected = projector(tokens[token_mask])  # only real content: [num_real_tokens, text_hidden_size]
        counts = token_mask.sum(1).tolist()
        return OmniEncoderOutput(
            pooler_output=projected.split(counts),
            last_hidden_state=tokens,
            token_mask=token_mask,
            aux_loss=aux_loss,
            encoder_outputs=encoder_outputs,
        )

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> OmniEncoderOutput:
        """The LM tokens of images: `pixel_values [num_images, 3, H, W]` (from [`OmniProcessor`]) -> the vision
        encoder's `num_tokens` TiTok tokens of each image, projected to the LM's width (see [`OmniEncoderOutput`]).
        `kwargs` go to the encoder (`output_attentions`, `output_hidden_states`)."""
        encoder, projector = self._require("image")
        pixel_values = pixel_values.to(encoder.dtype)
        outputs = encoder(pixel_values, return_dict=True, **kwargs)
        tokens = outputs.last_hidden_state
        token_mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return self._encoder_output(outputs, tokens, token_mask, projector, None)

    def get_video_features(
        self, pixel_values_videos: torch.Tensor, video_frame_mask: torch.Tensor | None = None, **kwargs
    ) -> OmniEncoderOutput:
        """The LM tokens of videos: `pixel_values_videos [num_videos, frames, 3, H, W]` with `video_frame_mask
        [num_videos, frames]` (1 = real frame) -> `num_tokens_per_frame` tokens per real frame, projected to the LM's
        width; padded frames give none (see [`OmniEncoderOutput`])."""
        encoder, projector = self._require("video")
        pixel_values_videos = pixel_values_videos.to(encoder.dtype)
        outputs = encoder(pixel_values_videos, frame_mask=video_frame_mask, return_dict=True, **kwargs)
        aux_loss = self.config.video_config.router_aux_loss_coef * outputs.aux_loss
        token_mask = outputs.attention_mask.bool()
        return self._encoder_output(outputs, outputs.last_hidden_state, token_mask, projector, aux_loss)

    def get_audio_features(
        self, input_values: torch.Tensor, audio_attention_mask: torch.Tensor | None = None, **kwargs
    ) -> OmniEncoderOutput:
        """The LM tokens of audio: 16 kHz `input_values [num_audios, samples]` with `audio_attention_mask [num_audios,
        samples]` (1 = valid sample) -> one token per encoder frame of the valid audio (250/s, or fewer with
        `audio_config.output_downsample_rate`), projected to the LM's width (see [`OmniEncoderOutput`])."""
        encoder, projector = self._require("audio")
        input_values = input_values.to(encoder.dtype)
        outputs = encoder(input_values, attention_mask=audio_attention_mask, return_dict=True, **kwargs)
        token_mask = outputs.frame_mask.bool()
        return self._encoder_output(outputs, outputs.last_hidden_state, token_mask, projector, outputs.commitment_loss)

    def _placeholder_mask(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor, token_id: int | None
    ) -> torch.Tensor:
        """`[B, L]`, True at the placeholder tokens of one modality (found by id, or by their embedding when only
        `inputs_embeds` are given)."""
        if token_id is None:
            return torch.zeros(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device)
        if input_ids is not None:
            return input_ids == token_id
        placeholder = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
        return (inputs_embeds == placeholder).all(-1)

    def merge_media_embeddings(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor,
        features: dict[str, OmniEncoderOutput],
    ) -> torch.Tensor:
        """Put each modality's LM tokens (`features[modality].pooler_output`, in order) at its placeholder positions
        of `inputs_embeds [B, L, D]`; raise when a modality's placeholders and tokens differ in number."""
        for modality in _MODALITIES:
            placeholder = self._placeholder_mask(input_ids, inputs_embeds, getattr(self.config, f"{modality}_token_id"))
            num_placeholders = int(placeholder.sum())
            output = features.get(modality)
            if output is None:
                if num_placeholders:
                    raise ValueError(
                        f"input_ids hold {num_placeholders} {_MODALITIES[modality][2]} placeholder tokens but no "
                        f"{modality} inputs were given."
                    )
                continue
            tokens = torch.cat(output.pooler_output)
            if num_placeholders != tokens.shape[0]:
                counts = [len(item) for item in output.pooler_output]
                raise ValueError(
                    f"input_ids hold {num_placeholders} {_MODALITIES[modality][2]} placeholder tokens but the "
                    f"{len(counts)} {modality} input(s) give {tokens.shape[0]} tokens ({counts} each): expand each "
                    f"placeholder to its input's token count, as OmniProcessor does."
                )
            inputs_embeds = inputs_embeds.masked_scatter(placeholder[..., None], tokens.to(inputs_embeds.dtype))
        return inputs_embeds

    # ---------------------------------------------------------------------------------------------------------------
    # Forward and generation
    # ---------------------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_frame_mask: torch.LongTensor | None = None,
        input_values: torch.FloatTensor | None = None,
        audio_attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        audio_ctc_labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> OmniCausalLMOutputWithPast | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Token ids with each media input's placeholder expanded (see [`OmniProcessor`]).
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                1 for real tokens, 0 for padding (left padding for generation, as transformers does it).
            position_ids, cache, use_cache, logits_to_keep, output_attentions, output_hidden_states:
                As for the language model (`generate` fills them).
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, text_hidden_size)`, *optional*):
                Instead of `input_ids`; the placeholders are then found by their embedding.
            pixel_values (`torch.FloatTensor` of shape `(num_images, 3, height, width)`, *optional*):
                The images of the batch, in the order of their `<image>` placeholders.
            pixel_values_videos (`torch.FloatTensor` of shape `(num_videos, frames, 3, height, width)`, *optional*):
                The videos, in the order of their `<video>` placeholders; `video_frame_mask [num_videos, frames]`
                marks the real frames.
            input_values (`torch.FloatTensor` of shape `(num_audios, samples)`, *optional*):
                16 kHz waveforms, in the order of their `<audio>` placeholders; `audio_attention_mask [num_audios,
                samples]` marks the valid samples.
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Targets of the next-token loss, aligned with `input_ids` (the LM shifts them); -100 is ignored (the
                prompt, the media tokens and the padding; [`OmniCollator`] builds them).
            audio_ctc_labels (`torch.LongTensor` of shape `(num_audios, transcript_length)`, *optional*):
                With `config.audio_ctc_loss_weight > 0`: each clip's transcript as LM token ids, -100 after its end;
                a row of -100 alone (a clip without a transcript) is left out of the CTC loss.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self.check_unused_kwargs(kwargs, accepted=("num_items_in_batch",))
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids [batch, tokens] or inputs_embeds [batch, tokens, hidden].")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        features = {}
        if pixel_values is not None:
            features["image"] = self.get_image_features(pixel_values)
        if pixel_values_videos is not None:
            features["video"] = self.get_video_features(pixel_values_videos, video_frame_mask)
        if input_values is not None:
            features["audio"] = self.get_audio_features(input_values, audio_attention_mask)
        if features or cache is None or cache.get_seq_length() == 0:  # decode steps carry no placeholders
            inputs_embeds = self.merge_media_embeddings(input_ids, inputs_embeds, features)

        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels if self.config.loss_reduction == "token" else None,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        loss = outputs.loss
        if labels is not None and self.config.loss_reduction == "sample":
            loss = self.per_sample_loss(outputs.logits, labels)
        aux_losses = [output.aux_loss for output in features.values() if output.aux_loss is not None]
        aux_loss = torch.stack([loss.float() for loss in aux_losses]).sum() if aux_losses else None
        audio_ctc_loss = None
        if audio_ctc_labels is not None:
            audio_ctc_loss = self.audio_ctc_loss(features.get("audio"), audio_ctc_labels)
        if loss is not None and aux_loss is not None:
            loss = loss + aux_loss.to(loss.dtype)
        if loss is not None and audio_ctc_loss is not None:
            loss = loss + self.config.audio_ctc_loss_weight * audio_ctc_loss.to(loss.dtype)
        output = OmniCausalLMOutputWithPast(
            loss=loss,
            logits=outputs.logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            aux_loss=aux_loss,
            audio_ctc_loss=audio_ctc_loss,
        )
        return output if return_dict else output.to_tuple()

    @staticmethod
    def per_sample_loss(logits: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
        """The next-token loss with `loss_reduction="sample"`: `logits [B, L, V]` predict `labels [B, L]` shifted by
        one (-100 ignored); each example's mean over its label tokens, averaged over the examples that have any."""
        if logits.shape[1] != labels.shape[1]:
            raise ValueError(
                f"loss_reduction='sample' needs the logits of every position ({labels.shape[1]}), got "
                f"{logits.shape[1]}: leave logits_to_keep at 0 when passing labels."
            )
        labels = labels[:, 1:]
        token_losses = nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), labels, ignore_index=-100, reduction="none"
        )  # [B, L - 1]
        counts = (labels != -100).sum(1)
        has_labels = counts > 0
        per_example = token_losses.sum(1) / counts.clamp(min=1)
        return (per_example * has_labels).sum() / has_labels.sum().clamp(min=1)

    def audio_ctc_loss(self, audio: OmniEncoderOutput | None, audio_ctc_labels: torch.LongTensor) -> torch.Tensor:
        """The auxiliary CTC loss (see `OmniConfig.audio_ctc_loss_weight`): `audio_ctc_head` over the audio encoder's
        tokens `audio.last_hidden_state [num_audios, frames, D]` (valid frames: `audio.token_mask`) against
        `audio_ctc_labels [num_audios, L]` (-100 after each transcript), averaged over the clips that have a
        transcript, each clip's loss divided by its transcript's length. Zero when no clip has one; a clip too short
        for its transcript (CTC emits at most one token per frame, and needs a blank between repeats) adds zero
        rather than an infinite loss."""
        if self.audio_ctc_head is None:
            raise ValueError(
                "audio_ctc_labels were given but this model trains no CTC head: set OmniConfig.audio_ctc_loss_weight "
                "> 0 (or leave the audio content items' transcripts out)."
            )
        if audio is None:
            raise ValueError("audio_ctc_labels were given without audio inputs (input_values).")
        if audio_ctc_labels.shape[0] != audio.last_hidden_state.shape[0]:
            raise ValueError(
                f"audio_ctc_labels has {audio_ctc_labels.shape[0]} rows for {audio.last_hidden_state.shape[0]} audio "
                "clips: give one transcript row per clip (-100 alone for a clip without one)."
            )
        target_mask = audio_ctc_labels != -100
        target_lengths = target_mask.sum(-1)
        has_target = target_lengths > 0
        frames = audio.token_mask.sum(-1)
        log_probs = self.audio_ctc_head(audio.last_hidden_state).float().log_softmax(-1)
        blank = self.config.text_config.pad_token_id
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN's CTC needs blank 0 and int32 targets on the CPU
            losses = nn.functional.ctc_loss(
                log_probs.transpose(0, 1),
                audio_ctc_labels.masked_fill(~target_mask, blank),
                frames,
                target_lengths,
                blank=blank,
                reduction="none",
                zero_infinity=True,
            )
        losses = losses / target_lengths.clamp(min=1)
        return (losses * has_target).sum() / has_target.sum().clamp(min=1)

    @torch.no_grad()
    def generate(
        self,
        *args,
        return_audio: bool = False,
        speaker_ids: torch.LongTensor | None = None,
        speaker_embeddings: torch.FloatTensor | None = None,
        speed: float = 1.0,
        **kwargs,
    ):
        r"""
        Generate answers, as [`~transformers.GenerationMixin.generate`] does (all its arguments work: `max_new_tokens`,
        sampling, `return_dict_in_generate`, ...), with the media inputs of `forward`.

        With `return_audio=True` the speech decoder also speaks each answer: the LM's last-layer hidden state from
        which each answer token was generated (up to the first end-of-sequence token) goes through
        `speech_projector` into [`OmniAudioDecoderModel.generate`] as `inputs_embeds`, with the speaker given by
        `speaker_ids [B]` or `speaker_embeddings [B, S]` and the speaking rate `speed`. An [`OmniGenerateOutput`]
        (`sequences`, `waveform`, `waveform_lengths`, `speech_outputs`) is returned then.
        """
        if not return_audio:
            return super().generate(*args, **kwargs)
        if self.speech_decoder is None:
            raise ValueError(
                "return_audio=True needs a speech decoder: this model's config has no speech_decoder_config."
            )
        kwargs.update(return_dict_in_generate=True, output_hidden_states=True)
        generated = super().generate(*args, **kwargs)
        # hidden_states: one tuple of layers per step; the last position of step t produced answer token t.
        states = torch.cat([step[-1][:, -1:] for step in generated.hidden_states], dim=1)
        answer = generated.sequences[:, -states.shape[1] :]
        generation_config = kwargs.get("generation_config") or self.generation_config
        stop_ids = generation_config.eos_token_id
        stop_ids = [] if stop_ids is None else [stop_ids] if isinstance(stop_ids, int) else list(stop_ids)
        is_stop = torch.isin(answer, torch.tensor(stop_ids, dtype=answer.dtype, device=answer.device))
        answer_mask = is_stop.long().cumsum(1) == 0
        answer_mask[:, 0] = True  # an empty answer still gets a (short) sound: the decoder needs one token
        speech = self.speech_decoder.generate(
            inputs_embeds=self.speech_projector(states.to(self.speech_projector.linears[0].weight.dtype)),
            attention_mask=answer_mask.long(),
            speaker_ids=speaker_ids,
            speaker_embeddings=speaker_embeddings,
            speed=speed,
        )
        return OmniGenerateOutput(
            sequences=generated.sequences,
            waveform=speech.waveform,
            waveform_lengths=speech.waveform_lengths,
            speech_outputs=speech,
        )

    # ---------------------------------------------------------------------------------------------------------------
    # Building from parts, freezing
    # ---------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained_parts(
        cls,
        text_model: str | os.PathLike | PreTrainedModel,
        vision_model: str | os.PathLike | PreTrainedModel | None = None,
        video_model: str | os.PathLike | PreTrainedModel | None = None,
        audio_model: str | os.PathLike | PreTrainedModel | None = None,
        speech_decoder: str | os.PathLike | PreTrainedModel | None = None,
        *,
        freeze: tuple[str, ...] | list[str] = (),
        dtype: torch.dtype | str | None = None,
        **config_kwargs,
    ) -> OmniForConditionalGeneration:
        """Build the model in one call from pretrained parts: the LM and any of our encoders and speech decoder, each
        a Hub id, a local folder or a loaded model; only the projectors are new (initialised as `post_init` does).

        Args:
            text_model: a causal LM (`AutoModelForCausalLM.from_pretrained` loads a path or id).
            vision_model, video_model, audio_model, speech_decoder: our encoders and decoder (a checkpoint of a head,
                e.g. an image classifier, gives its encoder).
            freeze: parts to freeze (see [`freeze`]), e.g. `("text", "vision")` to train only the projectors.
            dtype: dtype to load the parts in (default: each checkpoint's own).
            config_kwargs: the other [`OmniConfig`] arguments: `image_token_id`, `video_token_id`, `audio_token_id`
                (required for each encoder given) and the projector settings.

        Example:

        ```python
        >>> model = OmniForConditionalGeneration.from_pretrained_parts(
        ...     "Qwen/Qwen2.5-0.5B-Instruct", audio_model="org/omni-audio-ctc", audio_token_id=151_646,
        ...     freeze=("text", "audio"),
        ... )
        ```
        """
        load_kwargs = {} if dtype is None else {"dtype": dtype}

        def load(part, model_class):
            if part is None or isinstance(part, PreTrainedModel):
                return part
            return model_class.from_pretrained(part, **load_kwargs)

        parts = {
            "language_model": load(text_model, AutoModelForCausalLM),
            "vision_model": load(vision_model, OmniVisionModel),
            "video_model": load(video_model, OmniVideoModel),
            "audio_model": load(audio_model, OmniAudioModel),
            "speech_decoder": load(speech_decoder, OmniAudioDecoderModel),
        }
        for name, part in parts.items():  # a head given as a loaded model: its encoder
            if part is not None and name != "language_model" and hasattr(part, "model"):
                parts[name] = part.model
        config = cls.config_class(
            text_config=parts["language_model"].config,
            vision_config=getattr(parts["vision_model"], "config", None),
            video_config=getattr(parts["video_model"], "config", None),
            audio_config=getattr(parts["audio_model"], "config", None),
            speech_decoder_config=getattr(parts["speech_decoder"], "config", None),
            **config_kwargs,
        )
        text = parts["language_model"]
        with torch.device("meta"):  # the parts' weights come from the checkpoints: build nothing twice
            model = cls(config)
        for name, part in parts.items():
            if part is not None:
                setattr(model, name, part)
        for name in _PARTS["projectors"]:
            projector = getattr(model, name)
            if projector is not None:
                projector.to_empty(device=text.device).to(text.dtype)
                projector.apply(model._init_weights)
        model.generation_config = copy.deepcopy(text.generation_config)
        model.freeze(*freeze)
        return model.eval()

    def freeze(self, *parts: str) -> None:
        """Stop training the given parts (their parameters get `requires_grad=False`): any of `"text"` (the LM),
        `"vision"`, `"video"`, `"audio"`, `"speech_decoder"` and `"projectors"`. Parts the model lacks are an
        error."""
        for part in parts:
            if part not in _PARTS:
                raise ValueError(f"Unknown part {part!r} to freeze; expected some of {', '.join(_PARTS)}.")
            modules = [getattr(self, name) for name in _PARTS[part] if getattr(self, name) is not None]
            if not modules:
                raise ValueError(f"This model has no {part} part to freeze.")
            for module in modules:
                module.requires_grad_(False)

    def _init_weights(self, module: nn.Module):
        # The parts initialise themselves (their own `_init_weights`); here only the projectors are ours.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


OmniForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

__all__ = [
    "OmniCausalLMOutputWithPast",
    "OmniEncoderOutput",
    "OmniForConditionalGeneration",
    "OmniGenerateOutput",
    "OmniProjector",
]

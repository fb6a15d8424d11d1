# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""`Trainer` for the adversarial (GAN) phase of the audio decoder's vocoder."""

from __future__ import annotations

import os

import torch
from torch import nn

from .modelcard import OmniTrainer
from .modeling_omni_vocoder import (
    OmniMultiPeriodDiscriminator,
    OmniMultiResolutionDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    init_vocoder_weights,
)


DISCRIMINATORS_NAME = "discriminators.safetensors"
DISCRIMINATOR_OPTIMIZER_NAME = "discriminator_optimizer.pt"


class OmniAudioDecoderGANTrainer(OmniTrainer):
    r"""
    [`OmniTrainer`] (a `Trainer` that writes the omni-encoders model card) that adds HiFi-GAN / BigVGAN adversarial
    training of the vocoder to [`OmniAudioDecoderModel`]'s losses. Batches must hold target `waveforms` (e.g. from
    [`OmniAudioDecoderCollator`]), so the model returns the vocoder's output on a random segment of the target mel
    (`waveform_segment`) and the matching real audio (`target_waveform_segment`).

    Every training step first updates the discriminators (a multi-period and a multi-resolution discriminator, LSGAN
    loss, their own AdamW optimizer) on the real and the detached generated segments, then returns the model's loss
    plus `adversarial_weight` × the generator's LSGAN loss and `feature_matching_weight` × the feature-matching loss,
    computed with the discriminators frozen; the `Trainer` back-propagates that into the model as usual. Evaluation
    returns the same generator loss without touching the discriminators. The discriminators are saved next to the model
    in every checkpoint (`discriminators.safetensors`, and their optimizer's state next to the model's in
    `discriminator_optimizer.pt`) and restored with `resume_from_checkpoint`.

    Args:
        discriminators (`nn.ModuleDict`, *optional*): discriminators to train; defaults to
            `{"period": OmniMultiPeriodDiscriminator(), "resolution": OmniMultiResolutionDiscriminator()}`.
        discriminator_learning_rate (`float`, defaults to 2e-4), discriminator_betas (defaults to `(0.8, 0.99)`):
            AdamW settings of the discriminators (HiFi-GAN's).
        adversarial_weight (`float`, defaults to 1.0), feature_matching_weight (`float`, defaults to 2.0): weights of
            the generator's adversarial and feature-matching losses.
        Other arguments go to [`Trainer`].

    Notes: with several processes the discriminator gradients are averaged across them before each update. The
    discriminators update on every micro-batch (also under gradient accumulation). Use fp32 or bf16 (fp16 would need
    a gradient scaler for the discriminators).

    Example:

    ```python
    >>> trainer = OmniAudioDecoderGANTrainer(
    ...     model=model, args=TrainingArguments("out", remove_unused_columns=False), train_dataset=dataset,
    ...     data_collator=OmniAudioDecoderCollator(processor),
    ... )
    >>> trainer.train()
    ```
    """

    def __init__(
        self,
        *args,
        discriminators: nn.ModuleDict | None = None,
        discriminator_learning_rate: float = 2e-4,
        discriminator_betas: tuple[float, float] = (0.8, 0.99),
        adversarial_weight: float = 1.0,
        feature_matching_weight: float = 2.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if discriminators is None:
            discriminators = nn.ModuleDict(
                {"period": OmniMultiPeriodDiscriminator(), "resolution": OmniMultiResolutionDiscriminator()}
            )
            discriminators.apply(init_vocoder_weights)
        self.discriminators = discriminators.to(self.args.device)
        self.discriminator_optimizer = torch.optim.AdamW(
            self.discriminators.parameters(), lr=discriminator_learning_rate, betas=discriminator_betas
        )
        self.adversarial_weight = adversarial_weight
        self.feature_matching_weight = feature_matching_weight
        self._gan_logs: dict[str, list[float]] = {}

    def _discriminate(self, waveform: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, features = [], []
        for discriminator in self.discriminators.values():
            scores, maps = discriminator(waveform)
            logits += scores
            features += maps
        return logits, features

    def _update_discriminators(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        self.discriminators.train()
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        real_logits, _ = self._discriminate(real)
        fake_logits, _ = self._discriminate(fake.detach())
        loss = discriminator_loss(real_logits, fake_logits)
        loss.backward()
        if self.accelerator.num_processes > 1:
            for parameter in self.discriminators.parameters():
                if parameter.grad is not None:
                    torch.distributed.all_reduce(parameter.grad)
                    parameter.grad /= self.accelerator.num_processes
        self.discriminator_optimizer.step()
        return loss.detach()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs.get("waveforms") is None:
            raise ValueError(
                "OmniAudioDecoderGANTrainer needs target `waveforms` in every batch (OmniAudioDecoderCollator adds "
                "them); use the plain Trainer for the acoustic model alone."
            )
        outputs = model(**inputs)
        real, fake = outputs.target_waveform_segment.float(), outputs.waveform_segment.float()
        logs = {}
        if model.training:
            logs["discriminator_loss"] = self._update_discriminators(real, fake)

        # Generator losses with the discriminators frozen, so that they only send gradients to the model.
        self.discriminators.requires_grad_(False)
        try:
            real_logits, real_features = self._discriminate(real)
            fake_logits, fake_features = self._discriminate(fake)
        finally:
            self.discriminators.requires_grad_(True)
        adversarial = generator_adversarial_loss(fake_logits)
        feature_matching = feature_matching_loss(real_features, fake_features)
        loss = outputs.loss + self.adversarial_weight * adversarial + self.feature_matching_weight * feature_matching
        logs.update(generator_adversarial_loss=adversarial.detach(), feature_matching_loss=feature_matching.detach())
        for name in ("mel_loss", "duration_loss", "pitch_loss", "energy_loss", "alignment_loss", "vocoder_loss"):
            if outputs.get(name) is not None:
                logs[name] = outputs[name].detach()
        if model.training:
            for name, value in logs.items():
                self._gan_logs.setdefault(name, []).append(float(value))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the means of the loss parts since the last log to the training logs."""
        if "loss" in logs and self._gan_logs:
            logs.update({name: sum(values) / len(values) for name, values in self._gan_logs.items()})
            self._gan_logs = {}
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            from safetensors.torch import save_file

            output_dir = output_dir if output_dir is not None else self.args.output_dir
            state = {name: tensor.contiguous() for name, tensor in self.discriminators.state_dict().items()}
            save_file(state, os.path.join(output_dir, DISCRIMINATORS_NAME))

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            state = self.discriminator_optimizer.state_dict()
            torch.save(state, os.path.join(output_dir, DISCRIMINATOR_OPTIMIZER_NAME))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, DISCRIMINATOR_OPTIMIZER_NAME) if checkpoint is not None else None
        if path is not None and os.path.isfile(path):
            state = torch.load(path, map_location=self.args.device, weights_only=True)
            self.discriminator_optimizer.load_state_dict(state)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, DISCRIMINATORS_NAME)
        if os.path.exists(path):
            from safetensors.torch import load_file

            self.discriminators.load_state_dict(load_file(path, device=str(self.args.device)))


__all__ = ["OmniAudioDecoderGANTrainer"]

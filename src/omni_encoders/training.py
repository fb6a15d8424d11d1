# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Pieces for training the models with 🤗 `Trainer` on 🤗 `datasets`: on-the-fly dataset transforms and
`compute_metrics` functions. The recipes in `examples/` and the tour (`omni-encoders tour`) are built from them.

    from omni_encoders.training import ImageClassificationTransform, classification_metrics

    dataset = build_digit_images()
    train = dataset["train"].with_transform(ImageClassificationTransform(processor))
    trainer = Trainer(model, args, train_dataset=train, compute_metrics=classification_metrics())
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


class ImageClassificationTransform:
    """Batch transform for `datasets.Dataset.with_transform` / `.map(batched=True)`: runs an image processor on the
    image column and returns `{"pixel_values": [B, 3, H, W], "labels": [B]}`, the inputs of the image-classification
    heads.

    Args:
        image_processor: e.g. an [`OmniVisionImageProcessor`].
        image_column (`str`, defaults to `"image"`), label_column (`str`, defaults to `"label"`): the dataset columns.
    """

    def __init__(self, image_processor, image_column: str = "image", label_column: str = "label"):
        self.image_processor = image_processor
        self.image_column = image_column
        self.label_column = label_column

    def __call__(self, batch: dict) -> dict:
        return {
            "pixel_values": self.image_processor(batch[self.image_column], return_tensors="pt").pixel_values,
            "labels": torch.as_tensor(batch[self.label_column]),
        }


def classification_metrics(metric: str = "accuracy") -> Callable:
    """A `compute_metrics` for `Trainer` with a classification head: argmax of the logits, scored with the packaged
    evaluate metric `metric` (see `omni_encoders.metrics`).

    The heads also return their pooled embedding, so `Trainer` hands over `(logits, pooler_output, ...)`; the logits
    are the first element.
    """
    from . import metrics as omni_metrics

    # In memory: no cache files that concurrent processes (`accelerate launch`, parallel runs) would contend for.
    module = omni_metrics.load(metric, keep_in_memory=True)

    def compute_metrics(eval_prediction) -> dict:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        return module.compute(predictions=np.argmax(logits, axis=-1), references=eval_prediction.label_ids)

    return compute_metrics


class TextToSpeechMetrics:
    """Held-out metrics of [`OmniAudioDecoderModel`] for `Trainer.evaluate`, from its training forward pass on the
    held-out utterances (the decoder teacher-forced with the durations Monotonic Alignment Search finds):

    - `mel_l1`: mean absolute difference between the predicted log-mel (after the postnet) and the target, over every
      valid frame and mel bin of every utterance;
    - the alignment check: the durations must give every real token at least one frame, padded tokens none, and sum
      to the utterance's frame count (a monotonic path over every token, since frames are assigned in token order):
      `alignment_ok` is the fraction of utterances that pass, `alignment_min_token_frames` the fewest frames any real
      token got, `alignment_frame_mismatch` the largest `|sum(durations) - frames|`;
    - the duration predictor against those durations: `duration_log_mae` (mean `|log(1 + predicted) - log(1 + MAS)|`
      over the tokens) and `length_error` (mean `|predicted frames - frames| / frames` over the utterances, the
      predicted durations rounded as in synthesis).

    Use both methods, and let `Trainer` pass the masks along as labels (the evaluation needs every utterance's token
    count):

        metrics = TextToSpeechMetrics()
        args = TrainingArguments(..., label_names=["labels", "labels_attention_mask", "attention_mask"],
                                 remove_unused_columns=False)
        trainer = Trainer(..., data_collator=OmniAudioDecoderCollator(processor),
                          preprocess_logits_for_metrics=metrics.preprocess, compute_metrics=metrics)

    `preprocess` reduces each batch to a few numbers per utterance, so nothing of size frames x mels is kept.
    """

    label_names = ["labels", "labels_attention_mask", "attention_mask"]
    _columns = ("l1_sum", "values", "frames", "tokens", "min_token_frames", "padded_frames", "duration_sum",
                "log_duration_error_sum", "predicted_frames")  # fmt: skip

    def preprocess(self, outputs: tuple, labels: tuple) -> torch.Tensor:
        """`(mel, mel_lengths, durations, log_durations, ...)` of the model's training output and the labels
        `(target mel, frame mask, token mask)` -> `[batch, 9]` per-utterance sums (float64)."""
        if not isinstance(labels, (tuple, list)) or len(labels) != 3:
            raise ValueError(
                f"TextToSpeechMetrics needs TrainingArguments(label_names={self.label_names}), so that the frame and "
                "token masks reach it."
            )
        mel, durations, log_durations = outputs[0], outputs[2], outputs[3]
        target, frame_mask, token_mask = labels
        frame_mask, token_mask = frame_mask.bool(), token_mask.bool()
        tokens = token_mask.sum(-1)
        error = (mel.double() - target.double()).abs() * frame_mask[..., None]
        unused = durations.new_full((), torch.iinfo(durations.dtype).max)
        predicted = torch.round(torch.expm1(log_durations.double().clamp(max=8.0))).clamp(min=1) * token_mask
        log_error = (log_durations.double() - torch.log1p(durations.double())).abs() * token_mask
        columns = [
            error.sum((1, 2)),
            frame_mask.sum(-1) * mel.shape[-1],
            frame_mask.sum(-1),
            tokens,
            torch.where(token_mask, durations, unused).amin(-1),
            (durations * ~token_mask).sum(-1),
            durations.sum(-1),
            log_error.sum(-1),
            predicted.sum(-1),
        ]
        return torch.stack([column.double() for column in columns], dim=-1)

    def __call__(self, eval_prediction) -> dict:
        stats = eval_prediction.predictions
        stats = stats[0] if isinstance(stats, (tuple, list)) else stats
        stats = dict(zip(self._columns, np.asarray(stats, dtype=np.float64).T))
        alignment_ok = (
            (stats["min_token_frames"] >= 1) & (stats["padded_frames"] == 0) & (stats["duration_sum"] == stats["frames"])
        )
        return {
            "mel_l1": float(stats["l1_sum"].sum() / stats["values"].sum()),
            "alignment_ok": float(alignment_ok.mean()),
            "alignment_min_token_frames": float(stats["min_token_frames"].min()),
            "alignment_frame_mismatch": float(np.abs(stats["duration_sum"] - stats["frames"]).max()),
            "duration_log_mae": float(stats["log_duration_error_sum"].sum() / stats["tokens"].sum()),
            "length_error": float(np.mean(np.abs(stats["predicted_frames"] - stats["frames"]) / stats["frames"])),
            "num_utterances": int(len(alignment_ok)),
        }


__all__ = ["ImageClassificationTransform", "TextToSpeechMetrics", "classification_metrics"]

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


__all__ = ["ImageClassificationTransform", "classification_metrics"]

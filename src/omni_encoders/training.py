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


class VideoClassificationTransform:
    """Batch transform for `datasets.Dataset.map(batched=True)` / `.with_transform`: runs a video processor on the
    video column and returns `{"pixel_values_videos": [B, T, 3, H, W], "frame_mask": [B, T], "labels": [B]}`, the
    inputs of the video-classification heads.

    Decoding a video file costs far more than the rest of the processing, so for a dataset read for several epochs,
    process it once with `.map` and train on the stored arrays (as `examples/video_classification.py` does); with
    `with_transform` every epoch decodes every file again. For `.map`, return numpy arrays and declare the output's
    fixed shapes with `features()`: they then load back as tensors without a per-element conversion.

        transform = VideoClassificationTransform(video_processor, return_tensors="np")
        train = dataset["train"].map(
            transform, batched=True, remove_columns=dataset["train"].column_names, features=transform.features()
        ).with_format("torch")

    Args:
        video_processor: e.g. an [`OmniVideoVideoProcessor`]. Its settings (`num_frames`, `size`, ...) apply, so the
            training inputs are what the `video-classification` pipeline gives the model.
        video_column (`str`, defaults to `"video"`): paths of video files, or decoded videos (`[T, H, W, C]` arrays or
            lists of frames).
        label_column (`str`, defaults to `"label"`): class indices.
        return_tensors (`str`, defaults to `"pt"`): `"pt"` for `with_transform`, `"np"` for `.map`.
    """

    def __init__(self, video_processor, video_column: str = "video", label_column: str = "label", return_tensors="pt"):
        self.video_processor = video_processor
        self.video_column = video_column
        self.label_column = label_column
        self.return_tensors = return_tensors

    def __call__(self, batch: dict) -> dict:
        inputs = self.video_processor(list(batch[self.video_column]), return_tensors=self.return_tensors)
        labels = np.asarray(batch[self.label_column], dtype=np.int64)
        return {
            "pixel_values_videos": inputs["pixel_values_videos"],
            "frame_mask": inputs["frame_mask"],
            "labels": torch.from_numpy(labels) if self.return_tensors == "pt" else labels,
        }

    def features(self):
        """The `datasets.Features` of the output, for `.map(..., features=...)`: `pixel_values_videos` as a fixed-shape
        float32 `Array4D` `(num_frames, 3, height, width)`, `frame_mask` as `num_frames` int64, `labels` as int64.

        Needs a processor that gives every video the same shape: a fixed `num_frames` (videos with fewer frames are
        padded and masked) and a `size` with `height` and `width`.
        """
        from datasets import Array4D, Features, List, Value

        processor = self.video_processor
        num_frames, size = processor.num_frames, processor.size
        if not processor.do_sample_frames or num_frames is None or not (size.height and size.width):
            raise ValueError(
                "features() needs a video processor that outputs one shape for every video: do_sample_frames=True "
                f"with a num_frames, and a size with height and width; got do_sample_frames={processor.do_sample_frames}"
                f", num_frames={num_frames}, size={dict(size)}."
            )
        return Features(
            {
                "pixel_values_videos": Array4D(shape=(num_frames, 3, size.height, size.width), dtype="float32"),
                "frame_mask": List(Value("int64"), length=num_frames),
                "labels": Value("int64"),
            }
        )


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


__all__ = ["ImageClassificationTransform", "VideoClassificationTransform", "classification_metrics"]

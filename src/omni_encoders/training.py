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

    label_names = ("labels", "labels_attention_mask", "attention_mask")
    _columns = ("l1_sum", "values", "frames", "tokens", "min_token_frames", "padded_frames", "duration_sum",
                "log_duration_error_sum", "predicted_frames")  # fmt: skip

    def preprocess(self, outputs: tuple, labels: tuple) -> torch.Tensor:
        """`(mel, mel_lengths, durations, log_durations, ...)` of the model's training output and the labels
        `(target mel, frame mask, token mask)` -> `[batch, 9]` per-utterance sums (float64)."""
        if not isinstance(labels, (tuple, list)) or len(labels) != 3:
            raise ValueError(
                f"TextToSpeechMetrics needs TrainingArguments(label_names={list(self.label_names)}), so that the "
                "frame and token masks reach it."
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
            (stats["min_token_frames"] >= 1)
            & (stats["padded_frames"] == 0)
            & (stats["duration_sum"] == stats["frames"])
        )
        return {
            "mel_l1": float(stats["l1_sum"].sum() / stats["values"].sum()),
            "alignment_ok": float(alignment_ok.mean()),
            "alignment_min_token_frames": float(stats["min_token_frames"].min()),
            "alignment_frame_mismatch": float(np.abs(stats["duration_sum"] - stats["frames"]).max()),
            "duration_log_mae": float(stats["log_duration_error_sum"].sum() / stats["tokens"].sum()),
            "length_error": float(np.mean(np.abs(stats["predicted_frames"] - stats["frames"]) / stats["frames"])),
            "num_utterances": len(alignment_ok),
        }


__all__ = [
    "ImageClassificationTransform",
    "TextToSpeechMetrics",
    "VideoClassificationTransform",
    "classification_metrics",
]

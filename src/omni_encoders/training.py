# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Pieces for training the models with 🤗 `Trainer` on 🤗 `datasets`: on-the-fly dataset transforms and
`compute_metrics` functions. The recipes in `examples/` and the tour (`omni-encoders tour`) are built from them.

    from omni_encoders.training import ImageClassificationTransform, classification_metrics

    dataset = build_digit_images()
    train = dataset["train"].with_transform(ImageClassificationTransform(processor))
    trainer = Trainer(model, args, train_dataset=train, compute_metrics=classification_metrics())

Audio: `AudioCollator` (waveforms, or the speaker encoder's log-mel frames, padded by the feature extractor),
`CTCCollator` + `ctc_argmax` + `ctc_metrics` (CTC speech recognition scored by CER/WER), and for speaker embeddings
`AdditiveMarginSpeakerClassifier` (additive-margin softmax over the training speakers), `SpeakerEmbeddingTrainer`
(saves the plain `OmniAudioModel`) and `speaker_verification_metrics` (cosine-scored trials -> equal error rate):

    collator = CTCCollator(processor, audio_column="audio", text_column="digits")
    trainer = Trainer(model, args, train_dataset=dataset["train"], data_collator=collator,
                      compute_metrics=ctc_metrics(processor), preprocess_logits_for_metrics=ctc_argmax)

The omni-modal LLM ([`OmniForConditionalGeneration`], trained with [`OmniCollator`]): `ChatExamples` (chat examples
of several tasks built lazily from their datasets, with per-task repeats), `TaskGroupedSampler` (one task per
batch), `train_word_level_tokenizer` (a small LM's tokenizer, trained here), `generate_answers` and
`OmniGenerationTrainer` (held-out answers generated and scored, as users will get them):

    train = ChatExamples({"image": (images, image_chat), "speech": (clips, speech_chat)}, {"image": 3})
    trainer = OmniGenerationTrainer(model, args, train_dataset=train, eval_dataset={"image": held_out_images},
                                    data_collator=OmniCollator(processor), processing_class=processor,
                                    group_by_task=True)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import SequentialSampler
from transformers import Trainer
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import has_length
from transformers.utils import SAFE_WEIGHTS_NAME, ModelOutput

logger = logging.getLogger(__name__)


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
        video_processor: e.g. an [`OmniVideoVideoProcessor`]. Its settings (`num_frames`, `size`, ...) apply. Keep
            its `num_frames` equal to the model config's: the `video-classification` pipeline samples
            `model.config.num_frames` frames whatever the processor says, so that is what the model is served.
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


# ------------------------------------------------------------------------------------------------------------ audio


def audio_lengths(dataset, audio_column: str = "audio") -> list[int]:
    """Samples of every clip of a `datasets.Dataset` with an audio column `{"array", "sampling_rate"}`: the `length`
    column that `TrainingArguments(train_sampling_strategy="group_by_length")` reads to batch clips of similar
    duration (less padding, faster steps). Add it with `dataset.add_column("length", audio_lengths(dataset))`."""
    return [len(clip["array"]) for clip in dataset[audio_column]]


def _sampling_rate(clips: list) -> int | None:
    """The rate of `datasets`-style clips (each dict carries its own; the extractor resamples per clip)."""
    first = clips[0]
    return int(first["sampling_rate"]) if isinstance(first, dict) and "sampling_rate" in first else None


class AudioCollator:
    """`data_collator` for `Trainer` over `datasets` examples with an audio column: pads the batch's clips with the
    model's feature extractor and adds the labels.

    Returns `{"input_values": [B, S], "attention_mask": [B, S], "labels": [B]}` (the inputs of
    [`OmniAudioForAudioClassification`]), or with `speaker_features=True` the log-mel inputs of the speaker encoder,
    `{"speaker_features": [B, F, n_mels], "speaker_attention_mask": [B, F], "labels": [B]}`.

    Args:
        feature_extractor: an [`OmniAudioFeatureExtractor`] (or a processor holding one).
        audio_column (`str`, defaults to `"audio"`): the column of `{"array", "sampling_rate"}` dicts.
        label_column (`str`, *optional*, defaults to `"label"`): the column of integer labels (e.g. `"speaker_id"`);
            `None` for no labels.
        speaker_features (`bool`, defaults to `False`): return the speaker encoder's log-mel frames instead of the
            waveforms.
    """

    def __init__(
        self,
        feature_extractor,
        audio_column: str = "audio",
        label_column: str | None = "label",
        speaker_features: bool = False,
    ):
        self.feature_extractor = getattr(feature_extractor, "feature_extractor", feature_extractor)
        self.audio_column = audio_column
        self.label_column = label_column
        self.speaker_features = speaker_features

    def __call__(self, examples: list[dict]) -> dict:
        clips = [example[self.audio_column] for example in examples]
        features = self.feature_extractor(
            clips,
            sampling_rate=_sampling_rate(clips),
            return_speaker_features=self.speaker_features,
            return_tensors="pt",
        )
        if self.speaker_features:
            names = ("speaker_features", "speaker_attention_mask")
        else:
            names = ("input_values", "attention_mask")
        batch = {name: features[name] for name in names}
        if self.label_column is not None:
            batch["labels"] = torch.as_tensor([int(example[self.label_column]) for example in examples])
        return batch


class CTCCollator:
    """`data_collator` for `Trainer` and [`OmniAudioForCTC`]: pads the batch's clips with the processor's feature
    extractor and tokenises their transcripts into `labels` (padded with -100).

    Returns `{"input_values": [B, S], "attention_mask": [B, S], "labels": [B, L]}`.

    Args:
        processor: an [`OmniAudioProcessor`] (feature extractor + character CTC tokenizer).
        audio_column (`str`, defaults to `"audio"`), text_column (`str`, defaults to `"text"`): the dataset columns.
    """

    def __init__(self, processor, audio_column: str = "audio", text_column: str = "text"):
        self.processor = processor
        self.audio_column = audio_column
        self.text_column = text_column

    def __call__(self, examples: list[dict]) -> dict:
        clips = [example[self.audio_column] for example in examples]
        batch = self.processor(
            audio=clips,
            text=[example[self.text_column] for example in examples],
            sampling_rate=_sampling_rate(clips),
            return_tensors="pt",
        )
        return dict(batch)


def ctc_argmax(logits, labels=None):
    """`preprocess_logits_for_metrics` for `Trainer` with a CTC head: the greedy path (argmax over the vocabulary) of
    each frame, so evaluation gathers `[B, frames]` ids instead of `[B, frames, vocab]` logits."""
    logits = logits[0] if isinstance(logits, (tuple, list)) else logits
    return logits.argmax(dim=-1)


def ctc_metrics(processor, metric: str = "cer") -> Callable:
    """A `compute_metrics` for `Trainer` with a CTC head and `preprocess_logits_for_metrics=ctc_argmax`: greedy CTC
    decoding of the predicted ids with the processor (repeats collapsed, blanks dropped), the labels decoded as they
    are, scored with the packaged evaluate metric `metric` ("cer" or "wer").

    `Trainer` pads predictions and labels across evaluation batches with -100; both are read as the blank (pad) id.
    """
    from . import metrics as omni_metrics

    module = omni_metrics.load(metric, keep_in_memory=True)
    blank = processor.tokenizer.pad_token_id

    def compute_metrics(eval_prediction) -> dict:
        predicted_ids = np.where(eval_prediction.predictions == -100, blank, eval_prediction.predictions)
        label_ids = np.where(eval_prediction.label_ids == -100, blank, eval_prediction.label_ids)
        predictions = processor.batch_decode(predicted_ids)
        # labels are the transcripts themselves: repeated characters are real ("11"), not to be collapsed
        references = processor.batch_decode(label_ids, group_tokens=False)
        return module.compute(predictions=predictions, references=references)

    return compute_metrics


# ------------------------------------------------------------------------------------------------ speaker embeddings


@dataclass
class SpeakerClassifierOutput(ModelOutput):
    """
    Output of [`AdditiveMarginSpeakerClassifier`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Additive-margin softmax loss over the training speakers.
        embeddings (`torch.FloatTensor` of shape `(batch_size, speaker_embedding_size)`):
            The L2-normalised speaker embeddings (what `Trainer.predict`/`evaluate` hand to `compute_metrics`).
    """

    loss: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None


class AdditiveMarginSpeakerClassifier(nn.Module):
    """Training wrapper that teaches the speaker encoder of an [`OmniAudioModel`] to tell speakers apart: additive
    margin softmax (AM-softmax, CosFace) over the training speakers,

        loss = cross_entropy(scale * (cos θ - margin * onehot(label)), label),

    where `cos θ [B, num_speakers]` are the cosine similarities of the L2-normalised speaker embeddings with one
    learned direction per speaker. The margin pulls each speaker's embeddings together and pushes speakers apart in
    cosine terms, which is how embeddings are compared at test time (cosine scoring of verification trials).

    Only the speaker encoder trains: the waveform tokenizer and the Conformer are frozen (they take no part in the
    speaker embedding). The class directions belong to this wrapper only: [`SpeakerEmbeddingTrainer`] saves
    `wrapper.model`, a plain `OmniAudioModel` that `AutoModel.from_pretrained` loads.

    Args:
        model ([`OmniAudioModel`]): the encoder, with a speaker encoder (`config.use_speaker_encoder=True`).
        num_speakers (`int`): speakers of the training set (labels in `[0, num_speakers)`).
        margin (`float`, defaults to 0.2): the cosine margin `m`.
        scale (`float`, defaults to 30.0): the logit scale `s`.
    """

    def __init__(self, model, num_speakers: int, margin: float = 0.2, scale: float = 30.0):
        super().__init__()
        if getattr(model, "speaker_encoder", None) is None:
            raise ValueError("The model has no speaker encoder: build it with `use_speaker_encoder=True`.")
        if num_speakers < 2:
            raise ValueError(f"Speaker classification needs at least 2 speakers, got {num_speakers}.")
        self.model = model
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith("speaker_encoder."))
        embedding_size = model.config.speaker_embedding_size
        self.speaker_directions = nn.Parameter(torch.randn(num_speakers, embedding_size) / math.sqrt(embedding_size))
        self.margin = margin
        self.scale = scale

    def forward(
        self,
        speaker_features: torch.Tensor,
        speaker_attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
    ) -> SpeakerClassifierOutput:
        """
        Args:
            speaker_features (`torch.FloatTensor` of shape `(batch_size, num_mel_frames, speaker_num_mel_bins)`):
                Log-mel frames: the extractor's `speaker_features` ([`AudioCollator`] with `speaker_features=True`).
            speaker_attention_mask (`torch.LongTensor` of shape `(batch_size, num_mel_frames)`, *optional*):
                1 on valid frames.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): speaker ids in `[0, num_speakers)`.
        """
        embeddings = self.model.get_speaker_embeddings(speaker_features, speaker_attention_mask)
        loss = None
        if labels is not None:
            if int(labels.min()) < 0 or int(labels.max()) >= len(self.speaker_directions):
                raise ValueError(
                    f"Speaker labels must be in [0, {len(self.speaker_directions)}), got "
                    f"{labels.min().item()}..{labels.max().item()}."
                )
            directions = nn.functional.normalize(self.speaker_directions.float(), dim=-1)
            cosine = embeddings.float() @ directions.T
            margins = self.margin * nn.functional.one_hot(labels, len(self.speaker_directions))
            loss = nn.functional.cross_entropy(self.scale * (cosine - margins), labels)
        return SpeakerClassifierOutput(loss=loss, embeddings=embeddings)


SPEAKER_CLASSIFIER_WEIGHTS = "speaker_classifier.safetensors"


class SpeakerEmbeddingTrainer(Trainer):
    """`Trainer` for an [`AdditiveMarginSpeakerClassifier`] whose saved model is the plain `OmniAudioModel` inside it.

    Every checkpoint and the final `save_model()` folder hold the `OmniAudioModel` as `save_pretrained` writes it
    (`config.json`, `model.safetensors`: `AutoModel.from_pretrained(folder)` loads it) plus the speaker directions of
    the margin softmax in `speaker_classifier.safetensors`, which resuming (`resume_from_checkpoint`) and
    `load_best_model_at_end` read back. Evaluation keeps the dataset order (no length grouping), so that
    `compute_metrics` can score verification trials given as row indices (see [`speaker_verification_metrics`]).
    """

    def __init__(self, model: AdditiveMarginSpeakerClassifier, *args, **kwargs):
        if not isinstance(model, AdditiveMarginSpeakerClassifier):
            raise ValueError(
                f"SpeakerEmbeddingTrainer trains an AdditiveMarginSpeakerClassifier, got {type(model).__name__}."
            )
        super().__init__(model, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        classifier = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        classifier.model.save_pretrained(output_dir)
        save_file(
            {"speaker_directions": classifier.speaker_directions.detach().contiguous().cpu()},
            os.path.join(output_dir, SPEAKER_CLASSIFIER_WEIGHTS),
            metadata={"format": "pt"},
        )
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        classifier = self.accelerator.unwrap_model(model if model is not None else self.model)
        weights = os.path.join(resume_from_checkpoint, SAFE_WEIGHTS_NAME)
        directions = os.path.join(resume_from_checkpoint, SPEAKER_CLASSIFIER_WEIGHTS)
        for path in (weights, directions):
            if not os.path.isfile(path):
                raise ValueError(f"Can't find {os.path.basename(path)} in the checkpoint {resume_from_checkpoint}.")
        logger.info(f"Loading the speaker model from {resume_from_checkpoint}.")
        classifier.model.load_state_dict(load_file(weights, device="cpu"))
        classifier.speaker_directions.data.copy_(load_file(directions, device="cpu")["speaker_directions"])

    def _load_best_model(self) -> None:
        self._load_from_checkpoint(self.state.best_model_checkpoint)

    def _get_eval_sampler(self, eval_dataset):
        return SequentialSampler(eval_dataset) if eval_dataset is not None and has_length(eval_dataset) else None


def speaker_verification_metrics(trials) -> Callable:
    """A `compute_metrics` for [`SpeakerEmbeddingTrainer`]: scores verification trials by the cosine similarity of
    the two utterances' speaker embeddings and returns the equal error rate (`{"eer": ..., "threshold": ...}`).

    Args:
        trials: a `datasets.Dataset` (or dict) with columns `enrollment`, `test` (row indices into the evaluation
            dataset) and `label` (1 = same speaker), e.g. from `omni_encoders.data.make_verification_trials`. The
            evaluation set must be predicted in its own order (as `SpeakerEmbeddingTrainer` does).
    """
    from . import metrics as omni_metrics

    module = omni_metrics.load("eer", keep_in_memory=True)
    enrollment, test = np.asarray(trials["enrollment"]), np.asarray(trials["test"])
    labels = np.asarray(trials["label"])

    def compute_metrics(eval_prediction) -> dict:
        embeddings = eval_prediction.predictions
        embeddings = embeddings[0] if isinstance(embeddings, (tuple, list)) else embeddings
        if len(embeddings) <= max(enrollment.max(), test.max()):
            raise ValueError(
                f"The trials index {max(enrollment.max(), test.max()) + 1} utterances, but {len(embeddings)} were "
                "embedded: evaluate on the dataset the trials were drawn from."
            )
        embeddings = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True).clip(min=1e-12)
        scores = (embeddings[enrollment] * embeddings[test]).sum(-1)
        return module.compute(predictions=scores, references=labels)

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


# ------------------------------------------------------------------------------------------------ the omni-modal LLM


class ChatExamples(torch.utils.data.Dataset):
    """Chat examples for [`OmniCollator`] drawn from one or several datasets: row `i` is `to_chat(dataset[j])` of its
    task, where `to_chat(row) -> {"messages": [...]}` builds the conversation of a dataset row (media in the content
    items, the answer last). Mixing tasks this way keeps each dataset in its own format (decoded lazily, row by row).

    Args:
        sources (`dict[str, tuple[Dataset, Callable]]`): `{task: (dataset, to_chat)}`.
        repeats (`dict[str, float]`, *optional*): `{task: r}`: each row of the task appears `floor(r)` times, plus a
            seeded random `r % 1` of its rows once more (default 1 for every task). The order is the sources' order;
            `Trainer` shuffles it.
        seed (`int`, defaults to 0): seed of those extra rows.
    """

    def __init__(self, sources: dict, repeats: dict[str, float] | None = None, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.sources = sources
        tasks, rows = [], []
        for task, (dataset, _) in sources.items():
            repeat = (repeats or {}).get(task, 1.0)
            if repeat < 0:
                raise ValueError(f"repeats must be >= 0, got {repeat} for {task!r}.")
            whole, extra = int(repeat), round((repeat % 1) * len(dataset))
            task_rows = np.concatenate([np.tile(np.arange(len(dataset)), whole), rng.permutation(len(dataset))[:extra]])
            tasks.extend([task] * len(task_rows))
            rows.append(task_rows)
        self.tasks = tasks
        self.rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> dict:
        dataset, to_chat = self.sources[self.tasks[index]]
        return to_chat(dataset[int(self.rows[index])])

    def task_counts(self) -> dict[str, int]:
        """How many rows of each task the examples hold."""
        return {task: self.tasks.count(task) for task in self.sources}


class TaskGroupedSampler(torch.utils.data.Sampler):
    """Sampler over [`ChatExamples`] whose every run of `batch_size` indices comes from one task, so that each batch
    `Trainer`'s DataLoader cuts holds a single task (and runs a single encoder).

    Each epoch the rows of every task are shuffled and cut into batches, a task's last, short batch topped up with
    other rows of the task drawn at random; then the batches of all tasks are shuffled together. The order follows
    `seed` and the epoch (`set_epoch`, which accelerate calls), so a resumed run replays it. With several processes
    pass the global batch (`per_device_train_batch_size × world_size`): accelerate deals each process its slice of
    consecutive indices, so every step is one task on every process, the same examples as one process would see.

    Why: in a mixed batch every encoder runs on a few examples, and the shared language model's update mixes the
    tasks. With one-task batches `examples/omni_llm.py` learnt faster and ran faster: after 750 steps (learning rate
    2e-3, 100 held-out digit images) 0.68 of the images were answered right against 0.43 with mixed batches, in 224 s
    against 264 s of training.
    """

    def __init__(self, dataset: ChatExamples, batch_size: int, seed: int = 0):
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        tasks = np.asarray(dataset.tasks)
        self.task_indices = [np.flatnonzero(tasks == task) for task in dataset.sources]
        self.task_indices = [indices for indices in self.task_indices if len(indices)]
        self.num_batches = sum(-(-len(indices) // batch_size) for indices in self.task_indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        batches = []
        for indices in self.task_indices:
            order = rng.permutation(indices)
            short = -len(order) % self.batch_size
            if short:
                order = np.concatenate([order, rng.choice(indices, short, replace=len(indices) < short)])
            batches.extend(order.reshape(-1, self.batch_size))
        for batch in rng.permutation(len(batches)):
            yield from batches[batch].tolist()


def train_word_level_tokenizer(
    texts: list[str], placeholders: tuple[str, ...] = ("<image>", "<video>", "<audio>")
):
    """A word-level tokenizer for a small language model, trained on `texts` with the `tokenizers` library: one id per
    word or punctuation mark (split on whitespace and punctuation), plus `<pad>`, `<unk>`, the end-of-turn token
    `</s>` and the media `placeholders` as special tokens. Pads on the left (generation); [`OmniCollator`] pads
    training batches on the right itself. Returns a `PreTrainedTokenizerFast` (saved and loaded like any other)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special_tokens = ["<pad>", "<unk>", "</s>", *placeholders]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=special_tokens))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="</s>",
        additional_special_tokens=list(placeholders),
        padding_side="left",
    )


def generate_answers(
    model, processor, conversations: list[list[dict]], batch_size: int = 32, **generation_kwargs
) -> list[str]:
    """Answer chat `conversations` with an [`OmniForConditionalGeneration`]: each conversation (messages in
    transformers' format, media in the content items, e.g. `{"type": "image", "image": array}`) is rendered with the
    processor's chat template and the generation prompt, `batch_size` at a time with left padding, and the generated
    tokens are decoded without special tokens.

    `generation_kwargs` go to `model.generate` (default: greedy, `max_new_tokens=16`). Returns one stripped string per
    conversation.
    """
    from .processing_omni import media_of_messages, process_prompts

    generation_kwargs = {"do_sample": False, "max_new_tokens": 16, **generation_kwargs}
    answers = []
    for start in range(0, len(conversations), batch_size):
        chats = conversations[start : start + batch_size]
        prompts = [processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) for chat in chats]
        media = {"image": [], "video": [], "audio": []}
        for chat in chats:
            for modality, values in media_of_messages(chat).items():
                media[modality].extend(values)
        inputs = process_prompts(processor, prompts, media, padding_side="left").to(model.device)
        with torch.inference_mode():
            generated = model.generate(**inputs, **generation_kwargs)
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]
        answers.extend(text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True))
    return answers


def _answer_text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(i["text"] for i in content if i["type"] == "text")


class OmniGenerationTrainer(Trainer):
    """`Trainer` for [`OmniForConditionalGeneration`] whose evaluation scores *generated* answers, as users will get
    them: for each held-out example `{"messages": [..., {"role": "assistant", "content": reference}]}` the model
    answers the messages before the last through [`generate_answers`] (greedy, KV cache), and
    `answer_metrics(task, predictions, references) -> dict` scores the answers against the references (default: the
    exact-match rate, `{"exact_match": ...}`).

    `eval_dataset` may be a dict of tasks (`{"image": ..., "speech": ...}`): each is scored on its own and reported
    as `eval_<task>_<metric>`. With several processes each answers its share of the examples and the answers are
    gathered, so every process returns the same metrics.

    Args:
        answer_metrics (`Callable[[str, list[str], list[str]], dict]`, *optional*): the scoring function.
        generation_kwargs (`dict`, *optional*): for `model.generate` (default greedy, `max_new_tokens=16`).
        group_by_task (`bool`, defaults to `False`): train on one-task batches ([`TaskGroupedSampler`]; the training
            set must be a [`ChatExamples`]).
        All other arguments are `Trainer`'s; `processing_class` must be the [`OmniProcessor`].
    """

    def __init__(
        self,
        *args,
        answer_metrics: Callable | None = None,
        generation_kwargs: dict | None = None,
        group_by_task: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.answer_metrics = answer_metrics or _exact_match
        self.generation_kwargs = dict(generation_kwargs or {})
        self.group_by_task = group_by_task

    def _get_train_sampler(self, train_dataset=None):
        train_dataset = self.train_dataset if train_dataset is None else train_dataset
        if not self.group_by_task:
            return super()._get_train_sampler(train_dataset)
        if not isinstance(train_dataset, ChatExamples):
            raise ValueError(
                f"group_by_task=True needs a ChatExamples training set (it knows each row's task), got "
                f"{type(train_dataset).__name__}."
            )
        global_batch = self.args.per_device_train_batch_size * max(1, self.args.world_size)
        return TaskGroupedSampler(train_dataset, global_batch, seed=self.args.seed)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if dataset is None:
            raise ValueError("OmniGenerationTrainer.evaluate needs an eval_dataset of chat examples.")
        tasks = dataset if isinstance(dataset, dict) else {None: dataset}
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        metrics = {}
        for task, examples in tasks.items():
            with self.accelerator.split_between_processes(list(range(len(examples)))) as indices:
                rows = [examples[index] for index in indices]
                with self.autocast_smart_context_manager():
                    predictions = generate_answers(
                        model,
                        self.processing_class,
                        [row["messages"][:-1] for row in rows],
                        batch_size=self.args.per_device_eval_batch_size,
                        **self.generation_kwargs,
                    )
            predictions = self._gather(predictions)
            references = [_answer_text(examples[index]["messages"][-1]) for index in range(len(examples))]
            prefix = metric_key_prefix if task is None else f"{metric_key_prefix}_{task}"
            for key, value in self.answer_metrics(task, predictions, references).items():
                metrics[f"{prefix}_{key}"] = value
        model.train(was_training)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _gather(self, predictions: list[str]) -> list[str]:
        if self.accelerator.num_processes == 1:
            return predictions
        from accelerate.utils import gather_object

        # split_between_processes gives each process a contiguous slice in rank order: concatenating restores order
        return [answer for part in gather_object([predictions]) for answer in part]


def _exact_match(task, predictions: list[str], references: list[str]) -> dict[str, float]:
    return {"exact_match": float(np.mean([p == r for p, r in zip(predictions, references, strict=True)]))}


__all__ = [
    "SPEAKER_CLASSIFIER_WEIGHTS",
    "AdditiveMarginSpeakerClassifier",
    "AudioCollator",
    "CTCCollator",
    "ChatExamples",
    "ImageClassificationTransform",
    "OmniGenerationTrainer",
    "SpeakerClassifierOutput",
    "SpeakerEmbeddingTrainer",
    "TaskGroupedSampler",
    "TextToSpeechMetrics",
    "VideoClassificationTransform",
    "audio_lengths",
    "classification_metrics",
    "ctc_argmax",
    "ctc_metrics",
    "generate_answers",
    "speaker_verification_metrics",
    "train_word_level_tokenizer",
]

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Model cards of the omni-encoders models, rendered with `huggingface_hub.ModelCard` / `ModelCardData`.

Every model type has one Jinja template, `model_cards/<model_type>.md` (shipped inside the package; the repository's
top-level `model_cards/` is the same folder). [`create_model_card`] fills it for a model (or config) with:

- `card_data`: the YAML front matter (`library_name`, `pipeline_tag`, `tags`, `base_model`, `datasets`, `metrics`,
  `model-index` with the evaluation results of a training run, `license`);
- `model_id`, `model_class`, `auto_class`, `pipeline_tag`, `config` (the config object), `num_parameters` (e.g.
  "12.3M", or None for a bare config), `labels` (class names of a classification head, else None), `base_model`;
- `training`: None, or `{"hyperparameters": {...}, "results_table": markdown, "eval_results": {...}, "datasets":
  [...], "framework_versions": {...}}` from a `Trainer` run;
- `conversion`: None, or the summary of a checkpoint conversion (`omni_encoders.conversion`).

Templates are rendered with `StrictUndefined`: a misspelt variable fails loudly instead of leaving a hole in a card.

`model.push_to_hub(...)` uses these cards (see `OmniHubMixin`), and so does [`OmniTrainer`] for `Trainer.push_to_hub`
and `Trainer.create_model_card`.

Adding a model type: write `model_cards/<model_type>.md` and add one [`ModelCardSpec`] to `MODEL_CARD_SPECS`.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from pathlib import Path

import jinja2
import torch
from huggingface_hub import ModelCard, ModelCardData
from transformers import PreTrainedConfig, PreTrainedModel, Trainer
from transformers import __version__ as transformers_version
from transformers.modelcard import TASK_TAG_TO_NAME_MAPPING, TrainingSummary, make_markdown_table


TEMPLATES_DIR = Path(__file__).parent / "model_cards"


@dataclass(frozen=True)
class ModelCardSpec:
    """What the card of one model type needs beyond the model itself.

    Args:
        tags: Hub tags of the model type (added to `omni-encoders` and the model type).
        base_pipeline_tag: pipeline tag of the base model (the class registered for `base_auto_class`); the heads
            take theirs from their Auto class (see `AUTO_CLASS_PIPELINE_TAGS`).
        base_auto_class: the Auto class of the model type's base model, which the card of a bare config names
            (`AutoModelForImageTextToText` for the omni-modal LLM, which `AutoModel` does not load).
    """

    tags: tuple[str, ...]
    base_pipeline_tag: str
    base_auto_class: str = "AutoModel"


MODEL_CARD_SPECS: dict[str, ModelCardSpec] = {
    "omni_vision": ModelCardSpec(("vision", "siglip", "titok", "2d-rope"), "image-feature-extraction"),
    "omni_video": ModelCardSpec(("video", "3d-rope", "mixture-of-experts"), "feature-extraction"),
    "omni_audio": ModelCardSpec(("audio", "speech", "conformer", "mla"), "feature-extraction"),
    "omni_audio_decoder": ModelCardSpec(("audio", "speech", "text-to-speech", "tts"), "text-to-audio"),
    "omni": ModelCardSpec(
        ("multimodal", "llm", "any-to-any"),
        "image-text-to-text",
        base_auto_class="AutoModelForImageTextToText",
    ),
}

AUTO_CLASS_PIPELINE_TAGS = {
    "AutoModelForImageClassification": "image-classification",
    "AutoModelForVideoClassification": "video-classification",
    "AutoModelForCTC": "automatic-speech-recognition",
    "AutoModelForAudioClassification": "audio-classification",
    "AutoModelForTextToWaveform": "text-to-audio",
    "AutoModelForTextToSpectrogram": "text-to-audio",
}

# Hub names of the tasks of our pipeline tags that transformers' `TrainingSummary` does not know (it leaves their
# evaluation results out of the `model-index`).
TASK_NAMES = {
    "video-classification": "Video Classification",
    "text-to-audio": "Text-to-Audio",
    "feature-extraction": "Feature Extraction",
    "image-feature-extraction": "Image Feature Extraction",
    "image-text-to-text": "Image-Text-to-Text",
}

LICENSE = "apache-2.0"


def _human_count(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _template_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _training_context(training: TrainingSummary) -> dict:
    return {
        "hyperparameters": dict(training.hyperparameters or {}),
        "results_table": make_markdown_table(training.eval_lines) if training.eval_lines else None,
        "eval_results": dict(training.eval_results or {}),
        "datasets": _as_list(training.dataset),
        "framework_versions": {"Transformers": transformers_version, "PyTorch": torch.__version__},
    }


@contextlib.contextmanager
def _known_task_names():
    """Let `TrainingSummary` name our tasks in the `model-index` for the duration of the block."""
    missing = {tag: name for tag, name in TASK_NAMES.items() if tag not in TASK_TAG_TO_NAME_MAPPING}
    TASK_TAG_TO_NAME_MAPPING.update(missing)
    try:
        yield
    finally:
        for tag in missing:
            TASK_TAG_TO_NAME_MAPPING.pop(tag, None)


def _training_metadata(training: TrainingSummary) -> dict:
    """Metrics, datasets, tags and model-index of a training run, as the Trainer writes them, for any of our tasks."""
    with _known_task_names():
        return training.create_metadata()


def create_model_card(
    model: PreTrainedModel | PreTrainedConfig,
    *,
    model_id: str | None = None,
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    tags: list[str] | None = None,
    license: str | None = LICENSE,
    language: str | list[str] | None = None,
    training: TrainingSummary | None = None,
    conversion: dict | None = None,
) -> ModelCard:
    """Render the model card of `model`'s model type.

    Args:
        model: an omni-encoders model, or a config (then the card describes the base model of that type).
        model_id: the Hub repo id (`"org/name"`) or local name the loading snippets use; defaults to the model's
            `name_or_path`, else its model type.
        base_model: Hub id(s) the weights derive from. Defaults to the model's `name_or_path` when that is a Hub id
            other than `model_id`, or to the `finetuned_from` of `training`.
        datasets: Hub dataset id(s) the model was trained on (also taken from `training`).
        tags: extra tags.
        license, language: card metadata.
        training: the `TrainingSummary` of a `Trainer` run: its evaluation results become `metrics` and the
            `model-index`, its hyperparameters and results table a "Training" section.
        conversion: summary of the conversion that produced the weights (see `omni_encoders.conversion`).

    Returns:
        A `huggingface_hub.ModelCard`; `card.data` is the parsed metadata, `card.save(path)` writes `README.md`.
    """
    config = model if isinstance(model, PreTrainedConfig) else model.config
    if config.model_type not in MODEL_CARD_SPECS:
        raise ValueError(
            f"No model card template for model_type '{config.model_type}'; known: {sorted(MODEL_CARD_SPECS)}."
        )
    spec = MODEL_CARD_SPECS[config.model_type]
    is_model = isinstance(model, PreTrainedModel)
    auto_class = (getattr(type(model), "_auto_class", None) if is_model else None) or spec.base_auto_class
    pipeline_tag = AUTO_CLASS_PIPELINE_TAGS.get(auto_class, spec.base_pipeline_tag)
    name_or_path = getattr(config, "_name_or_path", "") or ""
    model_id = model_id or name_or_path or config.model_type

    if base_model is None and training is not None and training.finetuned_from:
        base_model = training.finetuned_from
    is_hub_id = name_or_path.count("/") == 1 and not os.path.exists(name_or_path)
    if base_model is None and is_hub_id and name_or_path != model_id:
        base_model = name_or_path

    metadata = {}
    if training is not None:
        training = copy.copy(training)  # not dataclasses.replace: its __post_init__ may query the Hub
        training.tasks = training.tasks or pipeline_tag
        training.model_name = model_id.rsplit("/", 1)[-1]
        metadata = _training_metadata(training)
        metadata.pop("base_model", None)
    card_tags = ["omni-encoders", config.model_type, *spec.tags, *_as_list(metadata.pop("tags", None)), *(tags or [])]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=license or metadata.pop("license", None),
        language=language or metadata.pop("language", None),
        tags=list(dict.fromkeys(card_tags)),
        base_model=base_model,
        datasets=list(dict.fromkeys(_as_list(datasets) + _as_list(metadata.pop("datasets", None)))) or None,
        metrics=metadata.pop("metrics", None) or None,
        **{key: value for key, value in metadata.items() if key not in ("library_name", "license", "language")},
    )

    id2label = getattr(config, "id2label", None) or {}
    is_classifier = is_model and auto_class.endswith("Classification")
    labels = [id2label[index] for index in sorted(id2label)] if is_classifier else None
    content = _template_environment().get_template(f"{config.model_type}.md").render(
        card_data=card_data.to_yaml(),
        model_id=model_id,
        model_class=type(model).__name__ if is_model else None,
        auto_class=auto_class,
        pipeline_tag=pipeline_tag,
        config=config,
        num_parameters=_human_count(model.num_parameters()) if is_model else None,
        labels=labels,
        base_model=base_model,
        training=_training_context(training) if training is not None else None,
        conversion=conversion,
    )
    return ModelCard(content)


class OmniTrainer(Trainer):
    """`transformers.Trainer` whose model card is the omni-encoders card of the model type.

    Identical to `Trainer` except that:

    - `create_model_card` (called by `push_to_hub`) writes the model type's card, completed with what the Trainer
      knows: evaluation results (`metrics`, `model-index`), datasets, hyperparameters and the results table;
    - with `push_to_hub=True`, the code files of the model (for `trust_remote_code=True`) and a card are written to
      `output_dir` before training, so the checkpoints pushed during training (`hub_strategy="every_save"`) load
      without the package too. A plain `Trainer` only copies config and weights there until its final push.

    Models that are not omni-encoders models get the plain `Trainer` card.
    """

    def _omni_model(self) -> PreTrainedModel | None:
        model = self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model
        config = getattr(model, "config", None)
        return model if getattr(config, "model_type", None) in MODEL_CARD_SPECS else None

    def init_hf_repo(self, token: str | None = None, private: bool | None = None):
        super().init_hf_repo(token=token, private=private)
        model = self._omni_model()
        if model is None or not self.is_world_process_zero():
            return
        from transformers.dynamic_module_utils import custom_object_save

        os.makedirs(self.args.output_dir, exist_ok=True)
        if model.is_remote_code():
            custom_object_save(model, self.args.output_dir)
        create_model_card(model, model_id=self.hub_model_id).save(os.path.join(self.args.output_dir, "README.md"))

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write the model type's card, with this run's training results, to `output_dir/README.md`. Arguments as in
        `Trainer.create_model_card`."""
        model = self._omni_model()
        if model is None:
            return super().create_model_card(
                language=language, license=license, tags=tags, model_name=model_name, finetuned_from=finetuned_from,
                tasks=tasks, dataset_tags=dataset_tags, dataset=dataset, dataset_args=dataset_args,
            )
        if not self.is_world_process_zero():
            return
        summary = TrainingSummary.from_trainer(
            self,
            language=language,
            license=license,
            tags=tags,
            model_name=model_name,
            finetuned_from=finetuned_from,
            tasks=tasks,
            dataset_tags=dataset_tags,
            dataset=dataset,
            dataset_args=dataset_args,
        )
        model_id = self.hub_model_id or model_name or Path(self.args.output_dir).name
        card = create_model_card(model, model_id=model_id, training=summary, license=license or LICENSE)
        card.save(os.path.join(self.args.output_dir, "README.md"))


__all__ = ["MODEL_CARD_SPECS", "ModelCardSpec", "OmniTrainer", "create_model_card"]

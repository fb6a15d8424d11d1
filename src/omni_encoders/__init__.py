# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""omni-encoders: vision, video and audio encoders and a speech decoder as native transformers models.

Importing the package registers every config, model and processor with transformers' Auto classes, so
`AutoModel.from_pretrained(...)`, `AutoProcessor.from_pretrained(...)` and `pipeline(...)` work on saved checkpoints.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
)

from .configuration_omni_vision import OmniVisionConfig
from .image_processing_omni_vision import OmniVisionImageProcessor
from .modeling_omni_vision import (
    OmniVisionForImageClassification,
    OmniVisionModel,
    OmniVisionModelOutput,
    OmniVisionPreTrainedModel,
)


__version__ = "0.1.0"

# Vision
AutoConfig.register(OmniVisionConfig.model_type, OmniVisionConfig, exist_ok=True)
AutoModel.register(OmniVisionConfig, OmniVisionModel, exist_ok=True)
AutoModelForImageClassification.register(OmniVisionConfig, OmniVisionForImageClassification, exist_ok=True)
AutoImageProcessor.register(OmniVisionConfig, image_processor_classes={"pil": OmniVisionImageProcessor}, exist_ok=True)


def __getattr__(name: str):
    # The model-card module imports transformers' Trainer (seconds): load it on first use.
    if name in ("OmniTrainer", "create_model_card"):
        from . import modelcard

        return getattr(modelcard, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "OmniTrainer",
    "OmniVisionConfig",
    "OmniVisionForImageClassification",
    "OmniVisionImageProcessor",
    "OmniVisionModel",
    "OmniVisionModelOutput",
    "OmniVisionPreTrainedModel",
    "create_model_card",
]

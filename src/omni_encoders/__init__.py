# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""omni-encoders: vision, video and audio encoders and a speech decoder as native transformers models.

Importing the package registers every config, model and processor with transformers' Auto classes, so
`AutoModel.from_pretrained(...)`, `AutoProcessor.from_pretrained(...)` and `pipeline(...)` work on saved checkpoints.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForTextToWaveform,
    AutoProcessor,
    AutoTokenizer,
)

from .configuration_omni_audio_decoder import OmniAudioDecoderConfig
from .configuration_omni_vision import OmniVisionConfig
from .feature_extraction_omni_audio_decoder import OmniAudioDecoderFeatureExtractor
from .image_processing_omni_vision import OmniVisionImageProcessor
from .modeling_omni_audio_decoder import (
    OmniAudioDecoderModel,
    OmniAudioDecoderOutput,
    OmniAudioDecoderPreTrainedModel,
    length_regulate,
    monotonic_alignment_search,
)
from .modeling_omni_vision import (
    OmniVisionForImageClassification,
    OmniVisionModel,
    OmniVisionModelOutput,
    OmniVisionPreTrainedModel,
)
from .processing_omni_audio_decoder import OmniAudioDecoderCollator, OmniAudioDecoderProcessor
from .tokenization_omni_audio_decoder import OmniAudioDecoderTokenizer


__version__ = "0.1.0"

# Vision
AutoConfig.register(OmniVisionConfig.model_type, OmniVisionConfig, exist_ok=True)
AutoModel.register(OmniVisionConfig, OmniVisionModel, exist_ok=True)
AutoModelForImageClassification.register(OmniVisionConfig, OmniVisionForImageClassification, exist_ok=True)
AutoImageProcessor.register(OmniVisionConfig, image_processor_classes={"pil": OmniVisionImageProcessor}, exist_ok=True)

# Audio decoder (text to speech)
AutoConfig.register(OmniAudioDecoderConfig.model_type, OmniAudioDecoderConfig, exist_ok=True)
AutoModelForTextToWaveform.register(OmniAudioDecoderConfig, OmniAudioDecoderModel, exist_ok=True)
AutoTokenizer.register(OmniAudioDecoderConfig, tokenizer_class=OmniAudioDecoderTokenizer, exist_ok=True)
AutoFeatureExtractor.register(OmniAudioDecoderConfig, OmniAudioDecoderFeatureExtractor, exist_ok=True)
AutoProcessor.register(OmniAudioDecoderConfig, OmniAudioDecoderProcessor, exist_ok=True)

__all__ = [
    "OmniAudioDecoderCollator",
    "OmniAudioDecoderConfig",
    "OmniAudioDecoderFeatureExtractor",
    "OmniAudioDecoderGANTrainer",
    "OmniAudioDecoderModel",
    "OmniAudioDecoderOutput",
    "OmniAudioDecoderPreTrainedModel",
    "OmniAudioDecoderProcessor",
    "OmniAudioDecoderTokenizer",
    "OmniVisionConfig",
    "OmniVisionForImageClassification",
    "OmniVisionImageProcessor",
    "OmniVisionModel",
    "OmniVisionModelOutput",
    "OmniVisionPreTrainedModel",
    "length_regulate",
    "monotonic_alignment_search",
]


def __getattr__(name: str):
    # The GAN trainer imports `transformers.Trainer` (and with it datasets, accelerate, ...): load it on first use.
    if name == "OmniAudioDecoderGANTrainer":
        from .trainer_omni_audio_decoder import OmniAudioDecoderGANTrainer

        return OmniAudioDecoderGANTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

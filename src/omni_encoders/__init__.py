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
    AutoModelForAudioClassification,
    AutoModelForCTC,
    AutoModelForImageClassification,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoModelForTextToWaveform,
    AutoModelForVideoClassification,
    AutoProcessor,
    AutoTokenizer,
)

# `transformers.AutoVideoProcessor` is a placeholder that raises when torchvision is missing; the class itself is not.
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

# Vision
from .configuration_omni_vision import OmniVisionConfig
from .image_processing_omni_vision import OmniVisionImageProcessor
from .modeling_omni_vision import (
    OmniVisionForImageClassification,
    OmniVisionModel,
    OmniVisionModelOutput,
    OmniVisionPreTrainedModel,
)

# Video
from .configuration_omni_video import OmniVideoConfig
from .modeling_omni_video import (
    OmniVideoForVideoClassification,
    OmniVideoModel,
    OmniVideoModelOutput,
    OmniVideoPreTrainedModel,
)
from .video_processing_omni_video import OmniVideoVideoProcessor

# Audio encoder
from .configuration_omni_audio import OmniAudioConfig, audio_frame_lengths
from .feature_extraction_omni_audio import OmniAudioFeatureExtractor
from .modeling_omni_audio import (
    OmniAudioCTCOutput,
    OmniAudioForAudioClassification,
    OmniAudioForCTC,
    OmniAudioModel,
    OmniAudioModelOutput,
    OmniAudioPreTrainedModel,
    OmniAudioStreamState,
)
from .processing_omni_audio import OmniAudioProcessor

# Audio decoder (text to speech)
from .configuration_omni_audio_decoder import OmniAudioDecoderConfig
from .feature_extraction_omni_audio_decoder import OmniAudioDecoderFeatureExtractor
from .modeling_omni_audio_decoder import (
    OmniAudioDecoderModel,
    OmniAudioDecoderOutput,
    OmniAudioDecoderPreTrainedModel,
    length_regulate,
    monotonic_alignment_search,
)
from .processing_omni_audio_decoder import OmniAudioDecoderCollator, OmniAudioDecoderProcessor
from .tokenization_omni_audio_decoder import OmniAudioDecoderTokenizer

# The omni-modal LLM (a causal LM fed by the encoders)
from .configuration_omni import OmniConfig
from .modeling_omni import (
    OmniCausalLMOutputWithPast,
    OmniEncoderOutput,
    OmniForConditionalGeneration,
    OmniGenerateOutput,
    OmniProjector,
)
from .processing_omni import OmniCollator, OmniProcessor


__version__ = "0.1.0"

# Vision
AutoConfig.register(OmniVisionConfig.model_type, OmniVisionConfig, exist_ok=True)
AutoModel.register(OmniVisionConfig, OmniVisionModel, exist_ok=True)
AutoModelForImageClassification.register(OmniVisionConfig, OmniVisionForImageClassification, exist_ok=True)
AutoImageProcessor.register(OmniVisionConfig, image_processor_classes={"pil": OmniVisionImageProcessor}, exist_ok=True)

# Video
AutoConfig.register(OmniVideoConfig.model_type, OmniVideoConfig, exist_ok=True)
AutoModel.register(OmniVideoConfig, OmniVideoModel, exist_ok=True)
AutoModelForVideoClassification.register(OmniVideoConfig, OmniVideoForVideoClassification, exist_ok=True)
AutoVideoProcessor.register(OmniVideoConfig, OmniVideoVideoProcessor, exist_ok=True)

# Audio
AutoConfig.register(OmniAudioConfig.model_type, OmniAudioConfig, exist_ok=True)
AutoModel.register(OmniAudioConfig, OmniAudioModel, exist_ok=True)
AutoModelForCTC.register(OmniAudioConfig, OmniAudioForCTC, exist_ok=True)
AutoModelForAudioClassification.register(OmniAudioConfig, OmniAudioForAudioClassification, exist_ok=True)
AutoFeatureExtractor.register(OmniAudioConfig, OmniAudioFeatureExtractor, exist_ok=True)
AutoProcessor.register(OmniAudioConfig, OmniAudioProcessor, exist_ok=True)

# Audio decoder (text to speech)
AutoConfig.register(OmniAudioDecoderConfig.model_type, OmniAudioDecoderConfig, exist_ok=True)
AutoModel.register(OmniAudioDecoderConfig, OmniAudioDecoderModel, exist_ok=True)  # as transformers' VITS
AutoModelForTextToWaveform.register(OmniAudioDecoderConfig, OmniAudioDecoderModel, exist_ok=True)
AutoTokenizer.register(OmniAudioDecoderConfig, tokenizer_class=OmniAudioDecoderTokenizer, exist_ok=True)
AutoFeatureExtractor.register(OmniAudioDecoderConfig, OmniAudioDecoderFeatureExtractor, exist_ok=True)
AutoProcessor.register(OmniAudioDecoderConfig, OmniAudioDecoderProcessor, exist_ok=True)

# The omni-modal LLM
AutoConfig.register(OmniConfig.model_type, OmniConfig, exist_ok=True)
AutoModelForImageTextToText.register(OmniConfig, OmniForConditionalGeneration, exist_ok=True)
AutoModelForMultimodalLM.register(OmniConfig, OmniForConditionalGeneration, exist_ok=True)
AutoProcessor.register(OmniConfig, OmniProcessor, exist_ok=True)


def __getattr__(name: str):
    # These modules import transformers' Trainer (and with it datasets, accelerate, ...): load them on first use.
    if name in ("OmniTrainer", "create_model_card"):
        from . import modelcard

        return getattr(modelcard, name)
    if name == "OmniAudioDecoderGANTrainer":
        from .trainer_omni_audio_decoder import OmniAudioDecoderGANTrainer

        return OmniAudioDecoderGANTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # vision
    "OmniVisionConfig",
    "OmniVisionForImageClassification",
    "OmniVisionImageProcessor",
    "OmniVisionModel",
    "OmniVisionModelOutput",
    "OmniVisionPreTrainedModel",
    # video
    "OmniVideoConfig",
    "OmniVideoForVideoClassification",
    "OmniVideoModel",
    "OmniVideoModelOutput",
    "OmniVideoPreTrainedModel",
    "OmniVideoVideoProcessor",
    # audio encoder
    "OmniAudioCTCOutput",
    "OmniAudioConfig",
    "OmniAudioFeatureExtractor",
    "OmniAudioForAudioClassification",
    "OmniAudioForCTC",
    "OmniAudioModel",
    "OmniAudioModelOutput",
    "OmniAudioStreamState",
    "OmniAudioPreTrainedModel",
    "OmniAudioProcessor",
    "audio_frame_lengths",
    # audio decoder
    "OmniAudioDecoderCollator",
    "OmniAudioDecoderConfig",
    "OmniAudioDecoderFeatureExtractor",
    "OmniAudioDecoderGANTrainer",
    "OmniAudioDecoderModel",
    "OmniAudioDecoderOutput",
    "OmniAudioDecoderPreTrainedModel",
    "OmniAudioDecoderProcessor",
    "OmniAudioDecoderTokenizer",
    "length_regulate",
    "monotonic_alignment_search",
    # the omni-modal LLM
    "OmniCausalLMOutputWithPast",
    "OmniCollator",
    "OmniConfig",
    "OmniEncoderOutput",
    "OmniForConditionalGeneration",
    "OmniGenerateOutput",
    "OmniProcessor",
    "OmniProjector",
    # training and the Hub
    "OmniTrainer",
    "create_model_card",
]

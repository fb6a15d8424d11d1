"""What DESIGN.md promises every encoder (and the speech decoder's vocoder): `torch.compile(fullgraph=True)` for fixed
shapes, and PEFT LoRA on the documented projections."""

import pytest
import torch

from helpers import max_abs_diff, tiny_audio_config, tiny_video_config, tiny_vision_config
from omni_encoders import (
    OmniAudioModel,
    OmniVideoForVideoClassification,
    OmniVideoModel,
    OmniVisionForImageClassification,
    OmniVisionModel,
)


def _encoder_and_inputs(name):
    torch.manual_seed(0)
    if name == "vision":
        return OmniVisionModel(tiny_vision_config()), {"pixel_values": torch.randn(2, 3, 28, 42)}
    if name == "video":
        frame_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
        return OmniVideoModel(tiny_video_config()), {
            "pixel_values_videos": torch.randn(2, 4, 3, 28, 28),
            "frame_mask": frame_mask,
        }
    attention_mask = torch.ones(2, 64 * 20, dtype=torch.long)
    attention_mask[1, 64 * 12 :] = 0
    return OmniAudioModel(tiny_audio_config()), {
        "input_values": torch.randn(2, 64 * 20),
        "attention_mask": attention_mask,
    }


@pytest.mark.parametrize("name", ["vision", "video", "audio"])
def test_forward_compiles_as_one_graph(name):
    """`fullgraph=True` raises on any graph break; the "eager" backend traces with dynamo without generating code
    (the tracing is what can break, and it keeps the test fast)."""
    model, inputs = _encoder_and_inputs(name)
    model.eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state
        actual = compiled(**inputs).last_hidden_state
    assert max_abs_diff(actual, expected) < 1e-5


# The training layout on a full batch; the channels-last inference layout, decoding in chunks, on a padded batch.
@pytest.mark.parametrize("grad, mel_lengths", [(True, None), (False, torch.tensor([40, 13]))])
def test_vocoder_compiles_as_one_graph(grad, mel_lengths):
    """The speech decoder's vocoder has fixed shapes for a given mel (its acoustic model does not: the length
    regulator's output length is the sum of the predicted durations)."""
    from omni_encoders.modeling_omni_vocoder import OmniVocoder, init_vocoder_weights

    torch.manual_seed(0)
    vocoder = OmniVocoder(n_mels=20, initial_channels=16, inference_chunk_frames=16).eval()
    vocoder.apply(lambda module: init_vocoder_weights(module, std=0.1))
    mel = torch.randn(2, 40, 20)
    compiled = torch.compile(vocoder, backend="eager", fullgraph=True)
    with torch.set_grad_enabled(grad):
        assert max_abs_diff(compiled(mel, mel_lengths), vocoder(mel, mel_lengths)) < 1e-6


def test_video_mixture_of_experts_trains_compiled_with_the_eager_gradients():
    """Under compile the experts run densely (static shapes); loss and gradients equal the grouped dispatch's."""
    torch.manual_seed(0)
    model = OmniVideoForVideoClassification(tiny_video_config(num_labels=3))
    inputs = {"pixel_values_videos": torch.randn(2, 4, 3, 28, 28), "labels": torch.tensor([0, 2])}
    expert = model.model.layers[0].mlp.experts[1].down_proj.weight

    eager_loss = model(**inputs).loss
    eager_loss.backward()
    eager_grad = expert.grad.clone()
    model.zero_grad()
    compiled_loss = torch.compile(model, backend="eager", fullgraph=True)(**inputs).loss
    compiled_loss.backward()
    assert max_abs_diff(compiled_loss, eager_loss) < 1e-6
    assert max_abs_diff(expert.grad, eager_grad) < 1e-6


@pytest.mark.parametrize(
    ("model_class", "config", "inputs", "targets"),
    [
        (
            OmniVisionForImageClassification,
            tiny_vision_config,
            {"pixel_values": torch.randn(2, 3, 28, 28)},
            ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"],
        ),
        (
            OmniVideoForVideoClassification,
            tiny_video_config,
            {"pixel_values_videos": torch.randn(2, 4, 3, 28, 28)},
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    ],
    ids=["vision", "video"],
)
def test_lora_on_the_documented_projections(model_class, config, inputs, targets):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model_class(config(num_labels=2)), LoraConfig(r=4, target_modules=targets))
    trainable = [name for name, parameter in peft_model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert {name.split(".")[-4] for name in trainable} == set(targets)
    peft_model(**inputs, labels=torch.tensor([0, 1])).loss.backward()
    assert all(peft_model.get_parameter(name).grad is not None for name in trainable)

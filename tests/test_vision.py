"""The vision encoder: config, model, heads, processor, Auto classes, pipelines, remote code and backbone loading."""

import copy
import json
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoProcessor,
    CLIPVisionConfig,
    SiglipConfig,
    SiglipModel,
    SiglipTextConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
    pipeline,
)
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from helpers import TINY_SIGLIP, max_abs_diff, run_without_package, tiny_vision_config
from omni_encoders import (
    OmniVisionConfig,
    OmniVisionForImageClassification,
    OmniVisionImageProcessor,
    OmniVisionModel,
    modeling_omni_common,
)
from omni_encoders.hardware import flex_attention_cpu_problem
from omni_encoders.modeling_omni_common import grid_positions


# ----------------------------------------------------------------------------------------------------- config


def test_default_config_is_the_spec_full_size():
    config = OmniVisionConfig()
    backbone = config.backbone_config
    assert backbone.model_type == "siglip_vision_model"
    assert (backbone.hidden_size, backbone.num_hidden_layers, backbone.patch_size, backbone.image_size) == (
        1152, 27, 14, 384,
    )
    assert (config.image_size // config.patch_size) ** 2 == 729  # not 576: see the spec corrections
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_tokens) == (2, 8, 256)
    assert config.intermediate_size == 4 * 1152 and config.rope_theta == 10000.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_attention_heads": 5}, "divisible by num_attention_heads"),
        ({"num_attention_heads": 16}, "divisible by 4"),  # head_dim 2
        ({"num_attention_heads": 0}, "num_attention_heads must be positive"),
        ({"num_attention_heads": -4}, "num_attention_heads must be positive"),
        ({"intermediate_size": 0}, "intermediate_size must be positive"),
        ({"num_tokens": -1}, "num_tokens"),
        ({"num_hidden_layers": "2"}, "num_hidden_layers must be an integer"),
        ({"num_tokens": 2.5}, "num_tokens must be an integer"),
        ({"rope_theta": 0.0}, "rope_theta must be a positive"),
        ({"rope_theta": -1.0}, "rope_theta must be a positive"),
        ({"rope_theta": float("nan")}, "rope_theta must be a positive"),
        ({"layer_norm_eps": -1e-6}, "layer_norm_eps must be a positive"),
        ({"hidden_act": "foo"}, "Unknown hidden_act 'foo'"),
        ({"backbone_config": {"model_type": "bert"}}, "Unsupported backbone_config"),
        ({"attention_dropout": 1.5}, "attention_dropout"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_vision_config(**kwargs)


def test_config_accepts_siglip2_clip_and_composite_configs():
    clip = OmniVisionConfig(backbone_config=CLIPVisionConfig(hidden_size=32, num_attention_heads=4), num_attention_heads=4)
    assert clip.backbone_config.model_type == "clip_vision_model"
    composite = SiglipConfig(vision_config=SiglipVisionConfig(**{k: v for k, v in TINY_SIGLIP.items() if k != "model_type"}))
    from_composite = OmniVisionConfig(backbone_config=composite, num_attention_heads=4)
    assert from_composite.backbone_config.hidden_size == 32
    from_dict = OmniVisionConfig(backbone_config={"model_type": "siglip2", "vision_config": {"hidden_size": 64}})
    assert from_dict.backbone_config.model_type == "siglip2_vision_model" and from_dict.hidden_size == 64


def test_config_round_trip(tmp_path):
    config = tiny_vision_config(num_tokens=3)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, OmniVisionConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()


# ----------------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize("height, width", [(28, 28), (28, 42), (56, 14), (30, 33)])
def test_shapes_follow_the_patch_grid(height, width):
    model = OmniVisionModel(tiny_vision_config()).eval()
    out = model(torch.randn(2, 3, height, width))
    num_patches = (height // 7) * (width // 7)
    assert out.last_hidden_state.shape == (2, 6, 32)
    assert out.patch_embeddings.shape == (2, num_patches, 32)
    assert out.pooler_output.shape == (2, 32)
    assert torch.allclose(out.pooler_output, out.last_hidden_state.mean(1))


def test_bad_pixel_values_raise_clear_errors():
    model = OmniVisionModel(tiny_vision_config())
    for head in (model, OmniVisionForImageClassification(tiny_vision_config(num_labels=2))):
        with pytest.raises(TypeError, match="unexpected keyword argument.*'output_hiden_states'"):
            head(torch.randn(1, 3, 28, 28), output_hiden_states=True)  # a misspelt argument is not ignored
    with pytest.raises(ValueError, match="smaller than one 7x7 patch"):
        model(torch.randn(1, 3, 6, 28))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\[batch, channels, height, width\]"):
        model(torch.randn(3, 28, 28))
    with pytest.raises(ValueError, match="empty batch"):
        model(torch.randn(0, 3, 28, 28))


def test_outputs_hidden_states_attentions_and_tuples():
    model = OmniVisionModel(tiny_vision_config(attn_implementation="eager")).eval()
    x = torch.randn(1, 3, 28, 28)
    out = model(x, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 2 + 1 + 2  # backbone layers + embeddings, then the dual-stream blocks
    assert len(out.attentions) == 2 + 2
    assert out.attentions[-1].shape == (1, 4, 32, 32)  # joint attention over both streams (2 x 16 patches)
    probs = out.attentions[-1].sum(-1)
    assert torch.allclose(probs, torch.ones_like(probs), atol=1e-5)
    as_tuple = model(x, return_dict=False)
    assert torch.equal(as_tuple[0], out.last_hidden_state)


@pytest.mark.parametrize("implementation", ["sdpa", "flex_attention"])
def test_attentions_are_returned_with_eager_attention_only(monkeypatch, implementation):
    """As in transformers: another implementation returns no attention weights (an empty tuple, never `None`s), and
    says so once."""
    messages = []
    monkeypatch.setattr(modeling_omni_common.logger, "warning_once", messages.append)
    if implementation == "flex_attention" and flex_attention_cpu_problem():
        with pytest.raises(ValueError, match="flex_attention"):  # this CPU's flex kernels are wrong: refused
            OmniVisionModel(tiny_vision_config(attn_implementation=implementation))
        return
    model = OmniVisionModel(tiny_vision_config(attn_implementation=implementation)).eval()
    with torch.no_grad():  # flex attention has no CPU backward
        out = model(torch.randn(1, 3, 28, 28), output_attentions=True)
    assert out.attentions == ()
    assert len(messages) == 1 and "eager" in messages[0]
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(torch.randn(1, 3, 28, 28), output_attentions=True)
    assert len(out.attentions) == 2 + 2 and all(a is not None for a in out.attentions)
    assert len(messages) == 1


def test_eager_block_keeps_attention_weights_only_when_asked():
    model = OmniVisionModel(tiny_vision_config(attn_implementation="eager")).eval()
    block, x = model.layers[0], torch.randn(1, 16, 32)
    position_embeddings = model.rotary_emb(grid_positions((4, 4)))
    a, b, weights = block(x, x, position_embeddings)
    assert weights is None
    a_with, b_with, weights = block(x, x, position_embeddings, output_attentions=True)
    assert weights.shape == (1, 4, 32, 32)
    assert torch.equal(a, a_with) and torch.equal(b, b_with)


def test_dual_stream_queries_attend_to_both_streams():
    """Changing stream b's input changes stream a's output: the joint attention mixes them."""
    model = OmniVisionModel(tiny_vision_config()).eval()
    block = model.layers[0]
    x = torch.randn(1, 16, 32)
    pe = model.rotary_emb(torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), -1).reshape(-1, 2))
    a1, _, _ = block(x, x, pe)
    a2, _, _ = block(x, x + torch.randn_like(x), pe)
    assert max_abs_diff(a1, a2) > 1e-4


def test_inference_is_memory_lean_and_gives_the_training_path_outputs():
    from omni_encoders.modeling_omni_common import OmniActivation

    torch.manual_seed(0)
    model = OmniVisionModel(tiny_vision_config()).eval()
    # The backbone's feed-forward activations run in place without autograd (SigLIP's gelu_pytorch_tanh) ...
    assert all(isinstance(layer.mlp.activation_fn, OmniActivation) for layer in model.backbone.encoder.layers)
    # ... and, with in-place activations, token-chunked feed-forward layers and per-stream queries, inference gives
    # the outputs of the (one-piece, out-of-place) autograd path.
    for module in model.modules():
        if hasattr(module, "inference_chunk_tokens"):
            module.inference_chunk_tokens = 7
    x = torch.randn(2, 3, 28, 28)
    expected = model(x)
    with torch.no_grad():
        output = model(x)
    torch.testing.assert_close(output.last_hidden_state, expected.last_hidden_state)
    torch.testing.assert_close(output.patch_embeddings, expected.patch_embeddings)


@pytest.mark.parametrize("where", ["backbone", "dual-stream block", "compressor"])
def test_fc1_forward_hooks_see_the_fc1_output_under_no_grad(where):
    """The in-place activation would overwrite the tensor a forward hook on `fc1` holds: with hooks it runs out of
    place (and in place, to save memory, without), in the backbone's feed-forward layers and in ours alike."""
    torch.manual_seed(0)
    model = OmniVisionModel(tiny_vision_config()).eval()
    mlp = {
        "backbone": model.backbone.encoder.layers[0].mlp,
        "dual-stream block": model.layers[0].stream_a.mlp,
        "compressor": model.compressor.mlp,
    }[where]
    activation = mlp.activation_fn if where == "backbone" else mlp.act
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        assert activation(x) is x  # in place without hooks
    captured = {}
    handle = mlp.fc1.register_forward_hook(lambda module, args, output: captured.update(input=args[0], output=output))
    with torch.no_grad():
        assert activation(x) is not x
        model(torch.randn(1, 3, 28, 28))
    expected = torch.nn.functional.linear(captured["input"], mlp.fc1.weight, mlp.fc1.bias)
    assert torch.equal(captured["output"], expected)
    handle.remove()
    # A copy of the model watches the hooks of its own `fc1`, and a replaced `fc1` (a LoRA wrapper) is the one watched.
    copied = copy.deepcopy(mlp)
    copied.fc1.register_forward_hook(lambda *args: None)
    copied_activation = copied.activation_fn if where == "backbone" else copied.act
    with torch.no_grad():
        assert activation(x) is x and copied_activation(x) is not x
    mlp.fc1 = torch.nn.Sequential(mlp.fc1)
    mlp.fc1.register_forward_hook(lambda *args: None)
    with torch.no_grad():
        assert activation(x) is not x


@pytest.mark.parametrize("implementation", ["sdpa", "flex_attention"])
def test_attention_implementations_agree_with_eager(implementation):
    torch.manual_seed(0)
    model = OmniVisionModel(tiny_vision_config(attn_implementation="eager")).eval()
    x = torch.randn(2, 3, 28, 35)
    if implementation == "flex_attention" and flex_attention_cpu_problem():
        with pytest.raises(ValueError, match="flex_attention"):  # this CPU's flex kernels are wrong: refused
            model.set_attn_implementation(implementation)
        return
    with torch.no_grad():  # flex attention has no CPU backward
        expected = model(x).last_hidden_state
        model.set_attn_implementation(implementation)
        assert model.backbone.config._attn_implementation == implementation
        assert max_abs_diff(model(x).last_hidden_state, expected) < 1e-4


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = OmniVisionForImageClassification(tiny_vision_config(num_labels=3))
    model.train()
    x, labels = torch.randn(2, 3, 28, 28), torch.tensor([0, 2])
    model(x, labels=labels).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    model(x, labels=labels).loss.backward()
    for name, grad in reference.items():
        assert max_abs_diff(dict(model.named_parameters())[name].grad, grad) < 1e-5, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_is_finite(dtype):
    model = OmniVisionModel(tiny_vision_config()).to(dtype).eval()
    out = model(torch.randn(2, 3, 28, 28, dtype=dtype))
    assert out.last_hidden_state.dtype == dtype
    assert torch.isfinite(out.last_hidden_state).all() and torch.isfinite(out.patch_embeddings).all()


def test_backbones_siglip2_and_clip_run():
    siglip2 = tiny_vision_config(
        backbone_config={**TINY_SIGLIP, "model_type": "siglip2_vision_model", "num_patches": 16}
    )
    out = OmniVisionModel(siglip2).eval()(torch.randn(1, 3, 30, 44))
    assert out.patch_embeddings.shape == (1, 24, 32)  # 4 x 6 whole patches
    clip = tiny_vision_config(backbone_config={**TINY_SIGLIP, "model_type": "clip_vision_model"})
    out = OmniVisionModel(clip).eval()(torch.randn(1, 3, 28, 28))
    assert out.patch_embeddings.shape == (1, 16, 32)  # class token dropped


def test_classification_loss_and_training_step():
    model = OmniVisionForImageClassification(tiny_vision_config(num_labels=4))
    x, labels = torch.randn(4, 3, 28, 28), torch.tensor([0, 1, 2, 3])
    out = model(x, labels=labels)
    assert out.logits.shape == (4, 4)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(x, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0] * 0.5


# ----------------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_and_auto_classes(tmp_path):
    model = OmniVisionForImageClassification(tiny_vision_config(num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is OmniVisionForImageClassification
    x = torch.randn(2, 3, 28, 28)
    assert torch.equal(loaded(x).logits, model(x).logits)
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is OmniVisionModel
    assert torch.equal(base(x).pooler_output, model.model(x).pooler_output)


# ----------------------------------------------------------------------------------------------------- processor


@pytest.fixture
def processor():
    return OmniVisionImageProcessor(size={"height": 28, "width": 28})


@pytest.mark.parametrize(
    "image, batch",
    [
        (PIL.Image.new("RGB", (50, 40)), 1),
        (PIL.Image.new("L", (50, 40)), 1),
        (PIL.Image.new("RGBA", (50, 40)), 1),
        (np.zeros((40, 50, 3), np.uint8), 1),
        (np.zeros((40, 50), np.uint8), 1),
        (np.zeros((40, 50, 4), np.uint8), 1),
        (np.zeros((3, 40, 50), np.float32), 1),
        (torch.rand(3, 40, 50), 1),
        (torch.rand(5, 3, 40, 50), 5),
        ([PIL.Image.new("RGB", (50, 40)), np.zeros((20, 30, 3), np.uint8)], 2),
    ],
)
def test_processor_accepts_common_inputs(processor, image, batch):
    pixel_values = processor(image, return_tensors="pt").pixel_values
    assert pixel_values.shape == (batch, 3, 28, 28)
    assert torch.isfinite(pixel_values).all()


@pytest.mark.parametrize(
    "images, batch",
    [
        ([np.zeros((2, 40, 50, 3), np.uint8)], 2),
        ([np.zeros((2, 40, 50, 3), np.uint8), np.zeros((1, 40, 50, 3), np.uint8)], 3),
        ([torch.rand(2, 3, 40, 50)], 2),
        ([[torch.rand(2, 3, 40, 50)], PIL.Image.new("RGB", (50, 40))], 3),
    ],
)
def test_processor_flattens_lists_of_batches(processor, images, batch):
    assert processor(images, return_tensors="pt").pixel_values.shape == (batch, 3, 28, 28)


@pytest.mark.parametrize(
    "flip",
    [lambda image: image[..., ::-1], np.fliplr, lambda image: (image / 255.0).astype(np.float32)[::-1]],
    ids=["bgr_to_rgb", "fliplr", "float_flipud"],
)
def test_processor_accepts_negatively_strided_arrays_like_siglip(processor, flip):
    image = flip((np.random.RandomState(0).rand(40, 50, 3) * 255).astype(np.uint8))
    expected = SiglipImageProcessorPil(size={"height": 28, "width": 28})(image, return_tensors="pt").pixel_values
    assert torch.equal(processor(image, return_tensors="pt").pixel_values, expected)


def test_processor_accepts_half_precision_tensors(processor):
    image = torch.rand(3, 40, 50)  # e.g. frames already on the model's bf16 path
    for dtype in (torch.bfloat16, torch.float16):
        expected = processor(image.to(dtype).float(), return_tensors="pt").pixel_values
        assert torch.equal(processor(image.to(dtype), return_tensors="pt").pixel_values, expected)


def test_processor_checks_values_without_warnings(processor):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        processor(PIL.Image.new("RGB", (50, 40)), return_tensors="pt")
        processor(np.asarray(PIL.Image.new("RGB", (50, 40))), return_tensors="pt")  # a read-only array
    assert not [w for w in caught if "writable" in str(w.message)]
    nan_view = np.zeros((40, 50, 3), np.float32)
    nan_view[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        processor(nan_view[::-1, :, ::-1], return_tensors="pt")
    with pytest.raises(ValueError, match="NaN or infinite"):
        processor(torch.full((3, 40, 50), float("inf")), return_tensors="pt")


def test_processor_normalises_like_siglip(processor):
    white = processor(PIL.Image.new("RGB", (30, 30), (255, 255, 255)), return_tensors="pt").pixel_values
    black = processor(PIL.Image.new("RGB", (30, 30)), return_tensors="pt").pixel_values
    assert torch.allclose(white, torch.ones_like(white)) and torch.allclose(black, -torch.ones_like(black))


@pytest.mark.parametrize(
    "image, message",
    [
        ([], "No images"),
        (None, "No images"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 7), np.uint8), "channel axis"),
        (np.zeros((2, 2, 3, 4, 4)), "shape"),
        (np.full((10, 10, 3), np.nan, np.float32), "NaN"),
        ({"not": "an image"}, "unsupported type"),
    ],
)
def test_processor_rejects_unusable_input(processor, image, message):
    with pytest.raises(ValueError, match=message):
        processor(image, return_tensors="pt")


def test_processor_auto_classes(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    tiny_vision_config().save_pretrained(tmp_path)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is OmniVisionImageProcessor
    assert type(AutoProcessor.from_pretrained(tmp_path)) is OmniVisionImageProcessor


# ----------------------------------------------------------------------------------------------------- pipelines


def _save_classifier(path):
    config = tiny_vision_config(num_labels=2, id2label={0: "dark", 1: "bright"}, label2id={"dark": 0, "bright": 1})
    model = OmniVisionForImageClassification(config).eval()
    with torch.no_grad():  # make the answer depend on brightness: logit_bright - logit_dark = mean pooled value
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    model.save_pretrained(path)
    OmniVisionImageProcessor(size={"height": 28, "width": 28}).save_pretrained(path)
    return model


def test_image_classification_pipeline(tmp_path):
    model = _save_classifier(tmp_path)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([0.0, 1.0]))
    model.save_pretrained(tmp_path)
    classifier = pipeline("image-classification", model=str(tmp_path))
    predictions = classifier(PIL.Image.new("RGB", (40, 40), (200, 10, 10)))
    assert [p["label"] for p in predictions] == ["bright", "dark"]
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0)


def test_image_feature_extraction_pipeline(tmp_path):
    _save_classifier(tmp_path)
    AutoModel.from_pretrained(tmp_path).save_pretrained(tmp_path / "base")
    OmniVisionImageProcessor(size={"height": 28, "width": 28}).save_pretrained(tmp_path / "base")
    extractor = pipeline("image-feature-extraction", model=str(tmp_path / "base"))
    features = extractor(PIL.Image.new("RGB", (40, 30)), return_tensors=True)
    assert tuple(features.shape) == (1, 6, 32)
    pooled = extractor([PIL.Image.new("RGB", (40, 30))] * 2, pool=True, return_tensors=True)
    assert len(pooled) == 2 and tuple(pooled[0].shape) == (1, 32)


# ----------------------------------------------------------------------------------------------------- remote code


def test_remote_code_loads_without_the_package(tmp_path):
    model = OmniVisionModel(tiny_vision_config()).eval()
    model.save_pretrained(tmp_path / "ckpt")
    processor = OmniVisionImageProcessor(size={"height": 28, "width": 28})
    processor.save_pretrained(tmp_path / "ckpt")
    image = PIL.Image.fromarray((np.random.RandomState(0).rand(30, 40, 3) * 255).astype(np.uint8))
    image.save(tmp_path / "image.png")
    with torch.no_grad():
        expected = model(**processor(image, return_tensors="pt")).last_hidden_state
    result = run_without_package(
        f"""
        import json, torch, PIL.Image
        from transformers import AutoModel, AutoImageProcessor
        model = AutoModel.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True)
        with torch.no_grad():
            out = model(**processor(PIL.Image.open({str(tmp_path / "image.png")!r}), return_tensors="pt"))
        print(json.dumps({{"model": type(model).__name__, "processor": type(processor).__name__,
                          "tokens": out.last_hidden_state.tolist()}}))
        """,
        tmp_path,
    )
    assert result["model"] == "OmniVisionModel" and result["processor"] == "OmniVisionImageProcessor"
    assert max_abs_diff(torch.tensor(result["tokens"]), expected) < 1e-5


# ----------------------------------------------------------------------------------------------------- pretrained backbones


@pytest.mark.parametrize("full_checkpoint", [False, True])
def test_from_backbone_pretrained_loads_the_siglip_tower(tmp_path, full_checkpoint):
    vision_kwargs = {k: v for k, v in TINY_SIGLIP.items() if k != "model_type"}
    if full_checkpoint:
        text = SiglipTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
        source = SiglipModel(SiglipConfig(text_config=text, vision_config=SiglipVisionConfig(**vision_kwargs)))
        tower = source.vision_model
    else:
        from transformers import SiglipVisionModel

        source = tower = SiglipVisionModel(SiglipVisionConfig(**vision_kwargs))
    source.save_pretrained(tmp_path)

    model = OmniVisionModel.from_backbone_pretrained(str(tmp_path), num_attention_heads=4, num_tokens=5).eval()
    assert model.config.num_tokens == 5 and model.config.hidden_size == 32
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        ours, _, _ = model.backbone_features(x)
        standalone = tower.eval()(x).last_hidden_state
    assert torch.equal(ours, standalone)


def _save_siglip_tower(path, dtype=torch.float32):
    torch.manual_seed(0)
    tower = SiglipVisionModel(SiglipVisionConfig(**{k: v for k, v in TINY_SIGLIP.items() if k != "model_type"}))
    tower.to(dtype).save_pretrained(path)
    return tower.eval()


def test_from_backbone_pretrained_reuses_the_loaded_tower(tmp_path, monkeypatch):
    """The loaded tower is the backbone (with the model's in-place activations): no second backbone is built and
    initialised; the model is in evaluation mode, as after `from_pretrained`."""
    from omni_encoders.modeling_omni_common import OmniActivation

    tower = _save_siglip_tower(tmp_path)
    loaded = []
    from_pretrained = AutoModel.from_pretrained

    def spy(*args, **kwargs):
        loaded.append(from_pretrained(*args, **kwargs))
        return loaded[-1]

    def no_new_backbone(*args, **kwargs):
        raise AssertionError("a second backbone was built")

    monkeypatch.setattr(AutoModel, "from_pretrained", spy)
    monkeypatch.setattr(AutoModel, "from_config", no_new_backbone)
    model = OmniVisionModel.from_backbone_pretrained(str(tmp_path), num_attention_heads=4, num_tokens=5)
    assert len(loaded) == 1 and model.backbone is loaded[0]
    assert model.backbone.config is model.config.backbone_config
    assert not model.training
    assert all(isinstance(layer.mlp.activation_fn, OmniActivation) for layer in model.backbone.encoder.layers)
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.backbone_features(x)[0], tower(x).last_hidden_state)
    monkeypatch.undo()
    # The same from a tower at hand, whose config the model's config holds.
    config = OmniVisionConfig(backbone_config=tower.config, num_attention_heads=4, num_tokens=5)
    around_tower = OmniVisionModel(config, backbone=tower).eval()
    assert around_tower.backbone is tower and tower.config._attn_implementation == config._attn_implementation
    with torch.no_grad():
        assert torch.equal(around_tower.backbone_features(x)[0], model.backbone_features(x)[0])
    with pytest.raises(ValueError, match="model of `config.backbone_config`"):
        OmniVisionModel(tiny_vision_config(), backbone=tower)


def test_from_backbone_pretrained_loads_the_tower_of_an_image_text_checkpoint(tmp_path):
    """The README's path (google/siglip-so400m-patch14-384 is a full SigLIP): the vision tower and nothing else."""
    from transformers import SiglipConfig, SiglipModel

    vision = {k: v for k, v in TINY_SIGLIP.items() if k != "model_type"}
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
            "vocab_size": 99, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}  # fmt: skip
    torch.manual_seed(0)
    full = SiglipModel(SiglipConfig(vision_config=vision, text_config=text)).eval()
    full.save_pretrained(tmp_path)
    model = OmniVisionModel.from_backbone_pretrained(str(tmp_path), num_attention_heads=4, num_tokens=5)
    assert type(model.backbone) is SiglipVisionModel and not hasattr(model.backbone, "head")
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        expected = full.vision_model(x).last_hidden_state
        assert max_abs_diff(model.backbone_features(x)[0], expected) < 1e-6
    # output_attentions=True loads the tower with eager attention (as from_pretrained does), so the weights come back.
    with_attentions = OmniVisionModel.from_backbone_pretrained(
        str(tmp_path), num_attention_heads=4, output_attentions=True
    )
    assert with_attentions.config._attn_implementation == "eager"
    with torch.no_grad():
        assert len(with_attentions(x).attentions) == 2 + 2


def test_classifier_from_backbone_pretrained(tmp_path):
    """The head builds around a pretrained tower in one call too; its own layers are new."""
    tower = _save_siglip_tower(tmp_path)
    classifier = OmniVisionForImageClassification.from_backbone_pretrained(
        str(tmp_path), num_attention_heads=4, num_tokens=5, num_labels=3
    )
    assert type(classifier) is OmniVisionForImageClassification and not classifier.training
    assert classifier.config.num_labels == 3 and classifier.classifier.out_features == 3
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(classifier.model.backbone_features(x)[0], tower(x).last_hidden_state)
        assert classifier(x).logits.shape == (2, 3)


def test_from_backbone_pretrained_passes_loading_options_to_the_tower(tmp_path):
    _save_siglip_tower(tmp_path / "tower")
    options = {"subfolder": "tower", "force_download": False, "local_files_only": True, "device_map": "cpu"}
    model = OmniVisionModel.from_backbone_pretrained(
        str(tmp_path), num_attention_heads=4, num_tokens=5, attn_implementation="eager", **options
    )
    assert model.config.num_tokens == 5
    assert model.config._attn_implementation == model.backbone.config._attn_implementation == "eager"
    model.save_pretrained(tmp_path / "omni")
    saved = json.loads((tmp_path / "omni" / "config.json").read_text())
    assert not set(options) & (set(saved) | set(saved["backbone_config"]))
    with pytest.raises(TypeError, match="num_token"):  # a typo is not silently stored
        OmniVisionModel.from_backbone_pretrained(str(tmp_path), subfolder="tower", num_attention_heads=4, num_token=5)


@pytest.mark.parametrize(
    "dtype, expected",
    [(None, torch.bfloat16), ("auto", torch.bfloat16), (torch.float32, torch.float32), (torch.float16, torch.float16)],
)
def test_from_backbone_pretrained_dtype_follows_from_pretrained(tmp_path, dtype, expected):
    """Without `dtype`, the checkpoint's (as `AutoModel.from_pretrained` in transformers 5); the layers on top too."""
    _save_siglip_tower(tmp_path, dtype=torch.bfloat16)
    kwargs = {} if dtype is None else {"dtype": dtype}
    model = OmniVisionModel.from_backbone_pretrained(str(tmp_path), num_attention_heads=4, num_tokens=5, **kwargs)
    assert AutoModel.from_pretrained(str(tmp_path), **kwargs).dtype == expected
    assert {p.dtype for p in model.parameters()} == {expected} and model.config.dtype == expected
    with torch.no_grad():
        out = model(torch.randn(1, 3, 28, 28, dtype=expected))
    assert out.last_hidden_state.dtype == expected and torch.isfinite(out.last_hidden_state).all()

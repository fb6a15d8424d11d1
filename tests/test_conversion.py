"""Checkpoint conversion: pretrained vision towers and the reference implementation's checkpoints, built here in their
layouts at tiny sizes; converted tensors must land where they belong (checked against direct computations)."""

import json

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from safetensors.torch import save_file
from transformers import (
    AutoModel,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    Siglip2Config,
    Siglip2Model,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from helpers import TINY_SIGLIP, max_abs_diff, tiny_vision_config
from omni_encoders import OmniVisionModel
from omni_encoders.conversion import convert_reference_checkpoint, convert_vision_tower, load_state_dict
from omni_encoders.conversion import reference as reference_cli
from omni_encoders.conversion import vision_tower as vision_tower_cli
from omni_encoders.conversion.mapping import key_group
from omni_encoders.modeling_omni_common import grid_positions, rotate_half


TOWER = {key: value for key, value in TINY_SIGLIP.items() if key != "model_type"}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 99}
D, HEADS, TOKENS, FFN = 32, 4, 6, 128


def target_config(**overrides):
    """Our tiny config for the reference checkpoint: the tower without SigLIP's pooling head (our default)."""
    return tiny_vision_config(backbone_config={**TINY_SIGLIP, "vision_use_head": False}, **overrides)


# ---------------------------------------------------------------------------------------------- reference layout


def reference_vision_encoder(transformers_4x: bool = False) -> dict[str, torch.Tensor]:
    """A state dict in the reference's vision_encoder layout (reference_checkpoint_keys.json) at tiny sizes."""
    tower = SiglipVisionModel(SiglipVisionConfig(**TOWER, vision_use_head=True)).state_dict()
    tower_prefix = "vision_model.vision_model." if transformers_4x else "vision_model."
    tensors = {tower_prefix + key: value for key, value in tower.items()}
    for i in range(2):
        for s in "ab":
            block = f"dual_stream_layers.{i}"
            tensors.update({
                f"{block}.dual_attn.to_qkv_{s}.weight": torch.randn(3 * D, D) / D**0.5,
                f"{block}.dual_attn.to_out_{s}.weight": torch.randn(D, D) / D**0.5,
                f"{block}.dual_attn.norm_{s}.weight": 1 + 0.1 * torch.randn(D),
                f"{block}.dual_attn.norm_{s}.bias": 0.1 * torch.randn(D),
                f"{block}.ffn_{s}.0.weight": 1 + 0.1 * torch.randn(D),
                f"{block}.ffn_{s}.0.bias": 0.1 * torch.randn(D),
                f"{block}.ffn_{s}.1.weight": torch.randn(FFN, D) / D**0.5,
                f"{block}.ffn_{s}.1.bias": 0.1 * torch.randn(FFN),
                f"{block}.ffn_{s}.3.weight": torch.randn(D, FFN) / FFN**0.5,
                f"{block}.ffn_{s}.3.bias": 0.1 * torch.randn(D),
            })
    tensors.update({
        "titok.token_queries": torch.randn(1, TOKENS, D),
        "titok.compress.0.weight": torch.randn(D, D),
        "titok.compress.0.bias": torch.randn(D),
        "titok.compress.2.weight": torch.randn(D, D),
        "titok.compress.2.bias": torch.randn(D),
        "titok.compress_attn.in_proj_weight": torch.randn(3 * D, D) / D**0.5,
        "titok.compress_attn.in_proj_bias": 0.1 * torch.randn(3 * D),
        "titok.compress_attn.out_proj.weight": torch.randn(D, D) / D**0.5,
        "titok.compress_attn.out_proj.bias": 0.1 * torch.randn(D),
        "titok.compress_norm.weight": 1 + 0.1 * torch.randn(D),
        "titok.compress_norm.bias": 0.1 * torch.randn(D),
    })
    return tensors


def with_components(vision_encoder: dict) -> dict:
    """A whole reference checkpoint: the vision encoder under its prefix, plus another component."""
    tensors = {f"vision_encoder.{key}": value for key, value in vision_encoder.items()}
    tensors["audio_encoder.output_proj.weight"] = torch.randn(4, 4)
    return tensors


def direct_dual_stream_block(x_a, x_b, source, index, position_embeddings, eps=1e-6):
    """Our dual-stream block written out with the reference's tensors: joint attention over both streams, then each
    stream's feed-forward layer."""
    cos, sin = position_embeddings
    head_dim = D // HEADS

    def qkv(x, s):
        def get(name):
            return source[f"dual_stream_layers.{index}.{name}"]

        h = F.layer_norm(x, (D,), get(f"dual_attn.norm_{s}.weight"), get(f"dual_attn.norm_{s}.bias"), eps)
        q, k, v = (h @ get(f"dual_attn.to_qkv_{s}.weight").T).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (HEADS, head_dim)).transpose(1, 2) for t in (q, k, v))
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    (qa, ka, va), (qb, kb, vb) = qkv(x_a, "a"), qkv(x_b, "b")
    q, k, v = torch.cat([qa, qb], 2), torch.cat([ka, kb], 2), torch.cat([va, vb], 2)
    attended = torch.softmax(q @ k.transpose(-1, -2) / head_dim**0.5, dim=-1) @ v
    out_a, out_b = attended.transpose(1, 2).flatten(2).split(x_a.shape[1], dim=1)
    outputs = []
    for s, x, out in (("a", x_a, out_a), ("b", x_b, out_b)):
        def get(name):
            return source[f"dual_stream_layers.{index}.{name}"]

        x = x + out @ get(f"dual_attn.to_out_{s}.weight").T
        h = F.layer_norm(x, (D,), get(f"ffn_{s}.0.weight"), get(f"ffn_{s}.0.bias"), eps)
        h = F.gelu(F.linear(h, get(f"ffn_{s}.1.weight"), get(f"ffn_{s}.1.bias")), approximate="tanh")
        outputs.append(x + F.linear(h, get(f"ffn_{s}.3.weight"), get(f"ffn_{s}.3.bias")))
    return outputs


@pytest.mark.parametrize("transformers_4x, file_format", [(False, "safetensors"), (True, "pt")])
def test_reference_vision_conversion_puts_every_tensor_where_it_belongs(tmp_path, transformers_4x, file_format):
    source = reference_vision_encoder(transformers_4x)
    checkpoint = tmp_path / f"reference.{file_format}"
    if file_format == "safetensors":
        save_file(with_components(source), checkpoint)
    else:
        torch.save(with_components(source), checkpoint)

    model, report = convert_reference_checkpoint(checkpoint, config=target_config())

    # what was dropped and what is new, by name
    assert set(map(key_group, report.dropped)) == {
        *(f"vision_encoder.{'vision_model.' * (2 if transformers_4x else 1)}head.{name}" for name in (
            "probe", "attention.in_proj_weight", "attention.in_proj_bias", "attention.out_proj.weight",
            "attention.out_proj.bias", "layernorm.weight", "layernorm.bias", "mlp.fc1.weight", "mlp.fc1.bias",
            "mlp.fc2.weight", "mlp.fc2.bias")),
        "vision_encoder.titok.compress.*.weight",
        "vision_encoder.titok.compress.*.bias",
    }
    assert "no counterpart" in report.dropped["vision_encoder.titok.compress.0.weight"]
    assert set(map(key_group, report.initialised)) == {
        *(f"layers.*.stream_{s}.self_attn.{p}_proj.bias" for s in "ab" for p in "qkvo"),
        "post_layernorm.weight", "post_layernorm.bias",
        *(f"compressor.{name}.{p}" for name in ("query_layernorm", "input_layernorm", "post_attention_layernorm")
          for p in ("weight", "bias")),
        *(f"compressor.mlp.{fc}.{p}" for fc in ("fc1", "fc2") for p in ("weight", "bias")),
    }
    assert report.other_components == {"audio_encoder": 1}
    assert report.mapped["vision_encoder.dual_stream_layers.1.dual_attn.to_qkv_b.weight"] == [
        f"layers.1.stream_b.self_attn.{p}_proj.weight" for p in "qkv"
    ]

    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        # the SigLIP tower equals a standalone SigLIP with the same tensors
        tower_prefix = "vision_model.vision_model." if transformers_4x else "vision_model."
        tower = SiglipVisionModel(SiglipVisionConfig(**TOWER, vision_use_head=False)).eval()
        tower.load_state_dict({k[len(tower_prefix):]: v for k, v in source.items()
                               if k.startswith(tower_prefix) and ".head." not in k})
        features, grid, _ = model.backbone_features(x)
        assert max_abs_diff(features, tower(x).last_hidden_state) == 0

        # each dual-stream block equals the direct computation with the reference's tensors
        position_embeddings = model.rotary_emb(grid_positions(grid))
        streams_a, streams_b = features, features + 0.1 * torch.randn_like(features)
        for index, block in enumerate(model.layers):
            expected_a, expected_b = direct_dual_stream_block(streams_a, streams_b, source, index, position_embeddings)
            streams_a, streams_b, _ = block(streams_a, streams_b, position_embeddings)
            assert max_abs_diff(streams_a, expected_a) < 1e-5 and max_abs_diff(streams_b, expected_b) < 1e-5

        # the compressor's cross-attention is the reference's nn.MultiheadAttention, queries and final norm included
        mha = torch.nn.MultiheadAttention(D, HEADS, batch_first=True).eval()
        mha.load_state_dict({k[len("titok.compress_attn."):]: v for k, v in source.items() if "compress_attn" in k})
        queries, patches = torch.randn(2, TOKENS, D), torch.randn(2, 16, D)
        ours, _ = model.compressor.cross_attn(queries, key_value_states=patches)
        assert max_abs_diff(ours, mha(queries, patches, patches)[0]) < 1e-5
        assert torch.equal(model.compressor.query_embeddings, source["titok.token_queries"][0])
        assert torch.equal(model.compressor.final_layernorm.weight, source["titok.compress_norm.weight"])


def test_reference_conversion_refuses_tensors_that_do_not_fit(tmp_path):
    save_file(with_components(reference_vision_encoder()), tmp_path / "reference.safetensors")
    with pytest.raises(ValueError, match=r"(?s)do not fit.*ffn_a\.1\.weight \[128, 32\] -> layers\.0\.stream_a\.mlp"
                                         r"\.fc1\.weight: got \[128, 32\], the model expects \[64, 32\]"):
        convert_reference_checkpoint(tmp_path / "reference.safetensors", config=target_config(intermediate_size=64))
    with pytest.raises(ValueError, match="query_embeddings: got \\[6, 32\\], the model expects \\[4, 32\\]"):
        convert_reference_checkpoint(tmp_path / "reference.safetensors", config=target_config(num_tokens=4))


def test_reference_checkpoint_of_one_component_wrapped_by_a_training_script(tmp_path):
    source = reference_vision_encoder()
    torch.save({"epoch": 3, "state_dict": source, "optimizer": {"lr": 0.1}}, tmp_path / "vision_encoder.pt")
    model, report = convert_reference_checkpoint(tmp_path / "vision_encoder.pt", config=target_config())
    assert not report.other_components and len(report.mapped) > 0
    assert torch.equal(model.layers[1].stream_a.mlp.fc2.weight, source["dual_stream_layers.1.ffn_a.3.weight"])
    with pytest.raises(ValueError, match="holds no tensor of the reference's vision_encoder"):
        torch.save({"audio_encoder.x": torch.zeros(1), "llm.y": torch.zeros(1)}, tmp_path / "other.pt")
        convert_reference_checkpoint(tmp_path / "other.pt", config=target_config())


def test_reference_cli_writes_a_loadable_folder_with_a_card(tmp_path, capsys):
    save_file(with_components(reference_vision_encoder()), tmp_path / "reference.safetensors")
    target_config().save_pretrained(tmp_path / "config")
    torch.manual_seed(1)  # the newly initialised parameters, drawn again for the direct conversion below
    reference_cli.main([
        str(tmp_path / "reference.safetensors"), str(tmp_path / "out"),
        "--config", str(tmp_path / "config" / "config.json"), "--set", "num_tokens=6", "--model-id", "org/converted",
    ])
    printed = capsys.readouterr().out
    assert "Dropped 15 tensors" in printed and "titok.compress.0.weight" in printed

    out = tmp_path / "out"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "conversion_report.json",
            "modeling_omni_vision.py"} <= {p.name for p in out.iterdir()}
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-feature-extraction"
    assert "omni_vision" in card.data.tags
    assert "## Conversion" in card.text and "`vision_encoder.titok.compress.*.weight`" in card.text
    assert 'AutoModel.from_pretrained("org/converted"' in card.text
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["other_components"] == {"audio_encoder": 1}

    loaded = AutoModel.from_pretrained(out).eval()
    torch.manual_seed(1)
    direct, _ = convert_reference_checkpoint(tmp_path / "reference.safetensors", config=target_config())
    x = torch.randn(1, 3, 28, 35)
    with torch.no_grad():
        assert torch.equal(loaded(x).last_hidden_state, direct(x).last_hidden_state)


# ----------------------------------------------------------------------------------------------------- vision towers


def save_tower(kind: str, folder):
    """Save a tiny transformers checkpoint; return the vision tower module whose weights the conversion must copy."""
    if kind == "siglip-vision":
        model = SiglipVisionModel(SiglipVisionConfig(**TOWER))
        tower = model
    elif kind == "siglip-full":
        model = SiglipModel(SiglipConfig(text_config=TEXT, vision_config=TOWER))
        tower = model.vision_model
    elif kind == "siglip2-full":
        model = Siglip2Model(Siglip2Config(text_config=TEXT, vision_config={**TOWER, "num_patches": 16}))
        tower = model.vision_model
    elif kind == "clip-vision":
        model = CLIPVisionModel(CLIPVisionConfig(**TOWER))
        tower = model
    elif kind == "clip-full":
        model = CLIPModel(CLIPConfig(text_config=TEXT, vision_config=TOWER, projection_dim=16))
        tower = model.vision_model
    model.save_pretrained(folder)
    return tower


@pytest.mark.parametrize("kind", ["siglip-vision", "siglip-full", "siglip2-full", "clip-vision", "clip-full"])
def test_vision_tower_conversion_copies_the_tower(tmp_path, kind):
    tower = save_tower(kind, tmp_path / "source")
    model, report = convert_vision_tower(tmp_path / "source", num_attention_heads=HEADS, num_tokens=5)
    assert model.config.num_tokens == 5 and model.config.hidden_size == D
    tower_state = tower.state_dict()
    assert model.backbone.state_dict().keys() == tower_state.keys()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, tower_state[key]), key
    assert not any(key.startswith("backbone.") for key in report.initialised)
    assert {key.split(".")[0] for key in report.initialised} == {"layers", "post_layernorm", "compressor"}
    if kind.endswith("full"):
        assert any(key.startswith("text_model.") for key in report.dropped)
        assert "text tower" in next(iter(report.dropped.values()))
    else:
        assert not report.dropped


def test_vision_tower_conversion_of_raw_weights_in_the_4x_nested_layout(tmp_path):
    """A 4.x SigLIP vision model nested in a wrapper (`vision_model.vision_model.*`), pickled, without a config."""
    tower = SiglipVisionModel(SiglipVisionConfig(**TOWER)).eval()
    torch.save({f"vision_model.vision_model.{k}": v for k, v in tower.state_dict().items()}, tmp_path / "tower.bin")
    SiglipVisionConfig(**TOWER).save_pretrained(tmp_path / "tower_config")
    with pytest.raises(ValueError, match="has no config.json"):
        convert_vision_tower(tmp_path / "tower.bin")

    vision_tower_cli.main([
        str(tmp_path / "tower.bin"), str(tmp_path / "out"), "--backbone-config",
        str(tmp_path / "tower_config" / "config.json"), "--set", f"num_attention_heads={HEADS}",
        "--set", "num_tokens=3",
    ])
    model = OmniVisionModel.from_pretrained(tmp_path / "out").eval()
    assert model.config.num_tokens == 3
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert max_abs_diff(model.backbone_features(x)[0], tower(x).last_hidden_state) == 0
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert "layers.*.stream_a.self_attn.q_proj.weight" in card.text  # reported as newly initialised
    assert card.data.base_model is None  # a local source is not a Hub id


def test_vision_tower_conversion_keeps_the_source_normalisation(tmp_path):
    save_tower("clip-vision", tmp_path / "source")
    (tmp_path / "source" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.48, 0.46, 0.41], "image_std": [0.27, 0.26, 0.28]})
    )
    convert_vision_tower(tmp_path / "source", tmp_path / "out", num_attention_heads=HEADS, num_tokens=2)
    processor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.48, 0.46, 0.41] and processor["size"] == {"height": 28, "width": 28}


def test_vision_tower_conversion_rejects_other_models(tmp_path):
    with pytest.raises(ValueError, match="Unsupported vision tower of model_type 'bert'"):
        convert_vision_tower(tmp_path, backbone_config={"model_type": "bert"})
    with pytest.raises(ValueError, match="No vision-tower conversion for model_type 'omni_audio'"):
        convert_vision_tower(tmp_path, model_type="omni_audio")


def test_load_state_dict_reads_sharded_folders_and_unwraps_ddp(tmp_path):
    model = OmniVisionModel(tiny_vision_config())
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    loaded = load_state_dict(tmp_path / "sharded")
    assert loaded.keys() == model.state_dict().keys()
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    assert load_state_dict(tmp_path / "ddp.pt").keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match="does not exist"):
        load_state_dict(tmp_path / "missing.safetensors")

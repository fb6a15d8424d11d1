"""Checkpoint conversion: pretrained vision towers and the reference implementation's checkpoints, built here in their
layouts at tiny sizes; converted tensors must land where they belong (checked against direct computations)."""

import json

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from safetensors.torch import save_file
from torch import nn
from transformers import (
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForTextToWaveform,
    AutoProcessor,
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

from helpers import (
    TINY_SIGLIP,
    max_abs_diff,
    tiny_audio_config,
    tiny_audio_decoder_config,
    tiny_video_config,
    tiny_vision_config,
)
from omni_encoders import (
    OmniAudioDecoderProcessor,
    OmniAudioFeatureExtractor,
    OmniAudioModel,
    OmniVideoModel,
    OmniVideoVideoProcessor,
    OmniVisionModel,
)
from omni_encoders.conversion import convert_reference_checkpoint, convert_vision_tower, load_state_dict
from omni_encoders.conversion import reference as reference_cli
from omni_encoders.conversion import vision_tower as vision_tower_cli
from omni_encoders.conversion.mapping import key_group
from omni_encoders.modeling_omni_common import grid_positions


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The reference rotary layout: `(x1, x2) -> (-x2, x1)` over the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


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


# ------------------------------------------------------------------ reference layouts of the video and audio models
# Built from torch modules of the reference's kinds, so that the key names (Sequential indices, BatchNorm statistics,
# LSTM and weight-norm parametrisation names) are exactly the reference's; at the reference's default sizes these
# builders give the names and shapes of shared/reference/reference_checkpoint_keys.json.


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of `module` under `prefix`, every float tensor perturbed (LayerNorms not at 1/0, etc.)."""
    return {
        prefix + key: (value + 0.1 * torch.randn_like(value) if value.is_floating_point() else value).detach()
        for key, value in module.state_dict().items()
    }


def reference_latent_attention(prefix, hidden, heads, kv_heads, rank, positions=64):
    """The reference's RMLA: q_proj, kv_a_proj (latent + a head_dim key), kv_norm, kv_b_proj (full K and V heads),
    o_proj, and its rotary tables."""
    head_dim = hidden // heads
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(positions).float(), inv_freq).repeat(1, 2)
    return {
        f"{prefix}inv_freq": inv_freq,
        f"{prefix}cos_cached": angles.cos(),
        f"{prefix}sin_cached": angles.sin(),
        f"{prefix}q_proj.weight": torch.randn(heads * head_dim, hidden) / hidden**0.5,
        f"{prefix}kv_a_proj.weight": torch.randn(rank + head_dim, hidden) / hidden**0.5,
        f"{prefix}kv_b_proj.weight": torch.randn(2 * kv_heads * head_dim, rank) / rank**0.5,
        **module_tensors(f"{prefix}kv_norm.", nn.LayerNorm(rank)),
        f"{prefix}o_proj.weight": torch.randn(hidden, heads * head_dim) / hidden**0.5,
    }


def reference_audio_prompting(prefix, hidden, prompt_tokens=4):
    return {
        f"{prefix}prompt_tokens": torch.randn(1, prompt_tokens, hidden),
        f"{prefix}gate": torch.zeros(1),
        **module_tensors(f"{prefix}cross_attn.", nn.MultiheadAttention(hidden, 4, batch_first=True)),
        **module_tensors(f"{prefix}prompt_encoder.", nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))),
        **module_tensors(f"{prefix}norm.", nn.LayerNorm(hidden)),
    }


def reference_video_encoder(hidden=D, layers=2, experts=4, moe_size=48, max_frames=8, heads=HEADS, vision=None):
    """`video_encoder.*` without its prefix: the nested vision encoder and the video blocks."""
    tensors = {f"vision_encoder.{key}": value for key, value in (vision or {}).items()}
    tensors["temporal_pool_query"] = torch.randn(1, 1, hidden)
    tensors["frame_pos_embed"] = torch.randn(1, max_frames, hidden)
    for n in range(layers):
        block = f"encoder_blocks.{n}"
        tensors[f"{block}.attn.to_qkv.weight"] = torch.randn(3 * hidden, hidden) / hidden**0.5
        tensors[f"{block}.attn.to_out.weight"] = torch.randn(hidden, hidden) / hidden**0.5
        tensors.update(module_tensors(f"{block}.attn.norm.", nn.LayerNorm(hidden)))
        tensors.update(module_tensors(f"{block}.moe.router.temporal_proj.", nn.Linear(hidden, hidden)))
        tensors.update(module_tensors(f"{block}.moe.router.gate.", nn.Linear(hidden, experts, bias=False)))
        for expert in [f"experts.{e}" for e in range(experts)] + ["shared_expert"]:
            shapes = {"gate": (moe_size, hidden), "up": (moe_size, hidden), "down": (hidden, moe_size)}
            for name, shape in shapes.items():
                tensors[f"{block}.moe.{expert}.{name}_proj.weight"] = torch.randn(shape) / shape[1] ** 0.5
        tensors.update(module_tensors(f"{block}.norm.", nn.LayerNorm(hidden)))
    tensors.update(module_tensors("temporal_pool_attn.", nn.MultiheadAttention(hidden, heads, batch_first=True)))
    tensors.update(module_tensors("temporal_pool_norm.", nn.LayerNorm(hidden)))
    return tensors


AUDIO = {"hidden": 32, "channels": (8, 8, 16, 16, 32, 32), "groups": 4, "layers": 2, "heads": 4, "kv_heads": 2,
         "rank": 8, "ffn": 64, "conv_kernel": 7, "codebooks": 3, "codebook_size": 16, "speaker_hidden": 16,
         "speaker_convs": 2, "speaker_lstm": 2, "speaker_size": 12}


def reference_audio_encoder(hidden, channels, groups, layers, heads, kv_heads, rank, ffn, conv_kernel, codebooks,
                            codebook_size, speaker_hidden, speaker_convs, speaker_lstm, speaker_size, mels=80,
                            kernels=(7, 5, 5, 3, 3, 3), positions=64):
    """`audio_encoder.*` without its prefix."""
    tensors = {}
    for i, (c_in, c_out, kernel) in enumerate(zip((1, *channels[:-1]), channels, kernels)):
        tensors.update(module_tensors(f"waveform_tokenizer.conv_layers.{i}.", nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel, 2, kernel // 2), nn.GroupNorm(groups, c_out), nn.SiLU())))
    for k in range(codebooks):
        tensors.update(module_tensors(f"waveform_tokenizer.codebooks.{k}.", nn.Embedding(codebook_size, hidden)))
    tensors.update(module_tensors("waveform_tokenizer.output_proj.", nn.Linear(channels[-1], hidden)))
    frame_encoder = []
    for i in range(speaker_convs):
        frame_encoder += [nn.Conv1d(mels if i == 0 else speaker_hidden, speaker_hidden, 5, padding=2), nn.ReLU(),
                          nn.BatchNorm1d(speaker_hidden)]
    tensors.update(module_tensors("speaker_encoder.frame_encoder.", nn.Sequential(*frame_encoder)))
    tensors.update(module_tensors("speaker_encoder.lstm.", nn.LSTM(
        speaker_hidden, speaker_hidden, speaker_lstm, batch_first=True, bidirectional=True)))
    tensors.update(module_tensors("speaker_encoder.attention.", nn.Sequential(
        nn.Linear(2 * speaker_hidden, speaker_hidden), nn.Tanh(), nn.Linear(speaker_hidden, 1))))
    tensors.update(module_tensors("speaker_encoder.output_proj.", nn.Linear(2 * speaker_hidden, speaker_size)))
    tensors.update(reference_audio_prompting("audio_prompting.", hidden))
    for n in range(layers):
        block = f"conformer_blocks.{n}."
        for ff in ("ff1", "ff2"):
            tensors.update(module_tensors(f"{block}{ff}_norm.", nn.LayerNorm(hidden)))
            tensors.update(module_tensors(f"{block}{ff}.", nn.Sequential(
                nn.Linear(hidden, ffn), nn.SiLU(), nn.Dropout(), nn.Linear(ffn, hidden))))
        tensors.update(reference_latent_attention(f"{block}attn.", hidden, heads, kv_heads, rank, positions))
        tensors.update(module_tensors(f"{block}conv.", nn.ModuleDict({
            "layer_norm": nn.LayerNorm(hidden),
            "pointwise_conv1": nn.Conv1d(hidden, 2 * hidden, 1),
            "depthwise_conv": nn.Conv1d(hidden, hidden, conv_kernel, padding=conv_kernel // 2, groups=hidden),
            "batch_norm": nn.BatchNorm1d(hidden),
            "pointwise_conv2": nn.Conv1d(hidden, hidden, 1),
        })))
        tensors.update(module_tensors(f"{block}final_norm.", nn.LayerNorm(hidden)))
    tensors.update(module_tensors("output_proj.", nn.Linear(hidden, hidden)))
    return tensors


DECODER = {"hidden": 32, "heads": 4, "kv_heads": 2, "rank": 16, "ffn": 64, "ffn_kernel": 3, "layers": 1,
           "predictor": 16, "n_mels": 20, "postnet_layers": 2, "postnet_channels": 16, "speakers": 4,
           "speaker_size": 8}


def reference_audio_decoder(hidden, heads, kv_heads, rank, ffn, ffn_kernel, layers, predictor, n_mels, postnet_layers,
                            postnet_channels, speakers, speaker_size, positions=64):
    """`audio_decoder.*` without its prefix."""
    tensors = {}
    tensors.update(module_tensors("mas.alignment_proj.", nn.Sequential(
        nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))))
    tensors.update(module_tensors("mas.duration_predictor.", nn.Sequential(
        nn.Conv1d(hidden, hidden, 3, padding=1), nn.ReLU(), nn.GroupNorm(1, hidden),
        nn.Conv1d(hidden, hidden, 3, padding=1), nn.ReLU(), nn.GroupNorm(1, hidden), nn.Conv1d(hidden, 1, 1))))
    tensors.update(module_tensors("speaker_embed.", nn.Embedding(speakers, speaker_size)))
    tensors.update(module_tensors("speaker_proj.", nn.Linear(speaker_size, speaker_size)))
    tensors.update(reference_audio_prompting("audio_prompting.", hidden))
    tensors.update(module_tensors("input_proj.", nn.Linear(hidden + speaker_size, hidden)))
    for stack in ("encoder_blocks", "decoder_blocks"):
        for n in range(layers):
            block = f"{stack}.{n}."
            tensors.update(reference_latent_attention(f"{block}attn.", hidden, heads, kv_heads, rank, positions))
            tensors.update(module_tensors(f"{block}attn_norm.", nn.LayerNorm(hidden)))
            tensors.update(module_tensors(f"{block}ff_norm.", nn.LayerNorm(hidden)))
            tensors.update(module_tensors(f"{block}ff.", nn.Sequential(
                nn.Conv1d(hidden, ffn, ffn_kernel, padding=ffn_kernel // 2), nn.ReLU(),
                nn.Conv1d(ffn, hidden, ffn_kernel, padding=ffn_kernel // 2))))
        if stack == "encoder_blocks":
            for name in ("duration", "pitch", "energy"):
                tensors.update(module_tensors(f"{name}_predictor.", nn.ModuleDict({
                    "conv1": nn.Conv1d(hidden, predictor, 3, padding=1), "norm1": nn.LayerNorm(predictor),
                    "conv2": nn.Conv1d(predictor, predictor, 3, padding=1), "norm2": nn.LayerNorm(predictor),
                    "linear": nn.Linear(predictor, 1),
                })))
            for name in ("pitch", "energy"):
                tensors.update(module_tensors(f"{name}_embed.", nn.Conv1d(1, hidden, 9, padding=4)))
    tensors.update(module_tensors("mel_linear.", nn.Linear(hidden, n_mels)))
    sizes = [n_mels] + [postnet_channels] * (postnet_layers - 1) + [n_mels]
    postnet = [nn.Sequential(nn.Conv1d(sizes[i], sizes[i + 1], 5, padding=2), nn.BatchNorm1d(sizes[i + 1]))
               for i in range(postnet_layers - 1)]
    tensors.update(module_tensors("postnet.", nn.ModuleList([*postnet, nn.Conv1d(sizes[-2], n_mels, 5, padding=2)])))
    return tensors


VOCODER = {"hidden": 32, "channels": 32, "kernel_sizes": (3, 5), "dilations": ((1, 3), (1, 3))}


def reference_waveform_decoder(hidden, channels, kernel_sizes, dilations, rates=(8, 8, 2, 2), kernels=(16, 16, 4, 4)):
    """`waveform_decoder.*` without its prefix: weight-normed convolutions, one Snake per residual unit."""
    from torch.nn.utils.parametrizations import weight_norm

    def snake(width):
        return 1 + 0.2 * torch.rand(1, width, 1)

    tensors = module_tensors("input_proj.", weight_norm(nn.Conv1d(hidden, channels, 7, padding=3)))
    for stage, (rate, kernel) in enumerate(zip(rates, kernels)):
        width = channels // 2 ** (stage + 1)
        tensors.update(module_tensors(f"upsamplers.{stage}.", weight_norm(
            nn.ConvTranspose1d(2 * width, width, kernel, rate, padding=(kernel - rate) // 2))))
        for k, (size, unit_dilations) in enumerate(zip(kernel_sizes, dilations)):
            for j, dilation in enumerate(unit_dilations):
                unit = f"mrf_blocks.{stage}.resblocks.{k}.{j}."
                tensors.update(module_tensors(f"{unit}conv1.", weight_norm(
                    nn.Conv1d(width, width, size, dilation=dilation, padding=dilation * (size - 1) // 2))))
                tensors.update(module_tensors(f"{unit}conv2.", weight_norm(
                    nn.Conv1d(width, width, size, padding=(size - 1) // 2))))
                tensors[f"{unit}activation.alpha"] = snake(width)
    tensors["final_activation.alpha"] = snake(width)
    tensors.update(module_tensors("output_conv.", weight_norm(nn.Conv1d(width, 1, 7, padding=3))))
    return tensors


def prefixed(prefix: str, tensors: dict) -> dict:
    return {prefix + key: value for key, value in tensors.items()}


def weight_normed(source: dict, prefix: str) -> torch.Tensor:
    """The weight of a weight-normed convolution of the reference: `g * v / ||v||`."""
    g, v = source[f"{prefix}parametrizations.weight.original0"], source[f"{prefix}parametrizations.weight.original1"]
    return torch._weight_norm(v, g, 0)


# ------------------------------------------------------------------------------------------------------ video


def video_target_config(**overrides):
    """Our tiny video config for `reference_video_encoder(vision=reference_vision_encoder())`."""
    vision = {"backbone_config": {**TINY_SIGLIP, "vision_use_head": False}, "num_attention_heads": HEADS}
    return tiny_video_config(vision_config=vision, **overrides)


def direct_video_block(x, source, index, model, eps=1e-6):
    """A video block written out with the reference's tensors: its one attention run spatially (within each frame),
    then frame-causally over time (at each patch position), then the motion-aware router and the SwiGLU experts."""
    batch, frames, patches, hidden = x.shape
    head_dim = hidden // HEADS
    (spatial_cos, spatial_sin), (temporal_cos, temporal_sin) = model.rotary_tables(batch, (frames, 4, 4), x.device)

    def get(name):
        return source[f"encoder_blocks.{index}.{name}"]

    def attention(sequences, cos, sin, causal):
        h = F.layer_norm(sequences, (hidden,), get("attn.norm.weight"), get("attn.norm.bias"), eps)
        q, k, v = (h @ get("attn.to_qkv.weight").T).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (HEADS, head_dim)).transpose(1, 2) for t in (q, k, v))
        q, k = (t * cos[:, None] + rotate_half(t) * sin[:, None] for t in (q, k))
        scores = q @ k.transpose(-1, -2) / head_dim**0.5
        if causal:
            length = sequences.shape[1]
            scores = scores.masked_fill(~torch.ones(length, length, dtype=torch.bool).tril(), float("-inf"))
        attended = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)
        return sequences + attended @ get("attn.to_out.weight").T

    x = attention(x.reshape(batch * frames, patches, hidden), spatial_cos, spatial_sin, causal=False)
    x = x.view(batch, frames, patches, hidden).transpose(1, 2).reshape(batch * patches, frames, hidden)
    x = attention(x, temporal_cos, temporal_sin, causal=True)
    x = x.view(batch, patches, frames, hidden).transpose(1, 2)

    h = F.layer_norm(x, (hidden,), get("norm.weight"), get("norm.bias"), eps)
    motion = torch.diff(h, dim=1, prepend=h[:, :1])
    router = get("moe.router.temporal_proj.weight"), get("moe.router.temporal_proj.bias")
    logits = (h + F.linear(motion, *router)) @ get("moe.router.gate.weight").T
    weights, chosen = logits.softmax(-1).topk(2, dim=-1)

    def swiglu(expert):
        gate, up, down = (get(f"moe.{expert}.{name}_proj.weight") for name in ("gate", "up", "down"))
        return (F.silu(h @ gate.T) * (h @ up.T)) @ down.T

    every_expert = torch.stack([swiglu(f"experts.{e}") for e in range(4)], dim=-2)  # [B, T, N, E, D], all computed
    routed = every_expert.gather(-2, chosen[..., None].expand(*chosen.shape, hidden))
    return x + (routed * weights[..., None]).sum(-2) + swiglu("shared_expert")


def test_reference_video_conversion_puts_every_tensor_where_it_belongs(tmp_path):
    vision = reference_vision_encoder()
    source = reference_video_encoder(vision=vision)
    save_file({**prefixed("video_encoder.", source), "audio_encoder.output_proj.weight": torch.randn(4, 4)},
              tmp_path / "reference.safetensors")
    model, report = convert_reference_checkpoint(
        tmp_path / "reference.safetensors", tmp_path / "out", model_type="omni_video", config=video_target_config()
    )

    nested = "video_encoder.vision_encoder."
    assert set(map(key_group, report.dropped)) == {
        *(f"{nested}vision_model.head.{name}" for name in (
            "probe", "attention.in_proj_weight", "attention.in_proj_bias", "attention.out_proj.weight",
            "attention.out_proj.bias", "layernorm.weight", "layernorm.bias", "mlp.fc1.weight", "mlp.fc1.bias",
            "mlp.fc2.weight", "mlp.fc2.bias")),
        *(f"{nested}titok.{name}" for name in (
            "token_queries", "compress.*.weight", "compress.*.bias", "compress_attn.in_proj_weight",
            "compress_attn.in_proj_bias", "compress_attn.out_proj.weight", "compress_attn.out_proj.bias",
            "compress_norm.weight", "compress_norm.bias")),
        "video_encoder.frame_pos_embed", "video_encoder.temporal_pool_query",
        *(f"video_encoder.temporal_pool_{name}" for name in (
            "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias", "norm.weight",
            "norm.bias")),
    }
    assert "3D-RoPE" in report.dropped["video_encoder.frame_pos_embed"]
    assert "TiTok" in report.dropped[f"{nested}titok.token_queries"]
    assert set(map(key_group, report.initialised)) == {
        *(f"vision_model.layers.*.stream_{s}.self_attn.{p}_proj.bias" for s in "ab" for p in "qkvo"),
        "vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias",
        *(f"layers.*.{attn}.{p}_proj.bias" for attn in ("spatial_attn", "temporal_attn") for p in "qkvo"),
        "post_layernorm.weight", "post_layernorm.bias",
        *(key for key in model.state_dict() if key.startswith("compressor.")),
    }
    assert report.other_components == {"audio_encoder": 1}
    assert report.mapped["video_encoder.encoder_blocks.1.attn.to_qkv.weight"] == [
        f"layers.1.{attn}.{p}_proj.weight" for attn in ("spatial_attn", "temporal_attn") for p in "qkv"
    ]

    # the nested vision encoder is the vision conversion's
    fc2 = model.vision_model.layers[1].stream_b.mlp.fc2.weight
    assert torch.equal(fc2, vision["dual_stream_layers.1.ffn_b.3.weight"])
    assert torch.equal(model.vision_model.backbone.embeddings.patch_embedding.weight,
                       vision["vision_model.embeddings.patch_embedding.weight"])

    # each video block equals the direct computation with the reference's tensors
    x = torch.randn(2, 3, 16, D)
    spatial, temporal = model.rotary_tables(2, (3, 4, 4), x.device)
    mask = model.temporal_attention_mask(None, 2, 3, 16, x.dtype, x.device)
    with torch.no_grad():
        for index, block in enumerate(model.layers):
            output = block(x, spatial, temporal, temporal_attention_mask=mask)[0]
            assert max_abs_diff(output, direct_video_block(x, source, index, model)) < 1e-5

    # the saved folder loads through the Auto classes, with the video processor and the card
    loaded = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert type(loaded) is OmniVideoModel
    assert type(AutoProcessor.from_pretrained(tmp_path / "out")) is OmniVideoVideoProcessor
    clip = torch.randn(1, 2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(clip).last_hidden_state, model(clip).last_hidden_state)
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.pipeline_tag == "feature-extraction" and "omni_video" in card.data.tags
    assert "`video_encoder.frame_pos_embed`" in card.text and "`compressor.query_embeddings`" in card.text


# ------------------------------------------------------------------------------------------------------ audio


def test_reference_audio_conversion_puts_every_tensor_where_it_belongs(tmp_path):
    source = reference_audio_encoder(**AUDIO)
    torch.save({"state_dict": prefixed("audio_encoder.", source)}, tmp_path / "reference.pt")
    config = tiny_audio_config(use_quantizer=True)
    model, report = convert_reference_checkpoint(
        tmp_path / "reference.pt", tmp_path / "out", model_type="omni_audio", config=config
    )

    def dropped_by_design(key):
        parts = key.split(".")
        return (
            key.startswith(("audio_prompting.", "output_proj."))
            or ".batch_norm." in key
            or parts[-1] in ("inv_freq", "cos_cached", "sin_cached")
            or parts[-2] in ("kv_a_proj", "kv_b_proj")
            or (key.startswith("speaker_encoder.frame_encoder.") and int(parts[2]) % 3 == 2)  # its BatchNorms
        )

    expected_dropped = {f"audio_encoder.{key}" for key in source if dropped_by_design(key)}
    assert set(report.dropped) == expected_dropped
    assert set(report.mapped) == {f"audio_encoder.{key}" for key in source} - expected_dropped
    assert "BatchNorm" in report.dropped["audio_encoder.speaker_encoder.frame_encoder.2.running_mean"]
    assert "position-free" in report.dropped["audio_encoder.conformer_blocks.0.attn.kv_b_proj.weight"]
    assert set(map(key_group, report.initialised)) == {
        "conformer_blocks.*.attn_norm.weight", "conformer_blocks.*.attn_norm.bias",
        "conformer_blocks.*.attn.kv_a_proj.weight", "conformer_blocks.*.attn.kv_b_proj.weight",
        "conformer_blocks.*.conv.norm.weight", "conformer_blocks.*.conv.norm.bias",
        "speaker_encoder.frame_encoder.*.norm.weight", "speaker_encoder.frame_encoder.*.norm.bias",
    }
    summary = report.summary("cmd")["dropped"]
    batch_norms = next(groups for reason, groups in summary.items() if "frame encoder" in reason)
    assert "audio_encoder.speaker_encoder.frame_encoder.2.weight" in batch_norms  # not grouped with the convolutions

    block, eps = model.conformer_blocks[1], config.layer_norm_eps
    x = torch.randn(2, 10, 32)

    def get(name):
        return source[f"conformer_blocks.1.{name}"]

    with torch.no_grad():
        # a half-step feed-forward module: LayerNorm -> Linear -> SiLU -> Linear
        h = F.layer_norm(x, (32,), get("ff2_norm.weight"), get("ff2_norm.bias"), eps)
        expected = F.linear(F.silu(F.linear(h, get("ff2.0.weight"), get("ff2.0.bias"))), get("ff2.3.weight"),
                            get("ff2.3.bias"))
        assert max_abs_diff(block.ff2(block.ff2_norm(x)), expected) < 1e-6
        # the convolution module; its norm after the depthwise convolution is ours (a LayerNorm, newly initialised)
        h = F.layer_norm(x, (32,), get("conv.layer_norm.weight"), get("conv.layer_norm.bias"), eps).transpose(1, 2)
        h = F.glu(F.conv1d(h, get("conv.pointwise_conv1.weight"), get("conv.pointwise_conv1.bias")), dim=1)
        h = F.conv1d(h, get("conv.depthwise_conv.weight"), get("conv.depthwise_conv.bias"), padding=3, groups=32)
        h = F.silu(F.layer_norm(h.transpose(1, 2), (32,), eps=eps)).transpose(1, 2)
        expected = F.conv1d(h, get("conv.pointwise_conv2.weight"), get("conv.pointwise_conv2.bias")).transpose(1, 2)
        assert max_abs_diff(block.conv(x), expected) < 1e-6
        # the latent attention's query/output projections and latent norm
        assert torch.equal(block.attn.q_proj.weight, get("attn.q_proj.weight"))
        assert torch.equal(block.attn.o_proj.weight, get("attn.o_proj.weight"))
        assert torch.equal(block.attn.kv_a_layernorm.bias, get("attn.kv_norm.bias"))
        # the speaker encoder's BiLSTM equals the reference's bidirectional nn.LSTM, layer by layer
        lstm = nn.LSTM(16, 16, 2, batch_first=True, bidirectional=True)
        lstm.load_state_dict({k[len("speaker_encoder.lstm."):]: v for k, v in source.items() if ".lstm." in k})
        sequence = torch.randn(2, 9, 16)
        assert max_abs_diff(model.speaker_encoder.lstm(sequence), lstm(sequence)[0]) < 1e-6
    speaker, tokenizer = model.speaker_encoder, model.waveform_tokenizer
    assert torch.equal(speaker.frame_encoder[1].conv.weight, source["speaker_encoder.frame_encoder.3.weight"])
    assert torch.equal(tokenizer.conv_layers[5].norm.weight, source["waveform_tokenizer.conv_layers.5.1.weight"])
    assert torch.equal(tokenizer.quantizer.codebooks[2].weight, source["waveform_tokenizer.codebooks.2.weight"])
    assert torch.equal(model.speaker_encoder.attention[2].weight, source["speaker_encoder.attention.2.weight"])

    loaded = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert type(loaded) is OmniAudioModel and type(AutoFeatureExtractor.from_pretrained(tmp_path / "out")) is (
        OmniAudioFeatureExtractor
    )
    waveform = torch.randn(1, 640)
    with torch.no_grad():
        assert torch.equal(loaded(waveform).last_hidden_state, model(waveform).last_hidden_state)
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.pipeline_tag == "feature-extraction" and "residual VQ with 3 codebooks" in card.text
    assert "`audio_encoder.conformer_blocks.*.attn.kv_a_proj.weight`" in card.text

    # with our default config (no quantiser) the codebooks are reported as left out by the config
    _, report = convert_reference_checkpoint(
        tmp_path / "reference.pt", model_type="omni_audio", config=tiny_audio_config()
    )
    assert report.dropped["audio_encoder.waveform_tokenizer.codebooks.0.weight"].startswith("not in this model")


# ---------------------------------------------------------------------------------------------- audio decoder


def decoder_target_config(**overrides):
    """Our tiny decoder config for `reference_audio_decoder(**DECODER)` and `reference_waveform_decoder(**VOCODER)`."""
    kwargs = {"vocoder_resblock_kernel_sizes": [3, 5], "vocoder_resblock_dilation_sizes": [[1, 3], [1, 3]]}
    return tiny_audio_decoder_config(**{**kwargs, **overrides})


def rotary_tables(dim, length):
    """`(cos, sin)`, each `[length, dim]`: 1D rotary positions `0..length-1`, base 10000."""
    inv_freq = 1.0 / 10000 ** (torch.arange(0, dim, 2).float() / dim)
    angles = torch.outer(torch.arange(length).float(), inv_freq).repeat(1, 2)
    return angles.cos(), angles.sin()


def snake(x, alpha):
    return x + torch.sin(alpha * x) ** 2 / alpha


def direct_amp_block(x, source, stage, block, kernel_size, dilations):
    """A residual block of the reference's vocoder: per unit, `x + conv2(snake(conv1(snake(x))))`, one alpha."""
    for unit, dilation in enumerate(dilations):
        prefix = f"mrf_blocks.{stage}.resblocks.{block}.{unit}."
        alpha = source[f"{prefix}activation.alpha"]
        h = F.conv1d(snake(x, alpha), weight_normed(source, f"{prefix}conv1."), source[f"{prefix}conv1.bias"],
                     dilation=dilation, padding=dilation * (kernel_size - 1) // 2)
        h = F.conv1d(snake(h, alpha), weight_normed(source, f"{prefix}conv2."), source[f"{prefix}conv2.bias"],
                     padding=(kernel_size - 1) // 2)
        x = x + h
    return x


def direct_fft_block(x, source, block, prefix, config):
    """An FFT block with the reference's tensors where it has them: its norms, query/output projections, latent norm
    and first FFN convolution; the K/V projections and the second (pointwise) FFN convolution are ours (new)."""
    eps, heads, head_dim, rope = config.layer_norm_eps, config.num_attention_heads, config.head_dim, 4
    kv_heads, rank = config.num_key_value_heads, config.kv_lora_rank

    def get(name):
        return source[f"{prefix}{name}"]

    cos, sin = rotary_tables(rope, x.shape[1])
    h = F.layer_norm(x, (32,), get("attn_norm.weight"), get("attn_norm.bias"), eps)
    q = (h @ get("attn.q_proj.weight").T).unflatten(-1, (heads, head_dim)).transpose(1, 2)
    q = torch.cat([q[..., :-rope], q[..., -rope:] * cos + rotate_half(q[..., -rope:]) * sin], dim=-1)
    latent, rope_key = (h @ block.self_attn.kv_a_proj.weight.T).split([rank, rope], dim=-1)
    latent = F.layer_norm(latent, (rank,), get("attn.kv_norm.weight"), get("attn.kv_norm.bias"), eps)
    kv = (latent @ block.self_attn.kv_b_proj.weight.T).unflatten(-1, (kv_heads, -1)).transpose(1, 2)
    key_nope, value = kv.split([head_dim - rope, head_dim], dim=-1)
    rope_key = (rope_key * cos + rotate_half(rope_key) * sin)[:, None].expand(-1, kv_heads, -1, -1)
    key = torch.cat([key_nope, rope_key], dim=-1).repeat_interleave(heads // kv_heads, dim=1)
    value = value.repeat_interleave(heads // kv_heads, dim=1)
    attended = ((q @ key.transpose(-1, -2) / head_dim**0.5).softmax(-1) @ value).transpose(1, 2).flatten(2)
    x = x + attended @ get("attn.o_proj.weight").T
    h = F.layer_norm(x, (32,), get("ff_norm.weight"), get("ff_norm.bias"), eps).transpose(1, 2)
    h = F.gelu(F.conv1d(h, get("ff.0.weight"), get("ff.0.bias"), padding=1))
    return x + block.ffn.conv2(h).transpose(1, 2)


def test_reference_audio_decoder_conversion_puts_every_tensor_where_it_belongs(tmp_path):
    decoder, vocoder = reference_audio_decoder(**DECODER), reference_waveform_decoder(**VOCODER)
    save_file({**prefixed("audio_decoder.", decoder), **prefixed("waveform_decoder.", vocoder)},
              tmp_path / "reference.safetensors")
    config = decoder_target_config()
    model, report = convert_reference_checkpoint(
        tmp_path / "reference.safetensors", model_type="omni_audio_decoder", config=config
    )

    def dropped_by_design(key):
        parts = key.split(".")
        return (
            key.startswith(("mas.", "speaker_proj.", "input_proj.", "audio_prompting."))
            or parts[-1] in ("inv_freq", "cos_cached", "sin_cached")
            or parts[-2] in ("kv_a_proj", "kv_b_proj")
            or ".ff.2." in key
            or (parts[0] == "postnet" and parts[2] == "1")  # the postnet's BatchNorms
        )

    expected_dropped = {f"audio_decoder.{key}" for key in decoder if dropped_by_design(key)}
    expected_dropped |= {f"waveform_decoder.{key}" for key in vocoder if key.startswith("input_proj.")}
    assert set(report.dropped) == expected_dropped
    everything = set(prefixed("audio_decoder.", decoder)) | set(prefixed("waveform_decoder.", vocoder))
    assert set(report.mapped) == everything - expected_dropped
    assert "n_mels mel spectrogram" in report.dropped["waveform_decoder.input_proj.bias"]
    assert "kernel 9" in report.dropped["audio_decoder.encoder_blocks.0.ff.2.weight"]
    assert set(map(key_group, report.initialised)) == {
        "embed_tokens.weight", "speaker_proj.weight", "speaker_proj.bias", "encoder_norm.weight", "encoder_norm.bias",
        "decoder_norm.weight", "decoder_norm.bias",
        *(f"{stack}_layers.*.self_attn.kv_{ab}_proj.weight" for stack in ("encoder", "decoder") for ab in "ab"),
        *(f"{stack}_layers.*.ffn.conv2.{p}" for stack in ("encoder", "decoder") for p in ("weight", "bias")),
        *(f"aligner.{proj}.*.{p}" for proj in ("text_proj", "mel_proj") for p in ("weight", "bias")),
        "postnet.norms.*.weight", "postnet.norms.*.bias",
        *(f"vocoder.input_proj.{name}" for name in (
            "bias", "parametrizations.weight.original0", "parametrizations.weight.original1")),
    }
    assert report.mapped["waveform_decoder.mrf_blocks.2.resblocks.1.1.activation.alpha"] == [
        "vocoder.mrf_blocks.2.resblocks.1.activations.2.alpha", "vocoder.mrf_blocks.2.resblocks.1.activations.3.alpha"
    ]

    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        # FFT blocks of the text encoder and the mel decoder
        for stack, layers in (("encoder", model.encoder_layers), ("decoder", model.decoder_layers)):
            positions = model.rotary_emb(torch.arange(7))
            output = layers[0](x, positions)[0]
            expected = direct_fft_block(x, decoder, layers[0], f"{stack}_blocks.0.", config)
            assert max_abs_diff(output, expected) < 1e-5, stack
        # the variance predictors, entirely the reference's: conv -> ReLU -> LayerNorm (x2) -> linear
        h = x.transpose(1, 2)
        for layer in (1, 2):
            weight, bias = decoder[f"pitch_predictor.conv{layer}.weight"], decoder[f"pitch_predictor.conv{layer}.bias"]
            h = F.relu(F.conv1d(h, weight, bias, padding=1)).transpose(1, 2)
            h = F.layer_norm(h, (16,), decoder[f"pitch_predictor.norm{layer}.weight"],
                             decoder[f"pitch_predictor.norm{layer}.bias"], config.layer_norm_eps).transpose(1, 2)
        expected = F.linear(h.transpose(1, 2), decoder["pitch_predictor.linear.weight"],
                            decoder["pitch_predictor.linear.bias"]).squeeze(-1)
        assert max_abs_diff(model.pitch_predictor(x), expected) < 1e-6
        # a vocoder stage: the weight-normed upsampler, then the mean of the multi-receptive-field residual blocks
        features = torch.randn(1, 32, 5)
        upsampled = F.conv_transpose1d(features, weight_normed(vocoder, "upsamplers.0."), vocoder["upsamplers.0.bias"],
                                       stride=8, padding=4)
        assert max_abs_diff(model.vocoder.upsamplers[0](features), upsampled) < 1e-6
        expected = sum(direct_amp_block(upsampled, vocoder, 0, k, size, (1, 3)) for k, size in enumerate((3, 5))) / 2
        assert max_abs_diff(model.vocoder.mrf_blocks[0](upsampled), expected) < 1e-5
    assert torch.equal(model.speaker_table.weight, decoder["speaker_embed.weight"])
    assert torch.equal(model.mel_proj.weight, decoder["mel_linear.weight"])
    assert torch.equal(model.postnet.convs[1].weight, decoder["postnet.1.weight"])
    assert torch.equal(model.energy_embed.conv.weight, decoder["energy_embed.weight"])
    assert torch.equal(model.vocoder.final_activation.alpha, vocoder["final_activation.alpha"])


def test_reference_audio_decoder_cli_writes_a_loadable_folder_with_a_card(tmp_path, capsys):
    checkpoint = {**prefixed("audio_decoder.", reference_audio_decoder(**DECODER)),
                  **prefixed("waveform_decoder.", reference_waveform_decoder(**VOCODER)),
                  "vision_encoder.titok.token_queries": torch.randn(1, 2, 4)}
    save_file(checkpoint, tmp_path / "reference.safetensors")
    decoder_target_config(variance_predictor_hidden_size=8).save_pretrained(tmp_path / "config")
    reference_cli.main([
        str(tmp_path / "reference.safetensors"), str(tmp_path / "out"), "--model-type", "omni_audio_decoder",
        "--config", str(tmp_path / "config" / "config.json"), "--set", "variance_predictor_hidden_size=16",
        "--model-id", "org/tts",
    ])
    assert "Ignored other components: vision_encoder (1 tensors)" in capsys.readouterr().out

    out = tmp_path / "out"
    assert {"config.json", "model.safetensors", "README.md", "conversion_report.json", "processor_config.json",
            "modeling_omni_audio_decoder.py", "modeling_omni_vocoder.py"} <= {p.name for p in out.iterdir()}
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-to-audio" and "omni_audio_decoder" in card.data.tags
    assert "`audio_decoder.encoder_blocks.*.ff.2.weight`" in card.text and "`vocoder.input_proj.bias`" in card.text
    assert 'AutoModelForTextToWaveform.from_pretrained("org/tts"' in card.text

    model = AutoModelForTextToWaveform.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert type(processor) is OmniAudioDecoderProcessor
    assert torch.equal(model.vocoder.upsamplers[3].parametrizations.weight.original1,
                       checkpoint["waveform_decoder.upsamplers.3.parametrizations.weight.original1"])
    with torch.no_grad():
        speech = model.generate(**processor(text="hi", return_tensors="pt"), speaker_ids=[1])
    assert speech.waveform.shape[1] == speech.mel.shape[1] * 256 and torch.isfinite(speech.waveform).all()


# -------------------------------------------------------------------------------------------------- all types


@pytest.mark.parametrize("model_type, make_source, config, message", [
    ("omni_video", lambda: prefixed("video_encoder.", reference_video_encoder(vision=reference_vision_encoder())),
     video_target_config(moe_intermediate_size=64),
     (r"moe\.experts\.0\.gate_proj\.weight \[48, 32\] -> layers\.0\.mlp\.experts\.0\.gate_proj\.weight: got "
      r"\[48, 32\], the model expects \[64, 32\]")),
    ("omni_audio", lambda: prefixed("audio_encoder.", reference_audio_encoder(**AUDIO)),
     tiny_audio_config(intermediate_size=128), r"ff1\.0\.weight \[64, 32\] -> conformer_blocks\.0\.ff1\.fc1\.weight"),
    ("omni_audio_decoder", lambda: prefixed("audio_decoder.", reference_audio_decoder(**DECODER)),
     None, (r"duration_predictor\.conv1\.weight \[16, 32, 3\] -> duration_predictor\.conv1\.weight: got "
            r"\[16, 32, 3\], the model expects \[1024, 32, 3\]")),
    ("omni_audio_decoder", lambda: prefixed("waveform_decoder.", reference_waveform_decoder(**VOCODER)),
     decoder_target_config(vocoder_initial_channels=64),
     r"upsamplers\.0\.bias \[16\] -> vocoder\.upsamplers\.0\.bias"),
])
def test_reference_conversion_refuses_tensors_that_do_not_fit_any_type(tmp_path, model_type, make_source, config,
                                                                        message):
    save_file(make_source(), tmp_path / "reference.safetensors")
    if config is None:  # the reference's sizes over a tiny config: its 1024-channel variance predictors
        config = {**decoder_target_config().to_dict(), "variance_predictor_hidden_size": 1024}
    with pytest.raises(ValueError, match=f"(?s)do not fit.*{message}"):
        convert_reference_checkpoint(tmp_path / "reference.safetensors", model_type=model_type, config=config)


def test_reference_components_saved_on_their_own(tmp_path):
    """`video_encoder.state_dict()` (with its nested vision encoder) or `waveform_decoder.state_dict()` alone."""
    video = reference_video_encoder(vision=reference_vision_encoder())
    torch.save({"epoch": 2, "model": video}, tmp_path / "video_encoder.pt")
    model, report = convert_reference_checkpoint(
        tmp_path / "video_encoder.pt", model_type="omni_video", config=video_target_config()
    )
    assert not report.other_components and set(report.mapped) | set(report.dropped) == set(video)
    assert report.mapped["vision_encoder.dual_stream_layers.0.ffn_a.1.weight"] == [
        "vision_model.layers.0.stream_a.mlp.fc1.weight"
    ]
    expert = model.layers[1].mlp.experts[3]
    assert torch.equal(expert.down_proj.weight, video["encoder_blocks.1.moe.experts.3.down_proj.weight"])

    vocoder = reference_waveform_decoder(**VOCODER)
    save_file(vocoder, tmp_path / "waveform_decoder.safetensors")
    model, report = convert_reference_checkpoint(
        tmp_path / "waveform_decoder.safetensors", model_type="omni_audio_decoder", config=decoder_target_config()
    )
    assert set(report.mapped) == set(vocoder) - {key for key in vocoder if key.startswith("input_proj.")}
    assert torch.equal(model.vocoder.mrf_blocks[3].resblocks[1].activations[1].alpha,
                       vocoder["mrf_blocks.3.resblocks.1.0.activation.alpha"])
    assert "embed_tokens.weight" in report.initialised


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
    tower_state = {key: value for key, value in tower.state_dict().items() if not key.startswith("head.")}
    assert model.backbone.state_dict().keys() == tower_state.keys()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, tower_state[key]), key
    assert not any(key.startswith("backbone.") for key in report.initialised)
    assert {key.split(".")[0] for key in report.initialised} == {"layers", "post_layernorm", "compressor"}
    head_keys = {key for key, reason in report.dropped.items() if "attention-pooling head" in reason}
    assert bool(head_keys) == any(key.startswith("head.") for key in tower.state_dict())  # SigLIP's, not CLIP's
    if kind.endswith("full"):
        assert any(key.startswith("text_model.") for key in report.dropped)
        assert any("text tower" in reason for reason in report.dropped.values())
    else:
        assert set(report.dropped) == head_keys


def test_vision_tower_conversion_into_the_video_model(tmp_path):
    """The tower becomes the backbone of the video model's per-frame vision encoder; `--set` arguments go to the
    video config and `vision_config` to the vision config around the tower."""
    tower = save_tower("siglip-full", tmp_path / "source")
    (tmp_path / "source" / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.4] * 3}))
    vision_tower_cli.main([
        str(tmp_path / "source"), str(tmp_path / "out"), "--model-type", "omni_video",
        "--set", "num_attention_heads=4", "--set", "num_hidden_layers=1", "--set", "num_tokens_per_frame=2",
        "--set", "num_frames=3",
        "--set", 'vision_config={"num_attention_heads": 4, "num_hidden_layers": 1}',
    ])
    model = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert type(model) is OmniVideoModel
    assert (model.config.num_tokens_per_frame, model.config.vision_config.num_hidden_layers) == (2, 1)
    tower_state = {key: value for key, value in tower.state_dict().items() if not key.startswith("head.")}
    assert model.vision_model.backbone.state_dict().keys() == tower_state.keys()
    assert all(torch.equal(value, tower_state[key]) for key, value in model.vision_model.backbone.state_dict().items())
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert not any(key.startswith("vision_model.backbone.") for key in report["initialised"])
    assert {"vision_model.layers.0.stream_a.self_attn.q_proj.weight", "layers.0.mlp.router.gate.weight",
            "compressor.query_embeddings"} <= set(report["initialised"])

    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    assert type(processor) is OmniVideoVideoProcessor and list(processor.image_mean) == [0.4] * 3
    assert processor.num_frames == 3 and processor.size.height == 28
    frames = torch.randint(0, 256, (3, 28, 28, 3), dtype=torch.uint8).numpy()
    with torch.no_grad():
        pixels = processor(frames, return_tensors="pt")
        features = model.vision_model.backbone_features(pixels.pixel_values_videos[0])[0]
        assert max_abs_diff(features, tower(pixels.pixel_values_videos[0]).last_hidden_state) == 0
        assert model(**pixels).last_hidden_state.shape == (1, 3 * 2, D)
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.pipeline_tag == "feature-extraction" and "siglip_vision_model" in card.text


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


def test_conversion_cli_rejects_misspelt_config_arguments_and_missing_sources(tmp_path, capsys):
    save_tower("siglip-full", tmp_path / "source")
    for bad in ("num_token=64", "bogus_key=3"):
        with pytest.raises(SystemExit):
            vision_tower_cli.main([str(tmp_path / "source"), str(tmp_path / "out"), "--set", bad])
        assert "is not an argument of the omni_vision config" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        reference_cli.main([str(tmp_path / "ref.pt"), str(tmp_path / "out"), "--set", "num_tokns=2"])
    message = "'num_tokns' is not an argument of the omni_vision config. Did you mean num_tokens?"
    assert message in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        convert_vision_tower(tmp_path / "missing", tmp_path / "out")


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


# ----------------------------------------------------------------------------------------------------- full size


@pytest.mark.parametrize(
    "model_type, components",
    [
        ("omni_vision", ["vision_encoder"]),
        ("omni_video", ["video_encoder"]),
        ("omni_audio", ["audio_encoder"]),
        ("omni_audio_decoder", ["audio_decoder", "waveform_decoder"]),
    ],
)
def test_reference_layouts_fit_the_full_size_reference_checkpoint(model_type, components):
    """Every tensor of the reference at its published default sizes (names and shapes in
    tests/data/reference_checkpoint_keys.json, a copy of ../shared/reference) either lands on a parameter of the same
    shape in our default full-size model or is dropped with a reason: no shape mismatch anywhere."""
    import json
    from pathlib import Path

    import omni_encoders
    from omni_encoders.conversion import REFERENCE_LAYOUTS, convert_state_dict
    from omni_encoders.conversion.reference import _build_config

    reference = json.loads((Path(__file__).parent / "data" / "reference_checkpoint_keys.json").read_text())
    state_dict = {
        f"{component}.{key}": torch.empty(shape, device="meta")
        for component in components
        for key, shape in reference["components"][component].items()
    }
    layout = REFERENCE_LAYOUTS[model_type]
    with torch.device("meta"):
        model = getattr(omni_encoders, layout.model_class)(_build_config(layout, None))
    target_shapes = {key: tensor.shape for key, tensor in model.state_dict().items()}
    converted, report = convert_state_dict(state_dict, target_shapes, layout.components, layout=model_type)
    assert len(report.mapped) > len(state_dict) / 3
    assert set(report.mapped) | set(report.dropped) == set(state_dict)
    assert all(reason for reason in report.dropped.values())

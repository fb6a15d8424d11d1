"""Shared building blocks: rotary tables, attention dispatch, latent attention and its cache."""

import pytest
import torch

from helpers import max_abs_diff
from omni_encoders.modeling_omni_common import (
    OmniActivation,
    OmniAttention,
    OmniGatedMLP,
    OmniLatentAttention,
    OmniLatentCache,
    OmniMLP,
    OmniRotaryEmbedding,
    apply_rotary_pos_emb,
    grid_positions,
    split_rotary_dims,
)


class _Config:
    """Stands in for a model config: the attention layers read only `_attn_implementation`."""

    def __init__(self, attn_implementation="eager"):
        self._attn_implementation = attn_implementation


def test_split_rotary_dims():
    assert split_rotary_dims(144, 2) == [72, 72]
    assert split_rotary_dims(128, 3) == [42, 42, 44]
    assert sum(split_rotary_dims(96, 3)) == 96
    with pytest.raises(ValueError, match="even"):
        split_rotary_dims(7, 1)


def test_grid_positions_are_row_major_xy_t():
    pos = grid_positions((2, 3, 4))  # (frames, height, width)
    assert pos.shape == (24, 3)
    # flat index = t * 12 + y * 4 + x, columns are (x, y, t)
    flat = pos[:, 2] * 12 + pos[:, 1] * 4 + pos[:, 0]
    assert torch.equal(flat, torch.arange(24))


def test_rotary_tables_match_per_cell_formula():
    rope = OmniRotaryEmbedding(head_dim=12, num_axes=3, theta=100.0)
    pos = grid_positions((2, 3, 2))
    cos, sin = rope(pos)
    dims = split_rotary_dims(12, 3)
    for row, (x, y, t) in enumerate(pos.tolist()):
        angles = []
        for coord, dim in zip((x, y, t), dims):
            angles += [coord / 100.0 ** (2 * i / dim) for i in range(dim // 2)]
        angles = torch.tensor(angles * 2)
        assert torch.allclose(cos[row], angles.cos(), atol=1e-6)
        assert torch.allclose(sin[row], angles.sin(), atol=1e-6)


def test_rotary_rotation_is_the_rotate_half_formula():
    x, cos, sin = torch.randn(2, 3, 5, 8), torch.randn(5, 8), torch.randn(5, 8)
    rotated_half = torch.cat([-x[..., 4:], x[..., :4]], dim=-1)
    torch.testing.assert_close(apply_rotary_pos_emb(x, cos, sin), x * cos + rotated_half * sin)
    batched_cos, batched_sin = cos.expand(2, 5, 8), sin.expand(2, 5, 8)  # per-batch tables `[B, seq, dim]`
    torch.testing.assert_close(apply_rotary_pos_emb(x, batched_cos, batched_sin), x * cos + rotated_half * sin)


@pytest.mark.parametrize("num_axes", [1, 2, 3])
def test_rotary_scores_depend_only_on_offsets(num_axes):
    """q·k after rotation depends only on the coordinate differences of the two tokens."""
    head_dim = 24
    rope = OmniRotaryEmbedding(head_dim, num_axes=num_axes)
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def score(pos_q, pos_k):
        cos, sin = rope(torch.tensor([pos_q, pos_k], dtype=torch.float32))
        rq = apply_rotary_pos_emb(q.view(1, 1, 1, -1), cos[:1], sin[:1])
        rk = apply_rotary_pos_emb(k.view(1, 1, 1, -1), cos[1:], sin[1:])
        return (rq * rk).sum().item()

    base_q, base_k = [3.0, 1.0, 2.0][:num_axes], [1.0, 4.0, 0.0][:num_axes]
    shift = [5.0, -2.0, 7.0][:num_axes]
    shifted_q = [a + s for a, s in zip(base_q, shift)]
    shifted_k = [a + s for a, s in zip(base_k, shift)]
    assert score(base_q, base_k) == pytest.approx(score(shifted_q, shifted_k), abs=1e-4)
    other_k = list(base_k)
    other_k[-1] += 1.0
    assert abs(score(base_q, base_k) - score(base_q, other_k)) > 1e-4


def test_attention_implementations_agree():
    torch.manual_seed(0)
    attn = OmniAttention(_Config("eager"), hidden_size=32, num_heads=4, num_key_value_heads=2).eval()
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    rope = OmniRotaryEmbedding(8, num_axes=1)
    pe = rope(torch.arange(5))
    eager_self, weights = attn(x, position_embeddings=pe)
    eager_cross, _ = attn(x, key_value_states=ctx)
    attn.config._attn_implementation = "sdpa"
    sdpa_self, no_weights = attn(x, position_embeddings=pe)
    sdpa_cross, _ = attn(x, key_value_states=ctx)
    assert weights.shape == (2, 4, 5, 5) and no_weights is None
    assert max_abs_diff(eager_self, sdpa_self) < 1e-5
    assert max_abs_diff(eager_cross, sdpa_cross) < 1e-5


def test_causal_attention_without_a_mask_is_causal_with_every_implementation():
    """`is_causal=True` and no mask: eager masks the future as sdpa does (top-left aligned for cross-attention too)."""
    torch.manual_seed(0)
    attn = OmniAttention(_Config("eager"), hidden_size=32, num_heads=4, is_causal=True).eval()
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    eager_self, weights = attn(x)
    eager_cross, cross_weights = attn(x, key_value_states=ctx)
    assert torch.equal(weights, weights.tril()) and weights[..., 1, 0].gt(0).all()
    assert torch.equal(cross_weights, cross_weights.tril())
    future = x.clone()
    future[:, -1] += 1.0
    assert torch.equal(attn(future)[0][:, :-1], eager_self[:, :-1])  # earlier positions do not see the last one
    attn.config._attn_implementation = "sdpa"
    assert max_abs_diff(attn(x)[0], eager_self) < 1e-5
    assert max_abs_diff(attn(x, key_value_states=ctx)[0], eager_cross) < 1e-5
    # With a mask, the mask alone decides (as in sdpa); a single query attends to every key.
    full = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    bidirectional = attn(x, attention_mask=full)[0]
    attn.config._attn_implementation = "eager"
    assert max_abs_diff(attn(x, attention_mask=full)[0], bidirectional) < 1e-5
    assert max_abs_diff(bidirectional, eager_self) > 1e-3
    _, single_weights = attn(x[:, :1], key_value_states=ctx)
    assert single_weights.gt(0).all()


def _latent_attention(impl="eager"):
    return OmniLatentAttention(
        _Config(impl), hidden_size=32, num_heads=4, num_key_value_heads=2, kv_lora_rank=8, qk_head_dim=12,
        qk_rope_head_dim=4, v_head_dim=8,
    ).eval()


def test_latent_attention_matches_explicit_computation():
    torch.manual_seed(0)
    attn = _latent_attention()
    x = torch.randn(2, 6, 32)
    cos, sin = OmniRotaryEmbedding(4)(torch.arange(6))
    out, _ = attn(x, (cos, sin))

    # Explicit: expand every head from the latent by hand.
    q = attn.q_proj(x).view(2, 6, 4, 12)
    ckv = attn.kv_a_proj(x)
    latent = torch.nn.functional.layer_norm(ckv[..., :8], (8,), attn.kv_a_layernorm.weight, attn.kv_a_layernorm.bias)
    k_rope = ckv[..., 8:]
    kv = attn.kv_b_proj(latent).view(2, 6, 2, 16)
    k_nope, v = kv[..., :8], kv[..., 8:]

    def rot(t):  # t [..., 6, 4] with positions on dim -2
        return t * cos + torch.cat([-t[..., 2:], t[..., :2]], -1) * sin

    q_rope = rot(q[..., 8:].transpose(1, 2))  # [2, 4, 6, 4]
    q_full = torch.cat([q[..., :8].transpose(1, 2), q_rope], -1)
    k_full = torch.cat([k_nope.transpose(1, 2), rot(k_rope)[:, None].expand(2, 2, 6, 4)], -1)
    k_full = k_full.repeat_interleave(2, dim=1)
    v_full = v.transpose(1, 2).repeat_interleave(2, dim=1)
    probs = (q_full @ k_full.transpose(-1, -2) / 12**0.5).softmax(-1)
    expected = attn.o_proj((probs @ v_full).transpose(1, 2).reshape(2, 6, 32))
    assert max_abs_diff(out, expected) < 1e-5

    attn.config._attn_implementation = "sdpa"
    assert max_abs_diff(attn(x, (cos, sin))[0], expected) < 1e-5


def test_latent_cache_holds_only_latents_and_matches_full_pass():
    torch.manual_seed(0)
    attn = _latent_attention()
    x = torch.randn(1, 10, 32)
    rope = OmniRotaryEmbedding(4)
    cache = OmniLatentCache()
    # Causal chunks through the cache vs. one pass with a causal mask.
    chunks = []
    for start, end in ((0, 4), (4, 7), (7, 10)):
        length = end
        mask = torch.ones(end - start, length, dtype=torch.bool).tril(diagonal=start)[None, None]
        out, _ = attn(x[:, start:end], rope(torch.arange(start, end)), attention_mask=mask, cache=cache)
        chunks.append(out)
    full_mask = torch.ones(10, 10, dtype=torch.bool).tril()[None, None]
    full, _ = attn(x, rope(torch.arange(10)), attention_mask=full_mask)
    assert max_abs_diff(torch.cat(chunks, 1), full) < 1e-5
    # Per token: kv_lora_rank + qk_rope_head_dim values, not 2 * kv_heads * head_dim.
    assert cache.get_seq_length() == 10
    assert cache.memory_bytes() == 10 * (8 + 4) * 4
    expanded_bytes = 10 * 2 * (12 + 8) * 4
    assert cache.memory_bytes() < expanded_bytes


def test_mel_spectrogram_frames_and_padding_invariance():
    from omni_encoders.modeling_omni_common import OmniMelSpectrogram, mel_frame_count

    mel = OmniMelSpectrogram(sampling_rate=16000, n_fft=1024, hop_length=256, n_mels=80)
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * torch.pi * 440 * t)
    spec = mel(tone)
    assert spec.shape == (mel_frame_count(16000, 256), 80) == (62, 80)
    # 440 Hz lands in the low mel bins: the loudest bin of a middle frame is well below the middle of the range.
    assert spec[30].argmax() < 20
    # A shorter clip zero-padded into a batch gives the same frames as the clip alone.
    short = tone[:5120]
    batch = torch.stack([tone, torch.nn.functional.pad(short, (0, 16000 - 5120))])
    batched = mel(batch)
    assert torch.allclose(batched[1, : 5120 // 256], mel(short), atol=1e-5)
    with pytest.raises(ValueError, match="shorter than one frame"):
        mel(torch.zeros(100))


@pytest.mark.parametrize("name", sorted(OmniActivation.IN_PLACE))
def test_in_place_activations_equal_transformers_activations(name):
    from transformers.activations import ACT2FN

    activation, x = OmniActivation(name), torch.randn(4, 9)
    expected = ACT2FN[name](x)
    torch.testing.assert_close(activation(x.clone()), expected)  # out of place with autograd
    with torch.no_grad():
        buffer = x.clone()
        output = activation(buffer)
    assert output.data_ptr() == buffer.data_ptr()  # no new buffer at inference
    torch.testing.assert_close(output, expected)


@pytest.mark.parametrize("mlp_class", [OmniMLP, OmniGatedMLP])
def test_feed_forward_runs_in_token_chunks_at_inference_with_the_same_result(mlp_class):
    torch.manual_seed(0)
    mlp = mlp_class(8, 32)
    x = torch.randn(2, 11, 8)
    expected = mlp(x)  # with autograd: one piece
    calls = []
    feed_forward = mlp.feed_forward
    mlp.feed_forward = lambda chunk: calls.append(chunk.shape[:-1].numel()) or feed_forward(chunk)
    mlp.inference_chunk_tokens = 5
    with torch.no_grad():
        output = mlp(x)
    assert calls == [5, 5, 5, 5, 2]  # the 22 tokens of both items in chunks of 5
    torch.testing.assert_close(output, expected)
    mlp.inference_chunk_tokens = 0
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), expected)
    assert calls[-1] == 2 * 11


@pytest.mark.parametrize("name", ["vision", "video", "audio", "audio_decoder"])
def test_attention_weights_come_with_eager_attention_only(name):
    """As in transformers: `output_attentions=True` returns one weight tensor per attention layer with eager
    attention; another implementation computes none, and the tuple is empty (never a tuple of `None`s)."""
    import helpers
    from omni_encoders import OmniAudioDecoderModel, OmniAudioModel, OmniVideoModel, OmniVisionModel

    torch.manual_seed(0)
    model_class, config, inputs = {
        "vision": (OmniVisionModel, helpers.tiny_vision_config(), {"pixel_values": torch.randn(1, 3, 28, 28)}),
        "video": (OmniVideoModel, helpers.tiny_video_config(), {"pixel_values_videos": torch.randn(1, 2, 3, 28, 28)}),
        "audio": (OmniAudioModel, helpers.tiny_audio_config(), {"input_values": torch.randn(1, 640)}),
        "audio_decoder": (
            OmniAudioDecoderModel, helpers.tiny_audio_decoder_config(), {"input_ids": torch.tensor([[5, 6]])}
        ),
    }[name]
    model = model_class(config).eval()
    with torch.no_grad():
        model.set_attn_implementation("eager")
        eager = model(**inputs, output_attentions=True).attentions
        model.set_attn_implementation("sdpa")
        sdpa = model(**inputs, output_attentions=True).attentions
    assert len(eager) > 0 and all(isinstance(weights, torch.Tensor) for weights in eager)
    assert sdpa == ()

"""The video encoder: config, 3D-RoPE factorised attention, temporal MoE, frame masks, heads, processor, Auto classes,
pipeline, model card and remote code."""

import json
import re

import av
import numpy as np
import PIL.Image
import pytest
import torch
from transformers import (
    AttentionInterface,
    AutoConfig,
    AutoModel,
    AutoModelForVideoClassification,
    AutoProcessor,
    pipeline,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

from helpers import TINY_VIDEO_BACKBONE, max_abs_diff, run_without_package, tiny_video_config
from omni_encoders import (
    OmniVideoConfig,
    OmniVideoForVideoClassification,
    OmniVideoModel,
    OmniVideoVideoProcessor,
    OmniVisionConfig,
)
from omni_encoders.modelcard import create_model_card
from omni_encoders.modeling_omni_common import apply_rotary_pos_emb, grid_positions
from omni_encoders.modeling_omni_video import OmniVideoTemporalMoE, load_balancing_loss


def write_video(path, frames: np.ndarray, fps: int = 10, codec: str = "libx264"):
    """Encode `frames [T, H, W, 3]` uint8 RGB with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def gray_ramp(num_frames: int, height: int = 32, width: int = 48) -> np.ndarray:
    """Frame i is a flat gray of level 20 * i, so sampled frames can be identified from their pixels."""
    levels = (np.arange(num_frames) * 20).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


# ----------------------------------------------------------------------------------------------------- config


def test_default_config_is_the_spec_full_size():
    config = OmniVideoConfig()
    assert isinstance(config.vision_config, OmniVisionConfig)
    assert config.vision_config.backbone_config.model_type == "siglip_vision_model"
    assert config.hidden_size == 1152 and config.image_size // config.patch_size == 27
    assert (config.num_hidden_layers, config.num_attention_heads) == (4, 8)
    assert (config.num_experts, config.num_experts_per_tok, config.use_shared_expert) == (4, 2, True)
    assert config.moe_intermediate_size == 4 * 1152 and config.hidden_act == "silu"
    assert (config.num_tokens_per_frame, config.num_frames, config.max_frames) == (64, 16, 32)
    assert config.frame_causal is True and config.router_aux_loss_coef > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_attention_heads": 5}, "divisible by num_attention_heads"),
        ({"num_attention_heads": 8}, "at least 6"),  # head_dim 4 leaves no frequency pair for one of x, y, t
        ({"num_experts_per_tok": 5}, "num_experts_per_tok"),
        ({"num_experts": 0, "num_experts_per_tok": 0}, "num_experts"),
        ({"num_frames": 9}, "max_frames"),
        ({"num_tokens_per_frame": 0}, "num_tokens_per_frame"),
        ({"router_aux_loss_coef": -1.0}, "router_aux_loss_coef"),
        ({"num_hidden_layers": -1}, "num_hidden_layers"),
        ({"pooling": "max"}, "pooling must be one of"),
        ({"rope_theta": 0.0}, "rope_theta"),
        ({"rope_theta": -1.0}, "rope_theta"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
        ({"hidden_act": "foo"}, "Unknown hidden_act .foo."),
        ({"rope_theta": float("inf")}, "rope_theta must be a positive finite number"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_video_config(**kwargs)


def test_config_round_trip(tmp_path):
    config = tiny_video_config(frame_causal=False, num_experts=3)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, OmniVideoConfig) and isinstance(loaded.vision_config, OmniVisionConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()


# ----------------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize("num_frames, height, width", [(3, 28, 28), (5, 28, 35)])
def test_shapes(num_frames, height, width):
    model = OmniVideoModel(tiny_video_config()).eval()
    out = model(torch.randn(2, num_frames, 3, height, width))
    num_patches = (height // 7) * (width // 7)
    assert out.last_hidden_state.shape == (2, num_frames * 3, 32)
    assert out.attention_mask.shape == (2, num_frames * 3) and bool(out.attention_mask.all())
    assert out.patch_embeddings.shape == (2, num_frames, num_patches, 32)
    assert torch.allclose(out.pooler_output, out.last_hidden_state.mean(1), atol=1e-6)
    assert out.aux_loss.dim() == 0 and torch.isfinite(out.aux_loss)


def test_frames_are_batched_through_the_vision_model_without_titok():
    model = OmniVideoModel(tiny_video_config()).eval()
    assert model.vision_model.compressor is None
    calls = []
    model.vision_model.register_forward_hook(lambda module, args, output: calls.append(tuple(args[0].shape)))
    model(torch.randn(2, 5, 3, 28, 28))
    assert calls == [(10, 3, 28, 28)]  # all B * T frames in one call


def test_outputs_hidden_states_attentions_and_tuples():
    model = OmniVideoModel(tiny_video_config(attn_implementation="eager")).eval()
    x = torch.randn(2, 5, 3, 28, 28)
    out = model(x, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 1 + 2 and out.hidden_states[0].shape == (2, 5 * 16, 32)
    assert [a.shape for a in out.attentions] == [(2 * 5, 4, 16, 16)] * 2
    assert [a.shape for a in out.temporal_attentions] == [(2 * 16, 4, 5, 5)] * 2
    temporal = out.temporal_attentions[0]
    assert torch.allclose(temporal.sum(-1), torch.ones(()), atol=1e-5)
    assert temporal.triu(diagonal=1).abs().max() == 0  # frame-causal: nothing attends to a later frame
    as_tuple = model(x, return_dict=False)
    assert torch.equal(as_tuple[0], out.last_hidden_state)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("frame_causal", [True, False])
def test_frame_causality(frame_causal, implementation):
    """Changing frames after t leaves every output of frames <= t unchanged, only when causal."""
    model = OmniVideoModel(tiny_video_config(frame_causal=frame_causal, attn_implementation=implementation)).eval()
    x = torch.randn(1, 5, 3, 28, 28)
    changed = x.clone()
    changed[:, 2:] = torch.randn_like(changed[:, 2:])
    with torch.no_grad():
        a, b = model(x), model(changed)
    past_tokens = slice(0, 2 * 3)  # the tokens of frames 0 and 1
    token_diff = max_abs_diff(a.last_hidden_state[:, past_tokens], b.last_hidden_state[:, past_tokens])
    patch_diff = max_abs_diff(a.patch_embeddings[:, :2], b.patch_embeddings[:, :2])
    if frame_causal:
        assert token_diff < 1e-5 and patch_diff < 1e-5
    else:
        assert token_diff > 1e-3 and patch_diff > 1e-3
    assert max_abs_diff(a.last_hidden_state[:, 6:], b.last_hidden_state[:, 6:]) > 1e-3


def test_rotary_scores_depend_only_on_xyt_offsets():
    """With the model's 3D table, q·k depends only on (Δx, Δy, Δt), and changes with each of them."""
    model = OmniVideoModel(tiny_video_config())
    grid = (6, 4, 5)  # frames, height, width
    positions = grid_positions(grid)
    cos, sin = model.rotary_emb(positions)
    q, k = torch.randn(8), torch.randn(8)

    def score(query_xyt, key_xyt):
        rows = [int(((positions == torch.tensor(p)).all(-1)).nonzero()) for p in (query_xyt, key_xyt)]
        rq = apply_rotary_pos_emb(q.view(1, 1, 1, -1), cos[rows[:1]], sin[rows[:1]])
        rk = apply_rotary_pos_emb(k.view(1, 1, 1, -1), cos[rows[1:]], sin[rows[1:]])
        return (rq * rk).sum().item()

    reference = score((0, 1, 0), (2, 3, 1))
    assert score((2, 0, 3), (4, 2, 4)) == pytest.approx(reference, abs=1e-5)  # same (2, 2, 1) offset elsewhere
    for other_key in [(3, 3, 1), (2, 2, 1), (2, 3, 2)]:  # one of Δx, Δy, Δt changed
        assert abs(score((0, 1, 0), other_key) - reference) > 1e-4


def test_block_attention_is_relative_in_space_and_time():
    """In a real block, fed identical token contents, attention logits between two tokens depend only on their
    offset: spatially (Δx, Δy) within a frame, temporally Δt across frames."""
    model = OmniVideoModel(tiny_video_config(attn_implementation="eager")).eval()
    num_frames, height, width = 5, 4, 4
    hidden = torch.randn(32).expand(1, num_frames, height * width, 32).contiguous()
    spatial_pe, temporal_pe = model.rotary_tables(1, (num_frames, height, width), hidden.device)
    mask = model.temporal_attention_mask(None, 1, num_frames, height * width, hidden.dtype, hidden.device)
    with torch.no_grad():
        _, spatial, temporal, _ = model.layers[0](hidden, spatial_pe, temporal_pe, temporal_attention_mask=mask)
    # log-weight differences within a row are logit differences (the softmax normaliser cancels)
    spatial, temporal = spatial.log(), temporal.log()

    def patch(x, y):
        return y * width + x

    def spatial_logit(frame, query, key):  # relative to the query's logit for itself
        return spatial[frame, :, patch(*query), patch(*key)] - spatial[frame, :, patch(*query), patch(*query)]

    reference = spatial_logit(0, (0, 0), (1, 2))
    assert torch.allclose(spatial_logit(3, (2, 1), (3, 3)), reference, atol=1e-4)
    assert (spatial_logit(0, (0, 0), (2, 1)) - reference).abs().max() > 1e-3

    def temporal_logit(position, query_frame, key_frame):
        return temporal[position, :, query_frame, key_frame] - temporal[position, :, query_frame, query_frame]

    reference = temporal_logit(0, 2, 0)
    assert torch.allclose(temporal_logit(7, 4, 2), reference, atol=1e-4)  # same Δt = -2, other place and time
    assert (temporal_logit(0, 2, 1) - reference).abs().max() > 1e-3


def test_factorised_attention_for_16_frames_of_27x27_patches():
    """The default clip shape (16 frames, 27x27 patches): every attention call is within a frame or across frames at
    one patch position; nothing ever attends over the 16 * 729 tokens at once."""
    backbone = {**TINY_VIDEO_BACKBONE, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
                "image_size": 54, "patch_size": 2}
    config = tiny_video_config(
        vision_config={"backbone_config": backbone, "num_attention_heads": 2, "num_hidden_layers": 0},
        num_hidden_layers=1, num_attention_heads=2, num_tokens_per_frame=2, moe_intermediate_size=16,
        compressor_intermediate_size=16, max_frames=16,
    )
    calls = []

    def recording_attention(module, query, key, value, attention_mask, **kwargs):
        calls.append((module, tuple(query.shape), tuple(key.shape)))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("omni_video_test_recording", recording_attention)
    AttentionMaskInterface.register("omni_video_test_recording", sdpa_mask)
    config._attn_implementation = "omni_video_test_recording"
    model = OmniVideoModel(config).eval()
    frames, grid = 16, 27 * 27
    x = torch.randn(1, frames, 3, 54, 54)
    with torch.no_grad():
        out = model(x)
    assert out.last_hidden_state.shape == (1, frames * 2, 16)

    block = model.layers[0]
    shapes = {(q, k) for module, q, k in calls if module is block.spatial_attn}
    assert shapes == {((frames, 2, grid, 8), (frames, 2, grid, 8))}  # [B*T, H, hw, d]
    shapes = {(q, k) for module, q, k in calls if module is block.temporal_attn}
    assert shapes == {((grid, 2, frames, 8), (grid, 2, frames, 8))}  # [B*hw, H, T, d]
    largest = max(q[-2] * k[-2] for _, q, k in calls)
    assert largest == grid * grid < (frames * grid) ** 2
    assert all(k[-2] < frames * grid for _, _, k in calls)

    model.set_attn_implementation({"": "eager", "vision_config": "sdpa"})  # weights of the video blocks only
    with torch.no_grad():
        out = model(x, output_attentions=True)
    assert out.attentions[0].shape == (frames, 2, grid, grid)
    assert out.temporal_attentions[0].shape == (grid, 2, frames, frames)


@pytest.mark.parametrize("frame_causal", [True, False])
def test_variable_frame_counts_match_each_video_alone(frame_causal):
    model = OmniVideoModel(tiny_video_config(frame_causal=frame_causal)).eval()
    lengths = [5, 3, 1]
    videos = [torch.randn(n, 3, 28, 28) for n in lengths]
    batch = torch.randn(3, 5, 3, 28, 28)  # the padding frames hold noise: it must not leak into real frames
    for index, video in enumerate(videos):
        batch[index, : len(video)] = video
    frame_mask = torch.tensor([[1] * n + [0] * (5 - n) for n in lengths])
    with torch.no_grad():
        batched = model(batch, frame_mask=frame_mask)
        assert torch.equal(batched.attention_mask, frame_mask.repeat_interleave(3, dim=1))
        for index, video in enumerate(videos):
            alone = model(video[None])
            num_tokens = len(video) * 3
            tokens = batched.last_hidden_state[index, :num_tokens]
            assert max_abs_diff(tokens, alone.last_hidden_state[0]) < 1e-5
            assert max_abs_diff(batched.patch_embeddings[index, : len(video)], alone.patch_embeddings[0]) < 1e-5
            assert max_abs_diff(batched.pooler_output[index], alone.pooler_output[0]) < 1e-5


@pytest.mark.parametrize("pooling", ["mean", "last_frame"])
@pytest.mark.parametrize("padding_value", [float("nan"), float("inf"), 1e38])
def test_non_finite_padding_does_not_reach_the_real_frames(padding_value, pooling):
    """Padded frames are zeroed before the backbone: NaN, inf or huge pixels there (0 x NaN = NaN in the attention)
    leave the real frames' tokens, the pooled embedding and the aux loss as with finite padding."""
    model = OmniVideoModel(tiny_video_config(pooling=pooling)).eval()
    finite = torch.randn(2, 4, 3, 28, 28)
    frame_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    poisoned = finite.clone()
    poisoned[1, 2:] = padding_value
    caller_copy = poisoned.clone()
    with torch.no_grad():
        expected, actual = model(finite, frame_mask=frame_mask), model(poisoned, frame_mask=frame_mask)
    real_tokens = frame_mask.repeat_interleave(3, dim=1).bool()
    assert torch.equal(actual.last_hidden_state[real_tokens], expected.last_hidden_state[real_tokens])
    assert torch.equal(actual.pooler_output, expected.pooler_output)
    assert torch.equal(actual.aux_loss, expected.aux_loss) and torch.isfinite(actual.aux_loss)
    assert torch.isfinite(actual.last_hidden_state).all()
    torch.testing.assert_close(poisoned, caller_copy, rtol=0, atol=0, equal_nan=True)  # zeroed out of place


def test_forward_refuses_attention_mask_and_unknown_keywords():
    """Keywords that `forward` does not use are errors, not silently dropped (an `attention_mask` meant as the frame
    mask would have been ignored)."""
    x = torch.randn(1, 3, 3, 28, 28)
    for model in (OmniVideoModel(tiny_video_config()), OmniVideoForVideoClassification(tiny_video_config())):
        with pytest.raises(ValueError, match="no `attention_mask`.*frame_mask"):
            model(x, attention_mask=torch.tensor([[1, 0, 0]]))
        with pytest.raises(TypeError, match="'frame_masks'"):
            model(x, frame_masks=torch.tensor([[1, 0, 0]]))
        with torch.no_grad():
            assert model(x, attention_mask=None).pooler_output.shape == (1, 32)  # `None` carries nothing
            inputs = OmniVideoVideoProcessor(size={"height": 28, "width": 28}, num_frames=2)(
                gray_ramp(3), return_tensors="pt", return_metadata=True
            )
            assert model(**inputs).pooler_output.shape == (1, 32)  # the processor's metadata is not an error


@pytest.mark.parametrize("frame_causal", [True, False])
def test_last_frame_pooling_reads_each_videos_last_real_frame(frame_causal):
    """`pooling="last_frame"`: the pooled embedding is the mean of the tokens of each video's last real frame (padding
    ignored), and with frame-causal attention those tokens depend on every frame, in order."""
    # initial weights large enough that attention is not near-uniform (uniform attention is blind to order)
    config = tiny_video_config(pooling="last_frame", frame_causal=frame_causal, initializer_range=0.2)
    model = OmniVideoModel(config).eval()
    lengths = [4, 2]
    batch = torch.randn(2, 4, 3, 28, 28)
    frame_mask = torch.tensor([[1] * n + [0] * (4 - n) for n in lengths])
    with torch.no_grad():
        outputs = model(batch, frame_mask=frame_mask)
        for index, length in enumerate(lengths):
            last_frame_tokens = outputs.last_hidden_state[index, (length - 1) * 3 : length * 3]
            assert max_abs_diff(outputs.pooler_output[index], last_frame_tokens.mean(0)) < 1e-6
            alone = model(batch[index : index + 1, :length]).pooler_output[0]
            assert max_abs_diff(outputs.pooler_output[index], alone) < 1e-5
        video = batch[:1]
        pooled = model(video).pooler_output
        earlier_frame_changed = video.clone()
        earlier_frame_changed[:, 0] += 1.0
        assert max_abs_diff(model(earlier_frame_changed).pooler_output, pooled) > 1e-3
        # the same last frame after the same frames in another order: a different embedding
        reordered = video[:, [2, 1, 0, 3]]
        assert max_abs_diff(model(reordered).pooler_output, pooled) > 1e-3
        mean_pooled = OmniVideoModel(tiny_video_config(frame_causal=frame_causal, initializer_range=0.2)).eval()
        mean_pooled.load_state_dict(model.state_dict())
        mean_outputs = mean_pooled(batch, frame_mask=frame_mask)
        assert torch.equal(mean_outputs.last_hidden_state, outputs.last_hidden_state)
        assert max_abs_diff(mean_outputs.pooler_output[1], outputs.last_hidden_state[1, :6].mean(0)) < 1e-6


def test_sdpa_agrees_with_eager():
    model = OmniVideoModel(tiny_video_config(attn_implementation="eager")).eval()
    x = torch.randn(2, 4, 3, 28, 35)
    frame_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        expected = model(x, frame_mask=frame_mask)
        model.set_attn_implementation("sdpa")
        assert model.vision_model.backbone.config._attn_implementation == "sdpa"
        assert model.layers[0].temporal_attn.config._attn_implementation == "sdpa"
        out = model(x, frame_mask=frame_mask)
    assert max_abs_diff(out.last_hidden_state, expected.last_hidden_state) < 1e-4
    assert max_abs_diff(out.aux_loss, expected.aux_loss) < 1e-5


# ----------------------------------------------------------------------------------------------------- MoE


def test_moe_gives_each_token_its_top_k_experts_plus_the_shared_one():
    config = tiny_video_config(num_experts=4, num_experts_per_tok=2)
    moe = OmniVideoTemporalMoE(config).eval()
    for module in moe.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.2)
    hidden = torch.randn(2, 3, 5, 32)
    rows_seen = {}
    for name, expert in [*((str(i), e) for i, e in enumerate(moe.experts)), ("shared", moe.shared_expert)]:
        expert.register_forward_hook(
            lambda module, args, output, name=name: rows_seen.setdefault(name, []).append(len(args[0]))
        )
    with torch.no_grad():
        output, router_logits = moe(hidden)
    weights, indices = moe.route(router_logits)
    num_tokens = 2 * 3 * 5

    # exactly top-k distinct experts per token, weighted by their router probabilities
    assert indices.shape == (2, 3, 5, 2) and bool((indices[..., 0] != indices[..., 1]).all())
    probabilities = router_logits.softmax(-1)
    assert torch.allclose(weights, probabilities.gather(-1, indices), atol=1e-6)
    assert torch.equal(indices, probabilities.topk(2, dim=-1).indices)
    # every expert runs once, on exactly the tokens routed to it; the shared expert on every token
    counts = torch.bincount(indices.flatten(), minlength=4).tolist()
    assert rows_seen == {**{str(i): [counts[i]] for i in range(4)}, "shared": [num_tokens]}
    # and the output is the weighted sum of those experts, token by token
    tokens = hidden.reshape(num_tokens, 32)
    with torch.no_grad():
        every_expert = torch.stack([expert(tokens) for expert in moe.experts], dim=1)  # [tokens, E, D]
        chosen = every_expert.gather(1, indices.reshape(num_tokens, 2, 1).expand(-1, -1, 32))
        expected = (chosen * weights.reshape(num_tokens, 2, 1)).sum(1) + moe.shared_expert(tokens)
    assert max_abs_diff(output.reshape(num_tokens, 32), expected) < 1e-5


def test_moe_without_shared_expert():
    moe = OmniVideoTemporalMoE(tiny_video_config(use_shared_expert=False, num_experts=3, num_experts_per_tok=1))
    assert moe.shared_expert is None
    output, router_logits = moe(torch.randn(1, 2, 4, 32))
    assert output.shape == (1, 2, 4, 32) and router_logits.shape == (1, 2, 4, 3)


def test_router_sees_each_tokens_change_from_the_previous_frame():
    moe = OmniVideoTemporalMoE(tiny_video_config())
    router = moe.router
    hidden = torch.randn(2, 4, 5, 32)
    motion = torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, 1:] - hidden[:, :-1]], dim=1)
    expected = router.gate(hidden + router.temporal_proj(motion))
    assert torch.allclose(router(hidden), expected, atol=1e-6)
    moved = hidden.clone()
    moved[:, 1] += 1.0  # frame 1 moves: routing of frames 1 and 2 changes, frames 0 and 3 keep theirs
    diff = (router(moved) - router(hidden)).abs().amax(dim=(0, 2, 3))
    assert diff[0] == 0 and diff[3] == 0 and diff[1] > 0 and diff[2] > 0


def test_aux_loss_gives_the_router_a_gradient_and_ignores_padding():
    model = OmniVideoModel(tiny_video_config())
    x = torch.randn(2, 4, 3, 28, 28)
    frame_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    out = model(x, frame_mask=frame_mask)
    out.aux_loss.backward()
    for layer in model.layers:
        assert layer.mlp.router.gate.weight.grad.abs().sum() > 0
        assert layer.mlp.router.temporal_proj.weight.grad.abs().sum() > 0

    other_padding = x.clone()
    other_padding[1, 2:] = torch.randn_like(other_padding[1, 2:])
    with torch.no_grad():
        assert max_abs_diff(model(other_padding, frame_mask=frame_mask).aux_loss, out.aux_loss) < 1e-6
        assert max_abs_diff(model(other_padding).aux_loss, out.aux_loss) > 1e-6  # unmasked, padding would count


def test_load_balancing_loss_values():
    uniform = (torch.zeros(2, 3, 4, 4),)  # equal logits: P_e = 1/E, so E * sum_e f_e P_e = 1
    assert load_balancing_loss(uniform, top_k=2).item() == pytest.approx(1.0)
    collapsed = torch.full((2, 3, 4, 4), -10.0)
    collapsed[..., :2] = 10.0  # every token picks experts 0 and 1 with probability ~1/2 each
    assert load_balancing_loss((collapsed,), top_k=2).item() == pytest.approx(2.0, abs=1e-3)
    frame_mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    padded = collapsed.clone()
    padded[0, 2] = padded[1, 1:] = torch.tensor([-10.0, -10.0, 10.0, 10.0])
    assert load_balancing_loss((padded,), 2, frame_mask).item() == pytest.approx(2.0, abs=1e-3)


# ----------------------------------------------------------------------------------------------------- training


def test_classification_loss_includes_the_aux_loss_and_trains():
    model = OmniVideoForVideoClassification(tiny_video_config(num_labels=2, router_aux_loss_coef=0.5))
    x, labels = torch.randn(2, 2, 3, 28, 28), torch.tensor([0, 1])
    frame_mask = torch.tensor([[1, 1], [1, 0]])
    out = model(x, frame_mask=frame_mask, labels=labels)
    assert out.logits.shape == (2, 2)
    expected = torch.nn.functional.cross_entropy(out.logits, labels) + 0.5 * out.aux_loss
    assert torch.allclose(out.loss, expected)

    model.config.router_aux_loss_coef = 0.01
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = model(x, frame_mask=frame_mask, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0] * 0.5


def test_gradient_checkpointing_gives_the_same_gradients():
    model = OmniVideoForVideoClassification(tiny_video_config(num_labels=2))
    model.train()
    x, labels = torch.randn(2, 3, 3, 28, 28), torch.tensor([0, 1])
    frame_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    model(x, frame_mask=frame_mask, labels=labels).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert any("router" in name for name in reference)
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    model(x, frame_mask=frame_mask, labels=labels).loss.backward()
    for name, grad in reference.items():
        assert max_abs_diff(dict(model.named_parameters())[name].grad, grad) < 1e-5, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_is_finite(dtype):
    model = OmniVideoForVideoClassification(tiny_video_config(num_labels=2)).to(dtype).eval()
    x = torch.randn(2, 4, 3, 28, 28, dtype=dtype)
    out = model(x, frame_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]), labels=torch.tensor([0, 1]))
    assert out.logits.dtype == dtype
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss) and torch.isfinite(out.aux_loss)


@pytest.mark.parametrize(
    "shape, frame_mask, message",
    [
        ((2, 3, 28, 28), None, r"\[batch, frames, channels, height, width\]"),
        ((1, 2, 1, 28, 28), None, "channels"),
        ((1, 9, 3, 28, 28), None, "max_frames=8"),
        ((1, 2, 3, 6, 28), None, "smaller than one 7x7 patch"),
        ((2, 3, 3, 28, 28), [[1, 1, 1]], r"frame_mask must have shape \[batch, frames\]"),
        ((1, 3, 3, 28, 28), [[0, 0, 0]], "at least one real frame"),
        ((1, 3, 3, 28, 28), [[1, 0, 1]], "frame_mask must be 1 on a prefix of each row"),
        ((1, 3, 3, 28, 28), [[0, 1, 1]], r"right padding\): the real frames first"),
        ((1, 3, 3, 28, 28), [[1, 2, 1]], "values other than 0 and 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(shape, frame_mask, message):
    model = OmniVideoModel(tiny_video_config())
    frame_mask = torch.tensor(frame_mask) if frame_mask is not None else None
    with pytest.raises(ValueError, match=message):
        model(torch.randn(shape), frame_mask=frame_mask)


# ----------------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_and_auto_classes(tmp_path):
    model = OmniVideoForVideoClassification(tiny_video_config(num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == {  # every Auto class of the model type
        "AutoConfig": "configuration_omni_video.OmniVideoConfig",
        "AutoModel": "modeling_omni_video.OmniVideoModel",
        "AutoModelForVideoClassification": "modeling_omni_video.OmniVideoForVideoClassification",
    }
    loaded = AutoModelForVideoClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is OmniVideoForVideoClassification
    x, frame_mask = torch.randn(2, 3, 3, 28, 28), torch.tensor([[1, 1, 1], [1, 0, 0]])
    with torch.no_grad():
        assert torch.equal(loaded(x, frame_mask=frame_mask).logits, model(x, frame_mask=frame_mask).logits)
        base = AutoModel.from_pretrained(tmp_path).eval()
        assert type(base) is OmniVideoModel
        assert torch.equal(base(x).last_hidden_state, model.model(x).last_hidden_state)


def test_model_card_describes_the_video_classifier():
    config = tiny_video_config(num_labels=2, id2label={0: "left", 1: "right"}, label2id={"left": 0, "right": 1})
    card = create_model_card(OmniVideoForVideoClassification(config), model_id="org/omni-video-directions")
    assert card.data.pipeline_tag == "video-classification"
    assert {"omni_video", "video", "mixture-of-experts"} <= set(card.data.tags)
    assert "2 classes: left, right" in card.text
    assert re.search(r"`3` per\s+frame", card.text)  # the config's num_tokens_per_frame


# ----------------------------------------------------------------------------------------------------- processor


@pytest.fixture
def processor():
    return OmniVideoVideoProcessor(size={"height": 28, "width": 28}, num_frames=4)


@pytest.fixture(scope="module")
def video_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    frames = gray_ramp(12)
    write_video(folder / "ramp.mp4", frames)
    write_video(folder / "ramp.webm", frames, codec="libvpx-vp9")
    write_video(folder / "short.mp4", frames[:2])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("not a video")
    return folder


@pytest.mark.parametrize(
    "make_video, batch, frames",
    [
        (lambda files: str(files / "ramp.mp4"), 1, 4),
        (lambda files: str(files / "ramp.webm"), 1, 4),
        (lambda files: [str(files / "ramp.mp4"), str(files / "short.mp4")], 2, 4),
        (lambda files: gray_ramp(6), 1, 4),  # [T, H, W, C] uint8
        (lambda files: torch.rand(6, 3, 20, 30), 1, 4),  # [T, C, H, W] float
        (lambda files: np.zeros((6, 20, 30, 1), np.uint8), 1, 4),  # grayscale
        (lambda files: np.zeros((6, 20, 30, 4), np.uint8), 1, 4),  # RGBA
        (lambda files: [PIL.Image.new("RGB", (30, 20))] * 5, 1, 4),  # one video as PIL frames
        (lambda files: [np.zeros((20, 30, 3), np.uint8)] * 2, 1, 4),  # one short video as array frames
        (lambda files: [torch.zeros(20, 30, 3), np.zeros((20, 30, 3), np.uint8)], 1, 4),  # tensor and array frames
        (lambda files: [[PIL.Image.new("L", (30, 20))] * 3, [PIL.Image.new("RGB", (40, 20))] * 6], 2, 4),
        (lambda files: torch.rand(3, 6, 20, 30, 3), 3, 4),  # 5D batch
        (lambda files: [gray_ramp(9), gray_ramp(2, 10, 10)], 2, 4),  # list of 4D arrays
        (lambda files: PIL.Image.new("RGB", (30, 20)), 1, 4),  # one image = a one-frame video
    ],
)
def test_processor_accepts_common_inputs(processor, video_files, make_video, batch, frames):
    out = processor(make_video(video_files), return_tensors="pt")
    assert out.pixel_values_videos.shape == (batch, frames, 3, 28, 28)
    assert out.frame_mask.shape == (batch, frames) and out.frame_mask.dtype == torch.long
    assert torch.isfinite(out.pixel_values_videos).all()


def test_processor_samples_frames_uniformly_or_at_fps(processor, video_files):
    expected_level = lambda index: (20 * index / 255 - 0.5) / 0.5  # noqa: E731
    arrays = processor(gray_ramp(12), return_tensors="pt", return_metadata=True)
    assert arrays.video_metadata[0].frames_indices == [0, 3, 6, 9]
    levels = arrays.pixel_values_videos[0].mean(dim=(1, 2, 3))
    assert torch.allclose(levels, torch.tensor([expected_level(i) for i in (0, 3, 6, 9)]), atol=1e-5)

    decoded = processor(str(video_files / "ramp.mp4"), num_frames=6, return_tensors="pt", return_metadata=True)
    assert decoded.video_metadata[0].frames_indices == [0, 2, 4, 6, 8, 10]
    levels = decoded.pixel_values_videos[0].mean(dim=(1, 2, 3))
    assert torch.allclose(levels, torch.tensor([expected_level(i) for i in (0, 2, 4, 6, 8, 10)]), atol=0.05)

    by_fps = processor(str(video_files / "ramp.webm"), fps=2.5, return_tensors="pt", return_metadata=True)  # 10 fps
    assert by_fps.video_metadata[0].frames_indices == [0, 4, 8]
    assert by_fps.pixel_values_videos.shape[1] == 3 and bool(by_fps.frame_mask.all())
    with_metadata = processor(gray_ramp(12), fps=5, video_metadata={"total_num_frames": 12, "fps": 10},
                              return_tensors="pt", return_metadata=True)
    assert with_metadata.video_metadata[0].frames_indices == [0, 2, 4, 6, 8, 10]
    # the frame rate alone is enough for an array (the frame count is its length), as the fps error says
    with_fps = processor(gray_ramp(12), fps=5, video_metadata={"fps": 10}, return_tensors="pt", return_metadata=True)
    assert with_fps.video_metadata[0].frames_indices == [0, 2, 4, 6, 8, 10]

    fps_processor = OmniVideoVideoProcessor(size={"height": 28, "width": 28}, fps=2.5)
    by_fps = fps_processor(str(video_files / "ramp.mp4"), return_tensors="pt", return_metadata=True)
    assert by_fps.video_metadata[0].frames_indices == [0, 4, 8]
    # a call's argument replaces the processor's default: `num_frames` its `fps`, `fps` its `num_frames`
    by_count = fps_processor(str(video_files / "ramp.mp4"), num_frames=4, return_tensors="pt", return_metadata=True)
    assert by_count.video_metadata[0].frames_indices == [0, 3, 6, 9] and by_count.pixel_values_videos.shape[1] == 4
    by_fps = processor(gray_ramp(12), fps=5, video_metadata={"fps": 10}, return_tensors="pt")
    assert by_fps.pixel_values_videos.shape[1] == 6  # not padded to the processor's num_frames=4 either

    everything = processor(gray_ramp(7), do_sample_frames=False, return_tensors="pt")
    assert everything.pixel_values_videos.shape[1] == 7 and bool(everything.frame_mask.all())


def test_processor_pads_short_videos_with_a_mask(processor, video_files):
    out = processor([str(video_files / "short.mp4"), gray_ramp(12)], num_frames=5, return_tensors="pt")
    assert out.frame_mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert out.pixel_values_videos[0, 2:].abs().max() == 0
    assert out.pixel_values_videos[0, :2].abs().max() > 0


def test_processor_resizes_like_torch_interpolate(processor):
    video = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    out = processor(video, do_sample_frames=False, return_tensors="pt").pixel_values_videos[0]
    resized = torch.nn.functional.interpolate(video.float(), size=(28, 28), mode="bicubic", antialias=True)
    expected = (resized.round().clamp(0, 255) / 255 - 0.5) / 0.5
    assert max_abs_diff(out, expected) < 1e-5
    cropped = OmniVideoVideoProcessor(size={"shortest_edge": 30}, do_center_crop=True, crop_size={"height": 28,
                                      "width": 28})
    assert cropped(video, do_sample_frames=False, return_tensors="pt").pixel_values_videos.shape == (1, 2, 3, 28, 28)


@pytest.mark.parametrize(
    "make_video, kwargs, message",
    [
        (lambda files: str(files / "empty.mp4"), {}, "Could not read video"),
        (lambda files: str(files / "notes.mp4"), {}, "Could not read video"),
        (lambda files: str(files / "missing.mp4"), {}, "does not exist"),
        (lambda files: [], {}, "No videos"),
        (lambda files: None, {}, "No videos"),
        (lambda files: np.zeros((0, 10, 10, 3), np.uint8), {}, "empty"),
        (lambda files: np.zeros((2, 5, 5, 7), np.uint8), {}, "channel axis"),
        (lambda files: np.full((2, 5, 5, 3), np.nan, np.float32), {}, "NaN"),
        (lambda files: [np.zeros((5, 5, 3)), np.zeros((6, 5, 3))], {}, "different shapes"),
        (lambda files: [str(files / "ramp.mp4"), PIL.Image.new("RGB", (5, 5))], {}, "a batch must be"),
        (lambda files: {"not": "a video"}, {}, "Unsupported video input"),
        (lambda files: gray_ramp(4), {"fps": 2}, "frame rate"),
        (lambda files: gray_ramp(4), {"fps": 2, "num_frames": 2}, "mutually exclusive"),
        (lambda files: gray_ramp(4), {"fps": 0, "video_metadata": {"fps": 10}}, "fps must be positive"),
        (lambda files: gray_ramp(4), {"fps": -1.0, "video_metadata": {"fps": 10}}, "fps must be positive"),
        (lambda files: gray_ramp(4), {"num_frames": 0}, "num_frames must be a positive integer"),
        (lambda files: str(files / "ramp.mp4"), {"num_frames": 0}, "num_frames must be a positive integer"),
        (lambda files: np.zeros((2, 5, 5, 4), np.uint8), {"do_convert_rgb": False}, "has 4 channel"),
        (lambda files: np.zeros((2, 5, 5, 1), np.uint8), {"do_convert_rgb": False}, "has 1 channel"),
        (
            lambda files: [gray_ramp(2, 20, 30), gray_ramp(2, 40, 10)],
            {"size": {"shortest_edge": 28}},
            r"keeps each video's aspect ratio: use a fixed size=\{'height'",
        ),
        (lambda files: [gray_ramp(2, 20, 30), gray_ramp(2, 40, 10)], {"do_resize": False}, "set `do_resize=True`"),
    ],
)
def test_processor_rejects_unusable_input(processor, video_files, make_video, kwargs, message):
    with pytest.raises(ValueError, match=message):
        processor(make_video(video_files), return_tensors="pt", **kwargs)


def test_processor_reads_urls(processor, video_files, monkeypatch):
    from huggingface_hub.utils import httpx

    payload = (video_files / "ramp.mp4").read_bytes()
    monkeypatch.setattr(httpx, "get", lambda url, **kwargs: type("Response", (), {"content": payload})())
    out = processor("https://example.com/ramp.mp4", return_tensors="pt")
    assert out.pixel_values_videos.shape == (1, 4, 3, 28, 28)


def test_processor_round_trip_and_auto_classes(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    tiny_video_config().save_pretrained(tmp_path)
    for auto_class in (AutoVideoProcessor, AutoProcessor):
        loaded = auto_class.from_pretrained(tmp_path)
        assert type(loaded) is OmniVideoVideoProcessor
        assert loaded.num_frames == 4 and loaded.size.height == 28


# ----------------------------------------------------------------------------------------------------- pipeline


def _save_brightness_classifier(path):
    """A classifier whose logit difference is the projection of the pooled embedding on (bright - dark): it answers
    'bright' for a bright video and 'dark' for a dark one only if it really sees the frames."""
    config = tiny_video_config(num_labels=2, id2label={0: "dark", 1: "bright"}, label2id={"dark": 0, "bright": 1})
    model = OmniVideoForVideoClassification(config).eval()
    processor = OmniVideoVideoProcessor(size={"height": 28, "width": 28}, num_frames=4)
    with torch.no_grad():
        pooled = {
            level: model.model(**processor(np.full((6, 28, 28, 3), level, np.uint8), return_tensors="pt"))
            .pooler_output[0]
            for level in (30, 220)
        }
        direction = pooled[220] - pooled[30]
        midpoint = (pooled[220] + pooled[30]) / 2
        model.classifier.weight.copy_(torch.stack([-direction, direction]) * 10)
        model.classifier.bias.copy_(torch.stack([direction @ midpoint, -direction @ midpoint]) * 10)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return model, processor


def test_video_classification_pipeline_classifies_mp4_files(tmp_path):
    _save_brightness_classifier(tmp_path / "ckpt")
    write_video(tmp_path / "bright.mp4", np.full((10, 32, 32, 3), 220, np.uint8))
    write_video(tmp_path / "dark.mp4", np.full((7, 32, 32, 3), 30, np.uint8))
    classifier = pipeline("video-classification", model=str(tmp_path / "ckpt"))
    assert type(classifier.video_processor) is OmniVideoVideoProcessor
    bright = classifier(str(tmp_path / "bright.mp4"))
    assert [p["label"] for p in bright] == ["bright", "dark"]
    assert sum(p["score"] for p in bright) == pytest.approx(1.0)
    both = classifier([str(tmp_path / "dark.mp4"), str(tmp_path / "bright.mp4")], num_frames=8, top_k=1)
    assert [p[0]["label"] for p in both] == ["dark", "bright"]


def test_video_classification_pipeline_with_an_fps_processor(tmp_path):
    """A checkpoint whose processor samples at an fps: the pipeline's `num_frames` (the config's by default) replaces
    that fps instead of clashing with it."""
    OmniVideoForVideoClassification(tiny_video_config(num_labels=2)).save_pretrained(tmp_path / "ckpt")
    OmniVideoVideoProcessor(size={"height": 28, "width": 28}, fps=2.5).save_pretrained(tmp_path / "ckpt")
    write_video(tmp_path / "clip.mp4", gray_ramp(12))
    classifier = pipeline("video-classification", model=str(tmp_path / "ckpt"))
    assert classifier.video_processor.fps == 2.5
    assert classifier.preprocess(str(tmp_path / "clip.mp4"))["frame_mask"].tolist() == [[1, 1, 1, 1]]  # num_frames=4
    assert classifier.preprocess(str(tmp_path / "clip.mp4"), num_frames=6)["frame_mask"].shape == (1, 6)
    predictions = classifier(str(tmp_path / "clip.mp4"))
    assert len(predictions) == 2 and sum(p["score"] for p in predictions) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------- remote code


def test_remote_code_loads_without_the_package(tmp_path):
    model, processor = _save_brightness_classifier(tmp_path / "ckpt")
    write_video(tmp_path / "clip.mp4", (np.random.RandomState(0).rand(9, 30, 40, 3) * 255).astype(np.uint8))
    with torch.no_grad():
        expected = model(**processor(str(tmp_path / "clip.mp4"), num_frames=6, return_tensors="pt")).logits
    result = run_without_package(
        f"""
        import json, torch
        from transformers import AutoModelForVideoClassification, pipeline
        from transformers.models.auto.video_processing_auto import AutoVideoProcessor
        ckpt, clip = {str(tmp_path / "ckpt")!r}, {str(tmp_path / "clip.mp4")!r}
        model = AutoModelForVideoClassification.from_pretrained(ckpt, trust_remote_code=True).eval()
        processor = AutoVideoProcessor.from_pretrained(ckpt, trust_remote_code=True)
        with torch.no_grad():
            logits = model(**processor(clip, num_frames=6, return_tensors="pt")).logits
        classifier = pipeline("video-classification", model=ckpt, trust_remote_code=True)
        print(json.dumps({{"model": type(model).__name__, "processor": type(processor).__name__,
                          "logits": logits.tolist(), "pipeline": classifier(clip, top_k=1)[0]["label"]}}))
        """,
        tmp_path,
    )
    assert result["model"] == "OmniVideoForVideoClassification"
    assert result["processor"] == "OmniVideoVideoProcessor"
    assert max_abs_diff(torch.tensor(result["logits"]), expected) < 1e-5
    assert result["pipeline"] == ("bright" if expected[0, 1] > expected[0, 0] else "dark")

"""The audio encoder: config, waveform tokenizer + RVQ, RMLA Conformer, speaker encoder, heads, feature extractor,
processor, Auto classes, pipelines on real (espeak-ng) speech, and remote code."""

import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    AutoProcessor,
    pipeline,
)

from helpers import max_abs_diff, run_without_package, tiny_audio_config
from omni_encoders import (
    OmniAudioConfig,
    OmniAudioFeatureExtractor,
    OmniAudioForAudioClassification,
    OmniAudioForCTC,
    OmniAudioModel,
    OmniAudioProcessor,
    audio_frame_lengths,
)
from omni_encoders.hardware import flex_attention_cpu_problem
from omni_encoders.modeling_omni_audio import OmniFrameMajorConv1d, OmniMaskedGroupNorm
from omni_encoders.modeling_omni_common import OmniLatentCache


def padded_batch(lengths, seed=0):
    """Random clips of the given lengths, right-padded with noise (the mask must hide it), and each clip alone."""
    generator = torch.Generator().manual_seed(seed)
    clips = [torch.randn(length, generator=generator) for length in lengths]
    batch = torch.randn(len(lengths), max(lengths), generator=generator)  # garbage in the padding
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for index, clip in enumerate(clips):
        batch[index, : len(clip)] = clip
        mask[index, : len(clip)] = 1
    return batch, mask, clips


# ----------------------------------------------------------------------------------------------------- real speech

requires_speech_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None,
    reason="needs espeak-ng and ffmpeg (scripts/setup.sh installs them)",
)


def espeak(text: str, path, pitch: int = 50, rate: int | None = None) -> tuple[np.ndarray, int]:
    """Synthesise `text` with espeak-ng (22.05 kHz) into `path`, resampled to `rate` when given; returns the audio."""
    subprocess.run(["espeak-ng", "-p", str(pitch), "-w", str(path), text], check=True, capture_output=True)
    audio, sampling_rate = soundfile.read(path, dtype="float32")
    if rate is not None and rate != sampling_rate:
        import soxr

        audio = soxr.resample(audio, sampling_rate, rate).astype(np.float32)
        soundfile.write(path, audio, rate, subtype="PCM_16")
        audio, sampling_rate = soundfile.read(path, dtype="float32")
    return audio, sampling_rate


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (scripts/setup.sh installs it)")
    folder = tmp_path_factory.mktemp("speech")
    return {
        "hello": espeak("hello world", folder / "hello.wav"),
        "hello_path": folder / "hello.wav",
        "folder": folder,
    }


# ----------------------------------------------------------------------------------------------------- config


def test_default_config_is_the_spec_full_size():
    config = OmniAudioConfig()
    assert config.tokenizer_channels == [32, 64, 128, 256, 512, 1024]
    assert config.tokenizer_kernel_sizes == [7, 5, 5, 3, 3, 3] and config.tokenizer_strides == [2] * 6
    assert config.inputs_to_logits_ratio == 64  # 250 frames/s at 16 kHz
    assert (config.num_codebooks, config.codebook_size) == (8, 1024)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1024, 6, 8)
    assert (config.kv_lora_rank, config.conv_kernel_size, config.head_dim) == (256, 31, 128)
    assert (config.speaker_num_mel_bins, config.speaker_hidden_size, config.speaker_embedding_size) == (80, 256, 256)
    assert OmniAudioConfig(hidden_size=512).tokenizer_channels[-1] == 512


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_attention_heads": 5}, "divisible by num_attention_heads"),
        ({"num_key_value_heads": 3}, "divisible by num_key_value_heads"),
        ({"qk_rope_head_dim": 7}, "qk_rope_head_dim"),
        ({"qk_rope_head_dim": 16}, "at most head_dim"),
        ({"tokenizer_strides": [2, 2]}, "equal length"),
        ({"tokenizer_kernel_sizes": [7, 5, 5, 3, 3, 1]}, "smaller than its stride"),
        ({"tokenizer_norm_groups": 3}, "not divisible by tokenizer_norm_groups"),
        ({"use_quantizer": True, "codebook_size": 1}, "quantizer"),
        ({"conv_kernel_size": 8}, "odd"),
        ({"speaker_conv_kernel_size": 4}, "speaker_conv_kernel_size"),
        ({"pad_token_id": 40}, "CTC blank"),
        ({"ctc_loss_reduction": "max"}, "ctc_loss_reduction"),
        ({"hidden_dropout": 1.0}, "hidden_dropout"),
        ({"kv_lora_rank": 0}, "kv_lora_rank must be positive"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_audio_config(**kwargs)


def test_config_round_trip(tmp_path):
    config = tiny_audio_config(use_quantizer=True)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, OmniAudioConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()


# ----------------------------------------------------------------------------------------------------- frame lengths


def test_output_lengths_come_from_one_function():
    config = tiny_audio_config()
    model = OmniAudioModel(config).eval()
    extractor = OmniAudioFeatureExtractor()
    for num_samples in (64, 127, 128, 1000, 4096):
        expected = audio_frame_lengths(num_samples, config.inputs_to_logits_ratio)
        assert expected == num_samples // 64 == model._get_feat_extract_output_lengths(num_samples)
        inputs = extractor(np.random.randn(num_samples), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs)
        assert out.last_hidden_state.shape == (1, expected, 32) and out.frame_mask.sum() == expected
    assert audio_frame_lengths(torch.tensor([16000, 63]), 64).tolist() == [250, 0]


# ----------------------------------------------------------------------------------------------------- model


def test_outputs_hidden_states_attentions_and_tuples():
    model = OmniAudioModel(tiny_audio_config(attn_implementation="eager")).eval()
    x, mask, _ = padded_batch([1000, 700])
    with torch.no_grad():
        out = model(x, mask, output_hidden_states=True, output_attentions=True)
    frames = 1000 // 64
    assert out.last_hidden_state.shape == (2, frames, 32) and out.pooler_output.shape == (2, 32)
    assert out.frame_mask.tolist() == [[1] * frames, [1] * (700 // 64) + [0] * (frames - 700 // 64)]
    assert (out.last_hidden_state[1, 700 // 64 :] == 0).all()  # padded frames are zero
    assert len(out.hidden_states) == 1 + 2 and len(out.attentions) == 2
    assert out.attentions[0].shape == (2, 4, frames, frames)
    assert (out.attentions[0][1, :, :, 700 // 64 :] == 0).all()  # nobody attends to padding
    assert out.speaker_embeddings is None and out.audio_codes is None and out.cache is None
    as_tuple = model(x, mask, return_dict=False)
    assert torch.equal(as_tuple[0], out.last_hidden_state)


FRAME_OUTPUTS = ("frames", "codes", "frame_logits")


def _clip_outputs(model, input_values, attention_mask, speaker_features=None, speaker_mask=None):
    """The outputs of any of the three models, by name: per frame (`FRAME_OUTPUTS`) or per clip."""
    if isinstance(model, OmniAudioModel):
        out = model(
            input_values, attention_mask, speaker_features=speaker_features, speaker_attention_mask=speaker_mask
        )
        return {
            "frames": out.last_hidden_state,
            "codes": out.audio_codes.float(),
            "pooled": out.pooler_output,
            "speaker": out.speaker_embeddings,
        }
    out = model(input_values, attention_mask)
    return {"frame_logits" if isinstance(model, OmniAudioForCTC) else "logits": out.logits}


def _item(name, value, index, num_samples):
    """Clip `index` of a batched output: its valid frames for per-frame outputs."""
    return value[index, : num_samples // 64] if name in FRAME_OUTPUTS else value[index]


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("model_class", [OmniAudioModel, OmniAudioForCTC, OmniAudioForAudioClassification])
def test_padding_invariance(model_class, mode):
    """A padded batch gives, on each clip's valid frames, exactly the features of the clip run alone."""
    torch.manual_seed(0)
    config = tiny_audio_config(use_quantizer=True, num_labels=3)
    model = getattr(model_class(config), mode)()
    lengths = [3000, 1234, 640]
    x, mask, clips = padded_batch(lengths)
    mel_frames = [30, 17, 9]
    mels, mel_mask, mel_clips = padded_batch([f * 80 for f in mel_frames], seed=1)
    mels = mels.view(3, -1, 80)
    mel_mask = mel_mask[:, ::80]
    with torch.no_grad():
        batched = _clip_outputs(model, x, mask, mels, mel_mask)
        unmasked = _clip_outputs(model, x, None, mels, None)
        for index, (clip, length) in enumerate(zip(clips, lengths)):
            alone = _clip_outputs(model, clip[None], None, mel_clips[index].view(1, -1, 80), None)
            for name, value in batched.items():
                assert max_abs_diff(_item(name, value, index, length), alone[name][0]) < 1e-5, (name, index)
    # The check can fail: without the masks, the padding noise changes the outputs of the shortest clip.
    name = "speaker" if "speaker" in batched else next(iter(batched))
    assert max_abs_diff(_item(name, batched[name], 2, lengths[2]), _item(name, unmasked[name], 2, lengths[2])) > 1e-3


def test_tokenizer_at_wav2vec2_frame_rate_is_padding_invariant():
    """A 320x tokenizer (wav2vec2's 50 frames/s, as `bench_audio.py --samples-per-frame 320` builds it) maps S samples
    to S // 320 frames, and a padded batch still gives each clip its features alone."""
    torch.manual_seed(0)
    config = tiny_audio_config(tokenizer_kernel_sizes=[10, 8, 3, 3, 3, 3], tokenizer_strides=[5, 4, 2, 2, 2, 2])
    assert config.inputs_to_logits_ratio == 320
    model = OmniAudioModel(config).eval()
    lengths = [6400, 3333, 1000]
    x, mask, clips = padded_batch(lengths)
    with torch.no_grad():
        batched = model(x, attention_mask=mask).last_hidden_state
        for index, (clip, length) in enumerate(zip(clips, lengths)):
            alone = model(clip[None]).last_hidden_state
            assert alone.shape[1] == length // 320
            assert max_abs_diff(batched[index, : length // 320], alone[0]) < 1e-5, index


@pytest.mark.parametrize(
    "kernel_sizes, strides",
    [([7, 5, 5, 3, 3, 3], [2] * 6), ([10, 8, 3, 3, 3, 3], [5, 4, 2, 2, 2, 2])],  # the 64x and the 320x layouts
)
def test_tokenizer_reads_every_sample(kernel_sizes, strides):
    config = tiny_audio_config(tokenizer_kernel_sizes=kernel_sizes, tokenizer_strides=strides)
    model = OmniAudioModel(config).eval()
    waveform = torch.randn(1, 640)
    with torch.no_grad():
        features = model(waveform).last_hidden_state
        for sample in (0, 639):  # the first and the last sample reach some frame
            changed = waveform.clone()
            changed[0, sample] += 10
            assert features.shape[1] == 640 // math.prod(strides)
            assert max_abs_diff(model(changed).last_hidden_state, features) > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tokenizer_group_norm_statistics(dtype):
    """Each mode against its definition, on frame-major `[B, T, C]` features: clip statistics per (item, group) over
    the valid steps, per-frame statistics per (item, group, step) over the group's channels; the affine is per
    channel."""
    norm = OmniMaskedGroupNorm(4, 16)
    frame_norm = OmniMaskedGroupNorm(4, 16, statistics="frame")
    generator = torch.Generator().manual_seed(0)
    norm.weight.data = torch.randn(16, generator=generator)
    norm.bias.data = torch.randn(16, generator=generator)
    frame_norm.load_state_dict(norm.state_dict())
    norm.to(dtype), frame_norm.to(dtype)
    hidden = (3 * torch.randn(2, 40, 16, generator=generator) + 1).to(dtype)
    weight, bias = norm.weight.float(), norm.bias.float()
    tolerance = 1e-5 if dtype == torch.float32 else 0.1

    def normalise(groups, dims):
        mean = groups.mean(dim=dims, keepdim=True)
        variance = groups.var(dim=dims, unbiased=False, keepdim=True)
        return ((groups - mean) / torch.sqrt(variance + 1e-5)).reshape(-1, groups.shape[1], 16) * weight + bias

    groups = hidden.float().reshape(2, 40, 4, 4)  # [B, T, groups, channels per group]
    assert max_abs_diff(norm(hidden), normalise(groups, (1, 3))) < tolerance
    assert max_abs_diff(frame_norm(hidden), normalise(groups, 3)) < tolerance
    # A mask: the statistics of item 1 come from its 25 valid steps alone (what it gives without padding).
    mask = torch.ones(2, 40, 1, dtype=dtype)
    mask[1, 25:] = 0
    masked = norm(hidden * mask, mask)
    assert max_abs_diff(masked[1, :25], norm(hidden[1:, :25])[0]) < tolerance
    assert max_abs_diff(masked[0], norm(hidden[:1])[0]) < tolerance
    # Per frame, a step's output does not depend on any other step.
    changed = hidden.clone()
    changed[:, 10] += 5
    assert torch.equal(frame_norm(changed)[:, 11:], frame_norm(hidden)[:, 11:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_group_norm_statistics(dtype, monkeypatch):
    """Causal statistics: step `t` is normalised by the mean and variance of its group's channels over steps `0..t`,
    in one call, block by block, or continued from a stream's running sums; later steps never change earlier ones."""
    import omni_encoders.modeling_omni_audio as modeling
    from omni_encoders.modeling_omni_audio import OmniCausalNormState

    norm = OmniMaskedGroupNorm(4, 16, statistics="causal")
    generator = torch.Generator().manual_seed(0)
    norm.weight.data = torch.randn(16, generator=generator)
    norm.bias.data = torch.randn(16, generator=generator)
    norm.to(dtype)
    # a loudness contour on top of an offset: 20 quiet steps, then 20 four times as loud
    level = torch.tensor([1.0] * 20 + [4.0] * 20)[None, :, None]
    hidden = (level * torch.randn(2, 40, 16, generator=generator) + 1).to(dtype)
    groups = hidden.float().reshape(2, 40, 4, 4)
    expected = torch.empty_like(groups)
    for step in range(40):
        past = groups[:, : step + 1]
        mean = past.mean(dim=(1, 3), keepdim=True)
        variance = past.var(dim=(1, 3), unbiased=False, keepdim=True)
        expected[:, step] = ((groups[:, step : step + 1] - mean) / torch.sqrt(variance + 1e-5))[:, 0]
    expected = expected.reshape(2, 40, 16) * norm.weight.float() + norm.bias.float()
    tolerance = 1e-4 if dtype == torch.float32 else 0.05
    with torch.no_grad():
        whole = norm(hidden)
        assert max_abs_diff(whole, expected) < tolerance
        # The louder steps stay louder than the quiet ones before them, which per-frame statistics would flatten.
        unscaled = (whole.float() - norm.bias.float()) / norm.weight.float()
        assert unscaled[:, 20:].std() > 1.3 * unscaled[:, :20].std()
        changed = hidden.clone()
        changed[:, 25] += 5
        assert torch.equal(norm(changed)[:, :25], whole[:, :25])
        assert max_abs_diff(norm(changed)[:, 26:], whole[:, 26:]) > 0.01
        monkeypatch.setattr(modeling, "CAUSAL_NORM_BLOCK_FRAMES", 7)
        assert max_abs_diff(norm(hidden), whole) < 1e-5
        # A stream: the second call sees steps 18..39 (18..21 again, left from the first call) and continues the
        # sums of steps 0..21 that the first call counted.
        state = OmniCausalNormState()
        state.call_offset, state.count_until = 0, 22
        first = norm(hidden[:1, :30], stream=state)
        assert state.counted == 22 and state.sums.shape == (1, 2, 4, 1)
        state.call_offset, state.count_until = 18, 40
        second = norm(hidden[:1, 18:], stream=state)
        assert max_abs_diff(torch.cat([first[:, :22], second[:, 4:]], dim=1), whole[:1]) < 1e-5


def test_frame_major_convolution_is_conv1d():
    """The tokenizer's convolution on `[B, L, C]` gives `nn.Conv1d`'s output on `[B, C, L]`, transposed, and runs the
    module's hooks (`get_input_embeddings` is the first of them)."""
    conv = OmniFrameMajorConv1d(3, 8, kernel_size=5, stride=2)
    reference = torch.nn.Conv1d(3, 8, kernel_size=5, stride=2)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 41)
    assert max_abs_diff(conv(x.transpose(1, 2)), reference(x).transpose(1, 2)) < 1e-6
    model = OmniAudioModel(tiny_audio_config())
    assert isinstance(model.get_input_embeddings(), OmniFrameMajorConv1d)
    seen = []
    model.get_input_embeddings().register_forward_hook(lambda module, args, output: seen.append(output.shape))
    model(torch.randn(1, 640))
    assert seen == [(1, 320, model.config.tokenizer_channels[0])]


@pytest.mark.parametrize("in_channels, kernel, stride", [(16, 8, 4), (8, 8, 2), (1, 7, 2), (32, 5, 2)])
def test_frame_major_convolution_in_bfloat16(in_channels, kernel, stride):
    """In bfloat16 (or under bf16 CPU autocast) the tokenizer's convolutions give `Conv1d`'s float32 outputs up to bf16
    rounding, batched and at every length, including the narrow layers that oneDNN's bf16 kernels get wrong on AMX
    CPUs (16 input channels, kernel 8, stride 4, lengths divisible by 4: errors as large as the outputs)."""
    torch.manual_seed(0)
    conv = OmniFrameMajorConv1d(in_channels, 64, kernel_size=kernel, stride=stride)
    for length in (120, 121, 4000, 4003):
        x = torch.randn(2, length, in_channels)
        expected = conv(x)
        with torch.no_grad():
            with torch.autocast("cpu", dtype=torch.bfloat16):  # as in Trainer's evaluation with bf16=True
                autocast = conv(x).float()
            got = conv.to(torch.bfloat16)(x.bfloat16()).float()
        conv.float()
        assert got.shape == autocast.shape == expected.shape
        assert max_abs_diff(got, expected) < 0.02 * expected.abs().max(), length
        assert max_abs_diff(autocast, expected) < 0.02 * expected.abs().max(), length


def test_speaker_encoder_embeds_a_reference_alone():
    model = OmniAudioModel(tiny_audio_config()).eval()
    features = torch.randn(2, 25, 80)
    mask = torch.ones(2, 25, dtype=torch.long)
    mask[1, 15:] = 0
    with torch.no_grad():
        embeddings = model.get_speaker_embeddings(features, mask)
        full = model(torch.randn(2, 640), speaker_features=features, speaker_attention_mask=mask)
        alone = model.get_speaker_embeddings(features[1:, :15])
    assert embeddings.shape == (2, 12)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.equal(full.speaker_embeddings, embeddings)
    assert max_abs_diff(alone[0], embeddings[1]) < 1e-5
    assert max_abs_diff(embeddings[0], embeddings[1]) > 1e-3  # different references, different speakers
    with pytest.raises(ValueError, match=r"\[batch, frames, 80\]"):
        model.get_speaker_embeddings(torch.randn(1, 10, 40))
    with pytest.raises(ValueError, match="at least one valid mel frame"):
        model.get_speaker_embeddings(features, torch.zeros(2, 25, dtype=torch.long))
    # A left-padded or fractional mask would embed padding frames and drop real ones.
    for bad_mask in (mask.flip(-1), mask * 0.5):
        with pytest.raises(ValueError, match="speaker_attention_mask must be 1 on a prefix of each row"):
            model.get_speaker_embeddings(features, bad_mask)
    with pytest.raises(ValueError, match="no speaker encoder"):
        OmniAudioModel(tiny_audio_config(use_speaker_encoder=False)).get_speaker_embeddings(features)


def _rotate(x, positions, theta):
    """Reference RoPE on the last dim of `x [..., T, d]` for integer `positions [T]`."""
    dim = x.shape[-1]
    angles = positions[:, None].float() / theta ** (torch.arange(0, dim, 2).float() / dim)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    return x * cos + torch.cat([-x[..., dim // 2 :], x[..., : dim // 2]], -1) * sin


def test_rmla_caches_only_latents_and_matches_explicit_attention():
    """Model level: with `use_cache` every attention layer holds `kv_lora_rank + qk_rope_head_dim` values per frame
    (not the expanded K/V heads), outputs are unchanged, and the attention equals a by-hand computation from them."""
    config = tiny_audio_config(attn_implementation="eager", num_hidden_layers=2)
    model = OmniAudioModel(config).eval()
    x, mask, _ = padded_batch([2000, 1300])
    block = model.conformer_blocks[1]
    captured = {}
    block.attn.register_forward_hook(
        lambda module, args, kwargs, output: captured.update(hidden=args[0], output=output[0]), with_kwargs=True
    )
    with torch.no_grad():
        plain = model(x, mask)
        cached = model(x, mask, use_cache=True)
    assert torch.equal(plain.last_hidden_state, cached.last_hidden_state)

    cache = cached.cache
    batch, frames = plain.last_hidden_state.shape[:2]
    per_frame = config.kv_lora_rank + config.qk_rope_head_dim  # 8 + 4
    assert len(cache) == config.num_hidden_layers and cache.get_seq_length() == frames
    assert cache.memory_bytes() == config.num_hidden_layers * batch * frames * per_frame * 4
    expanded = 2 * config.num_key_value_heads * config.head_dim  # what a plain K/V cache would hold: 32
    assert per_frame < expanded

    # Explicit computation of layer 1's attention from its input.
    attn, hidden = block.attn, captured["hidden"]
    r, d_rope, heads, kv_heads, head_dim = 8, 4, 4, 2, 8
    positions = torch.arange(frames)
    compressed = hidden @ attn.kv_a_proj.weight.T
    latent = torch.nn.functional.layer_norm(
        compressed[..., :r], (r,), attn.kv_a_layernorm.weight, attn.kv_a_layernorm.bias, eps=config.layer_norm_eps
    )
    rope_key = _rotate(compressed[..., r:], positions, config.rope_theta)
    assert max_abs_diff(cache.latents[1], latent) < 1e-5 and max_abs_diff(cache.rope_keys[1], rope_key) < 1e-5

    query = (hidden @ attn.q_proj.weight.T).view(batch, frames, heads, head_dim).transpose(1, 2)
    nope = head_dim - d_rope
    query = torch.cat([query[..., :nope], _rotate(query[..., nope:], positions, config.rope_theta)], -1)
    kv = (latent @ attn.kv_b_proj.weight.T).view(batch, frames, kv_heads, head_dim - d_rope + head_dim)
    key = torch.cat([kv[..., : head_dim - d_rope], rope_key[:, :, None].expand(-1, -1, kv_heads, -1)], -1)
    value = kv[..., head_dim - d_rope :]
    key = key.transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
    value = value.transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
    scores = query @ key.transpose(-1, -2) / math.sqrt(head_dim)
    valid_keys = cached.frame_mask.bool()[:, None, None, :]
    probs = scores.masked_fill(~valid_keys, float("-inf")).softmax(-1)
    expected = (probs @ value).transpose(1, 2).reshape(batch, frames, heads * head_dim) @ attn.o_proj.weight.T
    assert max_abs_diff(captured["output"], expected) < 1e-5

    with pytest.raises(ValueError, match="does not attend"):
        model(x, mask, cache=cache)


def test_rvq_codes_decode_to_the_quantised_features_and_train_the_encoder():
    torch.manual_seed(0)
    model = OmniAudioModel(tiny_audio_config(use_quantizer=True))
    x, mask, _ = padded_batch([2000, 1000])
    out = model(x, mask, output_hidden_states=True)
    codes, quantized = out.audio_codes, out.hidden_states[0]  # hidden_states[0]: what the Conformer sees
    assert codes.shape == (2, 2000 // 64, 3) and codes.dtype == torch.long
    valid = out.frame_mask.bool()
    assert ((codes >= 0) & (codes < 16))[valid].all() and (codes[~valid] == -1).all()
    decoded = model.decode_audio_codes(codes)
    assert max_abs_diff(decoded, quantized) < 1e-5
    assert (decoded[~valid] == 0).all()

    # Each stage picks the entry nearest to the residual left by the stages before it.
    quantizer = model.waveform_tokenizer.quantizer
    features = torch.randn(1, 5, 32)
    _, stage_codes, _ = quantizer(features)
    residual = features[0]
    for stage, codebook in enumerate(quantizer.codebooks):
        nearest = torch.cdist(residual, codebook.weight).argmin(-1)
        assert torch.equal(stage_codes[0, :, stage], nearest)
        residual = residual - codebook.weight[nearest]

    # The commitment loss reaches the encoder (tokenizer convolutions) and the codebooks.
    out.commitment_loss.backward()
    assert out.commitment_loss.item() > 0
    assert model.waveform_tokenizer.conv_layers[0].conv.weight.grad.abs().sum() > 0
    assert model.waveform_tokenizer.output_proj.weight.grad.abs().sum() > 0
    assert quantizer.codebooks[0].weight.grad.abs().sum() > 0
    # The straight-through estimator passes the task gradient through the quantiser to the encoder.
    model.zero_grad()
    model(x, mask).last_hidden_state.sum().backward()
    assert model.waveform_tokenizer.output_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="3 codebooks"):
        model.decode_audio_codes(codes[..., :2])


def test_bad_inputs_raise_clear_errors():
    model = OmniAudioModel(tiny_audio_config())
    for head in (model, OmniAudioForCTC(tiny_audio_config()), OmniAudioForAudioClassification(tiny_audio_config())):
        with pytest.raises(TypeError, match="unexpected keyword argument.*'attention_masks'"):
            head(torch.randn(1, 640), attention_masks=torch.ones(1, 640))  # a misspelt mask is not ignored
    assert model(torch.randn(1, 640), token_type_ids=None).last_hidden_state.shape[1] == 10  # None carries nothing
    with pytest.raises(ValueError, match="shorter than one encoder frame"):
        model(torch.randn(1, 63))
    with pytest.raises(ValueError, match="empty batch"):
        model(torch.randn(0, 640))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        model(torch.randn(640))
    with pytest.raises(ValueError, match="one entry per sample"):
        model(torch.randn(2, 640), attention_mask=torch.ones(2, 600))
    left_padded = torch.ones(2, 640, dtype=torch.long)
    left_padded[1, :100] = 0
    with pytest.raises(ValueError, match="right padding"):
        model(torch.randn(2, 640), attention_mask=left_padded)
    too_short = torch.ones(2, 640, dtype=torch.long)
    too_short[1, 50:] = 0
    with pytest.raises(ValueError, match="at least one encoder frame"):
        model(torch.randn(2, 640), attention_mask=too_short)
    with pytest.raises(ValueError, match="does not attend"):
        cache = OmniLatentCache()
        cache.update(torch.zeros(1, 1, 8), torch.zeros(1, 1, 4), 0)
        model(torch.randn(1, 640), cache=cache)
    ctc = OmniAudioForCTC(tiny_audio_config())
    with pytest.raises(ValueError, match="vocab_size"):
        ctc(torch.randn(1, 640), labels=torch.tensor([[40]]))


@pytest.mark.parametrize("implementation", ["sdpa"])  # flex_attention agrees too, but compiles for ~30 s on CPU
def test_attention_implementations_agree_with_eager(implementation):
    torch.manual_seed(0)
    model = OmniAudioForCTC(tiny_audio_config(attn_implementation="eager")).eval()
    x, mask, _ = padded_batch([2000, 900])
    with torch.no_grad():
        expected = model(x, mask).logits
        model.set_attn_implementation(implementation)
        assert model.model.conformer_blocks[0].attn.config._attn_implementation == implementation
        valid = model.model._get_feat_extract_output_lengths(900)
        logits = model(x, mask).logits
    assert max_abs_diff(logits[0], expected[0]) < 1e-4
    assert max_abs_diff(logits[1, :valid], expected[1, :valid]) < 1e-4


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = OmniAudioForCTC(tiny_audio_config(use_quantizer=True))
    model.train()
    x, mask, _ = padded_batch([2000, 1500])
    labels = torch.tensor([[7, 8, 9, 4, 10], [11, 12, -100, -100, -100]])
    model(x, mask, labels=labels).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert all(block.gradient_checkpointing for block in model.model.conformer_blocks)
    model(x, mask, labels=labels).loss.backward()
    for name, grad in reference.items():
        assert max_abs_diff(dict(model.named_parameters())[name].grad, grad) < 1e-5, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_is_finite(dtype):
    model = OmniAudioModel(tiny_audio_config(use_quantizer=True)).to(dtype).eval()
    x, mask, _ = padded_batch([3000, 2000])
    with torch.no_grad():
        out = model(x.to(dtype), mask, speaker_features=torch.randn(2, 20, 80))
    assert out.last_hidden_state.dtype == dtype and out.speaker_embeddings.dtype == dtype
    for tensor in (out.last_hidden_state, out.pooler_output, out.speaker_embeddings, out.commitment_loss):
        assert torch.isfinite(tensor).all()


def test_ctc_loss_uses_the_frame_lengths_and_is_padding_invariant():
    torch.manual_seed(0)
    model = OmniAudioForCTC(tiny_audio_config(ctc_loss_reduction="sum")).eval()
    x, mask, clips = padded_batch([2000, 1300])
    labels = torch.tensor([[7, 8, 9, 4, 10], [11, 12, -100, -100, -100]])
    with torch.no_grad():
        out = model(x, mask, labels=labels)
        log_probs = out.logits.log_softmax(-1).transpose(0, 1)
        expected = torch.nn.functional.ctc_loss(
            log_probs, torch.tensor([7, 8, 9, 4, 10, 11, 12]), torch.tensor([2000 // 64, 1300 // 64]),
            torch.tensor([5, 2]), blank=0, reduction="sum",
        )
        alone = sum(model(clip[None], labels=label[label >= 0][None]).loss for clip, label in zip(clips, labels))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(alone.item(), rel=1e-4)


def test_padded_frames_decode_to_the_blank():
    """Greedy CTC decoding of a padded batch (what the ASR pipeline does) gives each clip its text alone, even for a
    model whose bias favours a letter over the blank (the padded frames' features are zero: their logits would be
    the bias)."""
    torch.manual_seed(0)
    model = OmniAudioForCTC(tiny_audio_config()).eval()
    with torch.no_grad():
        model.lm_head.bias[10] = 100.0
    x, mask, clips = padded_batch([2000, 1300])
    with torch.no_grad():
        batch = model(x, mask).logits.argmax(-1)
        alone = [model(clip[None]).logits.argmax(-1)[0] for clip in clips]
    assert torch.equal(batch[0], alone[0])
    frames = alone[1].shape[0]
    assert torch.equal(batch[1, :frames], alone[1]) and (batch[1, frames:] == model.config.pad_token_id).all()
    assert (alone[1] == 10).all()  # the bias wins on valid frames: the padded frames' blank is not the model's


def test_ctc_rejects_bad_labels():
    model = OmniAudioForCTC(tiny_audio_config())
    x, mask, _ = padded_batch([2000, 1300])
    for labels, message in (
        (torch.tensor([[3, -1], [4, 5]]), r"in \[0, vocab_size=.*\) or -100 .* got \[-1\]"),
        (torch.tensor([[3, 99], [4, 5]]), r"got \[99\]"),
        (torch.tensor([[3.0, 4.0], [4.0, 5.0]]), "integer character ids"),
        (torch.tensor([3, 4]), r"shape \[batch=2, target_length\]"),
    ):
        with pytest.raises(ValueError, match=message):
            model(x, mask, labels=labels)


def test_classification_loss():
    model = OmniAudioForAudioClassification(tiny_audio_config(num_labels=4))
    x, mask, _ = padded_batch([2000, 1000, 700, 640])
    labels = torch.tensor([0, 1, 2, 3])
    out = model(x, mask, labels=labels)
    assert out.logits.shape == (4, 4) and out.pooler_output.shape == (4, 32)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    quantized = OmniAudioForAudioClassification(tiny_audio_config(num_labels=4, use_quantizer=True))
    out = quantized(x, mask, labels=labels)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels) + out.aux_loss)


def test_trainer_trains_the_ctc_head_with_the_processor_as_collator(tmp_path):
    from transformers import Trainer, TrainingArguments

    processor = OmniAudioProcessor.from_characters()
    rng = np.random.RandomState(0)
    examples = [
        {
            "input_values": processor(audio=rng.randn(length), sampling_rate=16000).input_values[0],
            "labels": processor(text=text).input_ids,
        }
        for length, text in [(1500, "ab"), (1000, "c"), (2000, "abc"), (900, "b")]
    ]

    def collate(batch):
        return processor.pad(
            [{"input_values": example["input_values"]} for example in batch],
            labels=[example["labels"] for example in batch],
            return_tensors="pt",
        )

    torch.manual_seed(0)
    model = OmniAudioForCTC(tiny_audio_config())
    before = model.lm_head.weight.detach().clone()
    args = TrainingArguments(
        str(tmp_path), max_steps=3, per_device_train_batch_size=2, learning_rate=1e-3, report_to=[], use_cpu=True,
        save_strategy="no", disable_tqdm=True, logging_steps=1,
    )
    result = Trainer(model=model, args=args, train_dataset=examples, data_collator=collate).train()
    assert math.isfinite(result.training_loss)
    assert max_abs_diff(model.lm_head.weight, before) > 0
    batch = collate(examples[:2])
    assert batch["labels"].tolist()[1][1:] == [-100] and batch["attention_mask"].sum(-1).tolist() == [1500, 1000]


def test_lora_on_the_documented_projections():
    from peft import LoraConfig, get_peft_model

    model = OmniAudioForCTC(tiny_audio_config())
    targets = ["q_proj", "kv_a_proj", "kv_b_proj", "o_proj", "fc1", "fc2"]
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=targets))
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert {name.split(".")[-4] for name in trainable} == set(targets)
    x, mask, _ = padded_batch([1000, 700])
    peft_model(input_values=x, attention_mask=mask, labels=torch.tensor([[5, 6], [7, -100]])).loss.backward()


# ----------------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_and_auto_classes(tmp_path):
    model = OmniAudioForCTC(tiny_audio_config(use_quantizer=True)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCTC.from_pretrained(tmp_path).eval()
    assert type(loaded) is OmniAudioForCTC
    x, mask, _ = padded_batch([1500, 1000])
    features = torch.randn(2, 12, 80)
    with torch.no_grad():
        assert torch.equal(loaded(x, mask).logits, model(x, mask).logits)
        base = AutoModel.from_pretrained(tmp_path).eval()
        assert type(base) is OmniAudioModel
        assert torch.equal(base(x, mask).last_hidden_state, model.model(x, mask).last_hidden_state)
        assert torch.equal(base.get_speaker_embeddings(features), model.model.get_speaker_embeddings(features))
    classifier = AutoModelForAudioClassification.from_config(tiny_audio_config(num_labels=2))
    assert type(classifier) is OmniAudioForAudioClassification


# ----------------------------------------------------------------------------------------------------- extractor


@pytest.fixture
def extractor():
    return OmniAudioFeatureExtractor()


@pytest.mark.parametrize(
    "audio, batch, samples",
    [
        (np.random.RandomState(0).randn(1000).astype(np.float32), 1, 1000),
        (np.random.RandomState(0).randn(1000), 1, 1000),  # float64
        ([0.1] * 200, 1, 200),
        (torch.randn(700), 1, 700),
        ((np.random.RandomState(0).randn(1000) * 3000).astype(np.int16), 1, 1000),
        (np.random.RandomState(0).randn(3, 500), 3, 500),
        ([np.zeros(300), np.ones(500)], 2, 500),
        ([np.random.RandomState(0).randn(2, 800)], 1, 800),  # [channels, samples]
        ([np.random.RandomState(0).randn(800, 2)], 1, 800),  # [samples, channels] (soundfile)
        (np.random.RandomState(0).randn(800, 2), 1, 800),  # rows too short to be a batch: one [samples, channels]
        ({"array": np.random.RandomState(0).randn(900), "sampling_rate": 16000}, 1, 900),
        ([{"array": np.zeros(900), "sampling_rate": 16000}, {"array": np.zeros(400), "sampling_rate": 8000}], 2, 900),
    ],
)
def test_feature_extractor_accepts_common_inputs(extractor, audio, batch, samples):
    out = extractor(audio, sampling_rate=16000, return_tensors="pt")
    assert out.input_values.shape == (batch, samples) and out.input_values.dtype == torch.float32
    assert out.attention_mask.shape == (batch, samples)
    assert torch.isfinite(out.input_values).all()


def test_feature_extractor_mixes_down_and_scales_pcm(extractor):
    left, right = np.full(500, 0.5, np.float32), np.full(500, -0.1, np.float32)
    mono = extractor([np.stack([left, right])], sampling_rate=16000, do_normalize=False).input_values[0]
    assert np.allclose(mono, 0.2)
    pcm = extractor(np.full(100, 16384, np.int16), sampling_rate=16000, do_normalize=False).input_values[0]
    assert np.allclose(pcm, 0.5)
    pcm = extractor(np.full(100, 64, np.uint8), sampling_rate=16000, do_normalize=False).input_values[0]
    assert np.allclose(pcm, -0.5)
    # The same PCM as a torch tensor, a big-endian array (e.g. read from AIFF) or in a list scales alike.
    pcms = (torch.full((100,), 16384, dtype=torch.int16), np.full(100, 16384, ">i2"), [np.full(100, 16384, np.int16)])
    for pcm in pcms:
        assert np.allclose(extractor(pcm, sampling_rate=16000, do_normalize=False).input_values[0], 0.5)


def test_feature_extractor_resamples_with_soxr(extractor):
    rate = 44100
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    values = extractor(tone, sampling_rate=rate, do_normalize=False).input_values[0]
    assert len(values) == 16000
    spectrum = np.abs(np.fft.rfft(values))
    assert np.argmax(spectrum) == pytest.approx(1000, abs=2)  # 1 Hz bins: the tone stays at 1 kHz


def test_resampling_without_soxr_names_the_rate(extractor, monkeypatch):
    monkeypatch.setitem(sys.modules, "soxr", None)
    with pytest.raises(ValueError, match="44100 Hz"):
        extractor(np.zeros(4410), sampling_rate=44100)
    extractor(np.zeros(1600), sampling_rate=16000)  # no resampling needed: fine without soxr


def test_feature_extractor_normalises_valid_samples_only(extractor):
    rng = np.random.RandomState(0)
    long, short = rng.randn(2000) * 5 + 3, rng.randn(700) * 0.1 - 1
    batch = extractor([long, short], sampling_rate=16000, return_tensors="np")
    alone = extractor(short, sampling_rate=16000, return_tensors="np")
    assert batch.input_values.shape == (2, 2000) and batch.attention_mask[1].sum() == 700
    assert np.allclose(batch.input_values[1, :700], alone.input_values[0], atol=1e-6)
    assert (batch.input_values[1, 700:] == 0).all()
    valid = batch.input_values[1, :700]
    assert abs(valid.mean()) < 1e-5 and valid.std() == pytest.approx(1, abs=1e-3)
    raw = extractor(short, sampling_rate=16000, do_normalize=False).input_values[0]
    assert np.allclose(raw, short.astype(np.float32))


def test_feature_extractor_padding_and_truncation(extractor):
    clips = [np.ones(1000), np.ones(300)]
    out = extractor(clips, sampling_rate=16000, padding="max_length", max_length=1200, return_tensors="np")
    assert out.input_values.shape == (2, 1200) and out.attention_mask.sum(-1).tolist() == [1000, 300]
    out = extractor(
        clips, sampling_rate=16000, truncation=True, max_length=500, padding="max_length", return_tensors="np"
    )
    assert out.input_values.shape == (2, 500) and out.attention_mask.sum(-1).tolist() == [500, 300]
    out = extractor(clips, sampling_rate=16000, padding=False)
    assert [len(v) for v in out.input_values] == [1000, 300]
    out = extractor(clips, sampling_rate=16000, pad_to_multiple_of=64, return_tensors="np")
    assert out.input_values.shape == (2, 1024)
    with pytest.raises(ValueError, match="shorter than one encoder frame"):
        extractor(clips, sampling_rate=16000, truncation=True, max_length=40, padding="max_length")


def test_speaker_features_are_batched_and_padding_invariant(extractor):
    rng = np.random.RandomState(0)
    clips = [rng.randn(4000).astype(np.float32), rng.randn(1700).astype(np.float32)]
    batch = extractor(clips, sampling_rate=16000, return_speaker_features=True, return_tensors="pt")
    assert batch.speaker_features.shape == (2, 4000 // 160, 80)
    assert batch.speaker_attention_mask.sum(-1).tolist() == [25, 10]
    alone = extractor(clips[1], sampling_rate=16000, return_speaker_features=True, return_tensors="pt")
    assert max_abs_diff(batch.speaker_features[1, :10], alone.speaker_features[0]) < 1e-4
    assert (batch.speaker_features[1, 10:] == 0).all()
    # the log-mel of the raw clip (not of the normalised one)
    reference = extractor.speaker_mel(torch.from_numpy(clips[0]))
    assert max_abs_diff(batch.speaker_features[0], reference) < 1e-5
    unpadded = extractor(clips, sampling_rate=16000, padding=False, return_speaker_features=True)
    assert [len(f) for f in unpadded.speaker_features] == [25, 10]
    assert "speaker_features" not in extractor(clips, sampling_rate=16000)
    with pytest.raises(ValueError, match="shorter than one speaker mel frame"):
        extractor(np.zeros(100), sampling_rate=16000, return_speaker_features=True)


@pytest.mark.parametrize(
    "audio, message",
    [
        (None, "No audio"),
        ([], "No audio"),
        (np.zeros(0), "empty"),
        ([np.zeros(500), np.zeros(0)], "Clip 1 is empty"),
        (np.full(500, np.nan), "NaN or infinite"),
        (np.array([0.0] * 499 + [np.inf]), "NaN or infinite"),
        (np.zeros(63), "shorter than one encoder frame"),
        (np.zeros((2, 3, 500)), "shape"),
        ("speech.wav", "Unsupported audio input"),
        ({"path": "x.wav"}, "'array'"),
        (np.array(["a", "b"]), "dtype"),
        (np.arange(500), "dtype int64"),  # not an audio sample format
    ],
)
def test_feature_extractor_rejects_unusable_input(extractor, audio, message):
    with pytest.raises(ValueError, match=message):
        extractor(audio, sampling_rate=16000)


def test_feature_extractor_rejects_a_zero_sampling_rate(extractor):
    # 0 is not "unset": it must not fall back to 16 kHz.
    for audio, kwargs in ((np.zeros(500), {"sampling_rate": 0}), ({"array": np.zeros(500), "sampling_rate": 0}, {})):
        with pytest.raises(ValueError, match="sampling_rate must be a positive integer, got 0"):
            extractor(audio, **kwargs)


def test_feature_extractor_rejects_audio_too_short_after_resampling(extractor):
    with pytest.raises(ValueError, match="shorter than one encoder frame"):
        extractor(np.zeros(150), sampling_rate=48000)  # 50 samples at 16 kHz
    with pytest.raises(ValueError, match="sampling_rate must be a positive integer"):
        extractor(np.zeros(500), sampling_rate=-5)


def test_feature_extractor_and_processor_auto_classes(tmp_path):
    processor = OmniAudioProcessor.from_characters()
    processor.save_pretrained(tmp_path)
    tiny_audio_config().save_pretrained(tmp_path)
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is OmniAudioFeatureExtractor
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is OmniAudioProcessor
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert loaded.feature_extractor.to_dict() == processor.feature_extractor.to_dict()


# ----------------------------------------------------------------------------------------------------- processor


def test_processor_tokenizes_transcripts_and_decodes_ctc():
    processor = OmniAudioProcessor.from_characters()
    assert len(processor.tokenizer) == 32 == OmniAudioConfig().vocab_size and processor.tokenizer.pad_token_id == 0
    out = processor(
        audio=[np.random.randn(1000), np.random.randn(700)], text=["Hello world", "hi"], sampling_rate=16000,
        return_tensors="pt",
    )
    assert set(out) == {"input_values", "attention_mask", "labels"}
    vocab = processor.tokenizer.get_vocab()
    expected = [vocab[c] for c in "HELLO|WORLD"]  # case-insensitive; the space is the word delimiter
    assert out.labels[0].tolist() == expected and out.labels[1].tolist() == [vocab["H"], vocab["I"]] + [-100] * 9
    # greedy CTC output: repeats collapse, blanks (0) separate and vanish; decoded in lower case
    h, e, l, o = (vocab[c] for c in "HELO")
    frames = torch.tensor([[h, h, 0, e, l, 0, l, l, o, 0, vocab["|"], o]])
    assert processor.batch_decode(frames) == ["hello o"]
    assert processor(text="abc").input_ids == [vocab["A"], vocab["B"], vocab["C"]]
    with pytest.raises(ValueError, match="audio"):
        processor()


# ----------------------------------------------------------------------------------------------------- pipelines


@requires_speech_tools
def test_asr_pipeline_transcribes_a_wav_file(tmp_path):
    """The pipeline reads the file (ffmpeg), runs the feature extractor and the CTC model and decodes greedily: its
    text equals the processor + model run by hand on the same audio."""
    torch.manual_seed(0)
    path = tmp_path / "hello16k.wav"
    audio, rate = espeak("hello world", path, rate=16000)
    model = OmniAudioForCTC(tiny_audio_config()).eval()
    processor = OmniAudioProcessor.from_characters()
    model.save_pretrained(tmp_path / "asr")
    processor.save_pretrained(tmp_path / "asr")

    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "asr"))
    assert asr.type == "ctc" and type(asr.model) is OmniAudioForCTC
    text = asr(str(path))["text"]
    with torch.no_grad():
        logits = model(**processor(audio=audio, sampling_rate=rate, return_tensors="pt")).logits
    assert text == processor.batch_decode(logits.argmax(-1))[0]
    assert len(text) > 0  # an untrained model emits characters, so the comparison is not vacuous
    chunked = asr(str(path), chunk_length_s=0.5, stride_length_s=0.1, return_timestamps="char")
    assert isinstance(chunked["text"], str) and "chunks" in chunked


@requires_speech_tools
def test_audio_classification_pipeline_labels_wav_files(tmp_path):
    """The pipeline reads each file, extracts features and classifies: its labels and scores are those of the model run
    by hand on the same audio, for two different voices."""
    torch.manual_seed(0)
    config = tiny_audio_config(num_labels=3, id2label={0: "low", 1: "mid", 2: "high"})
    model = OmniAudioForAudioClassification(config).eval()
    model.save_pretrained(tmp_path / "clf")
    extractor = OmniAudioFeatureExtractor()
    extractor.save_pretrained(tmp_path / "clf")

    classifier = pipeline("audio-classification", model=str(tmp_path / "clf"))
    assert type(classifier.model) is OmniAudioForAudioClassification
    all_scores = []
    for pitch in (10, 90):
        audio, rate = espeak("yes", tmp_path / f"yes_{pitch}.wav", pitch=pitch, rate=16000)
        predictions = classifier(str(tmp_path / f"yes_{pitch}.wav"))
        with torch.no_grad():
            probs = model(**extractor(audio, sampling_rate=rate, return_tensors="pt")).logits.softmax(-1)[0]
        expected = sorted(zip(probs.tolist(), config.id2label.values()), reverse=True)
        assert [p["label"] for p in predictions] == [label for _, label in expected]
        assert [p["score"] for p in predictions] == pytest.approx([score for score, _ in expected], abs=1e-5)
        all_scores.append(probs)
    assert max_abs_diff(*all_scores) > 1e-4  # the two voices are told apart, so the comparison is not vacuous


# ----------------------------------------------------------------------------------------------------- remote code


def test_remote_code_loads_without_the_package(tmp_path, speech):
    model = OmniAudioForCTC(tiny_audio_config()).eval()
    processor = OmniAudioProcessor.from_characters()
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    audio, rate = speech["hello"]
    with torch.no_grad():
        inputs = processor(audio=audio, sampling_rate=rate, return_speaker_features=True, return_tensors="pt")
        logits = model(inputs.input_values, inputs.attention_mask).logits
        speaker = model.model.get_speaker_embeddings(inputs.speaker_features, inputs.speaker_attention_mask)
    result = run_without_package(
        f"""
        import json, torch, soundfile
        from transformers import AutoModelForCTC, AutoProcessor
        model = AutoModelForCTC.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True)
        audio, rate = soundfile.read({str(speech["hello_path"])!r}, dtype="float32")
        inputs = processor(audio=audio, sampling_rate=rate, return_speaker_features=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(inputs.input_values, inputs.attention_mask).logits
            speaker = model.model.get_speaker_embeddings(inputs.speaker_features, inputs.speaker_attention_mask)
        print(json.dumps({{"model": type(model).__name__, "processor": type(processor).__name__,
                          "extractor": type(processor.feature_extractor).__name__,
                          "logits": logits.tolist(), "speaker": speaker.tolist()}}))
        """,
        tmp_path,
    )
    assert result["model"] == "OmniAudioForCTC" and result["processor"] == "OmniAudioProcessor"
    assert result["extractor"] == "OmniAudioFeatureExtractor"
    assert max_abs_diff(torch.tensor(result["logits"]), logits) < 1e-5
    assert max_abs_diff(torch.tensor(result["speaker"]), speaker) < 1e-5


# ----------------------------------------------------------------------------------------------------- long audio


def chunked_config(**overrides):
    """A tiny config with chunked attention: chunks of 4 frames, 2 left chunks and 2 look-ahead frames by default."""
    kwargs = {"attention_chunk_size": 4, "attention_left_chunks": 2, "attention_right_context": 2, **overrides}
    return tiny_audio_config(**kwargs)


def streaming_config(**overrides):
    """A chunked config that can stream: no look-ahead, a causal convolution module, causal tokenizer norms."""
    kwargs = {"attention_right_context": 0, "conv_module_causal": True, "tokenizer_norm_statistics": "causal"}
    return chunked_config(**{**kwargs, **overrides})


def block_mask(num_frames, lengths, chunk_size, left_chunks, right_context):
    """The full `[B, 1, T, T]` boolean mask of chunked attention, built the obvious (quadratic) way."""
    query, key = torch.arange(num_frames)[:, None], torch.arange(num_frames)[None]
    chunk_start = query // chunk_size * chunk_size
    visible = (key >= chunk_start - left_chunks * chunk_size) & (key < chunk_start + chunk_size + right_context)
    return (visible[None] & (key[None] < torch.as_tensor(lengths)[:, None, None]))[:, None]


@pytest.mark.parametrize("left_chunks, right_context", [(0, 0), (2, 2), (1, 4)])
def test_chunked_attention_equals_attention_under_the_full_block_mask(left_chunks, right_context):
    """Chunk by chunk (queries `[B * chunks, H, C, d]` against their windows of keys) gives what eager attention with
    the full-length block mask gives, on every valid frame, with absolute rotary positions."""
    from omni_encoders.modeling_omni_common import OmniChunkedAttention

    torch.manual_seed(0)
    config = chunked_config(
        attn_implementation="eager", attention_left_chunks=left_chunks, attention_right_context=right_context
    )
    model = OmniAudioModel(config).eval()
    attn, frames, lengths = model.conformer_blocks[0].attn, 23, [23, 13]
    hidden = torch.randn(2, frames, 32)
    position_embeddings = model.rotary_emb(torch.arange(frames))
    chunks = OmniChunkedAttention.build(config, hidden, torch.tensor(lengths), 4, left_chunks, right_context)
    with torch.no_grad():
        chunked, weights = attn(hidden, position_embeddings, chunked_attention=chunks)
        mask = block_mask(frames, lengths, 4, left_chunks, right_context)
        reference, _ = attn(hidden, position_embeddings, attention_mask=mask)
    assert chunks.window == (left_chunks + 1) * 4 + right_context
    assert weights.shape == (2, 6, 4, 4, chunks.window)  # [B, chunks, H, C, window]
    for index, length in enumerate(lengths):
        assert max_abs_diff(chunked[index, :length], reference[index, :length]) < 1e-5
    # The mask matters: full attention gives something else.
    full, _ = attn(hidden, position_embeddings)
    assert max_abs_diff(full[0], reference[0]) > 1e-3


def test_one_chunk_covering_the_clip_is_full_attention():
    torch.manual_seed(0)
    full = OmniAudioModel(tiny_audio_config(attn_implementation="eager")).eval()
    chunked = OmniAudioModel(chunked_config(attn_implementation="eager", attention_chunk_size=64)).eval()
    chunked.load_state_dict(full.state_dict())
    x, mask, _ = padded_batch([3000, 1300])
    with torch.no_grad():
        assert max_abs_diff(chunked(x, mask).last_hidden_state, full(x, mask).last_hidden_state) < 1e-5


@pytest.mark.parametrize(
    "implementation", ["sdpa", pytest.param("flex_attention", marks=pytest.mark.slow)]  # flex: ~15 s to compile
)
def test_chunked_attention_implementations_agree_with_eager(implementation):
    torch.manual_seed(0)
    model = OmniAudioForCTC(chunked_config(attn_implementation="eager")).eval()
    x, mask, _ = padded_batch([2000, 900])
    if implementation == "flex_attention" and flex_attention_cpu_problem():
        with pytest.raises(ValueError, match="flex_attention"):  # this CPU's flex kernels are wrong: refused
            model.set_attn_implementation(implementation)
        return
    with torch.no_grad():
        expected = model(x, mask).logits
        model.set_attn_implementation(implementation)
        logits = model(x, mask).logits
    valid = 900 // 64
    assert max_abs_diff(logits[0], expected[0]) < 1e-4
    assert max_abs_diff(logits[1, :valid], expected[1, :valid]) < 1e-4


def test_chunked_attention_never_scores_the_whole_clip(monkeypatch):
    """Every attention call of a 10 s clip (2500 frames) scores chunks of 4 queries against windows of 14 keys."""
    from omni_encoders import modeling_omni_common

    shapes = []
    dispatch = modeling_omni_common.dispatch_attention

    def spy(module, query, key, value, attention_mask=None, **kwargs):
        shapes.append((tuple(query.shape), tuple(key.shape), tuple(attention_mask.shape)))
        return dispatch(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(modeling_omni_common, "dispatch_attention", spy)
    model = OmniAudioModel(chunked_config(attn_implementation="eager")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 160000))
    assert out.last_hidden_state.shape == (1, 2500, 32)
    assert shapes == [((625, 4, 4, 8), (625, 2, 14, 8), (625, 1, 4, 14))] * 2


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_chunked_attention_in_groups_of_chunks_equals_one_call(monkeypatch, implementation):
    """A long clip is attended a group of chunks at a time (each expanding and gathering only the keys it reads): the
    frames, the attention weights and the gradients are those of one call on all chunks, for groups that do or do not
    divide the chunks, with padding and look-ahead."""
    from omni_encoders.modeling_omni_common import OmniChunkedAttention

    torch.manual_seed(0)
    config = chunked_config(attn_implementation=implementation, attention_right_context=2)
    model = OmniAudioModel(config).eval()
    x, mask, _ = padded_batch([3000, 1700])  # 46 and 26 frames: 12 chunks of 4

    def run(group_frames):
        monkeypatch.setattr(OmniChunkedAttention, "group_frames", group_frames)
        model.zero_grad()
        out = model(x, mask, output_attentions=implementation == "eager")
        (out.last_hidden_state * mask_weights).sum().backward()
        return out, model.conformer_blocks[0].attn.q_proj.weight.grad.clone()

    mask_weights = torch.randn(2, 46, 32)
    whole, whole_grad = run(10_000)
    for group_frames in (4, 12, 20):  # groups of 1, 3 and 5 chunks
        grouped, grouped_grad = run(group_frames)
        assert max_abs_diff(grouped.last_hidden_state, whole.last_hidden_state) < 1e-5, group_frames
        assert max_abs_diff(grouped_grad, whole_grad) < 1e-4, group_frames
        if implementation == "eager":
            assert grouped.attentions[0].shape == (2, 12, 4, 4, 14)
            assert max_abs_diff(grouped.attentions[1], whole.attentions[1]) < 1e-5


@pytest.mark.parametrize("chunked_attention", [False, True])
def test_frame_chunks_at_inference_change_nothing(monkeypatch, chunked_attention):
    """At inference the blocks' frame-wise steps run a chunk of frames at a time, updating the block's residual stream
    in place: the frames, and every block's output in `hidden_states`, are those of one pass on the whole."""
    from omni_encoders import modeling_omni_common

    torch.manual_seed(0)
    config = chunked_config() if chunked_attention else tiny_audio_config()
    model = OmniAudioModel(config).eval()
    x, mask, _ = padded_batch([3000, 1700])

    def run(chunk_tokens):
        monkeypatch.setattr(modeling_omni_common, "FRAME_CHUNK_TOKENS", chunk_tokens)
        with torch.no_grad():
            return model(x, mask, output_hidden_states=True)

    whole, chunked = run(0), run(14)  # 7 frames per chunk of the batch of 2
    assert max_abs_diff(chunked.last_hidden_state, whole.last_hidden_state) < 1e-5
    for expected, got in zip(whole.hidden_states, chunked.hidden_states, strict=True):
        assert max_abs_diff(got, expected) < 1e-5


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("norm_statistics", ["clip", "causal"])
def test_chunked_attention_and_reduced_rate_are_padding_invariant(mode, norm_statistics):
    torch.manual_seed(0)
    config = chunked_config(output_downsample_rate=3, use_quantizer=True, tokenizer_norm_statistics=norm_statistics)
    model = getattr(OmniAudioModel(config), mode)()
    lengths = [3000, 1234, 640]
    x, mask, clips = padded_batch(lengths)
    with torch.no_grad():
        batched = model(x, mask)
        unmasked = model(x)
        for index, (clip, length) in enumerate(zip(clips, lengths)):
            alone = model(clip[None])
            frames = model._get_feat_extract_output_lengths(length)
            assert alone.last_hidden_state.shape[1] == frames == -(-(length // 64) // 3)
            assert batched.frame_mask[index].sum() == frames
            assert max_abs_diff(batched.last_hidden_state[index, :frames], alone.last_hidden_state[0]) < 1e-5
            assert (batched.last_hidden_state[index, frames:] == 0).all()
    assert max_abs_diff(batched.last_hidden_state[2, :4], unmasked.last_hidden_state[2, :4]) > 1e-3


def test_output_rate_reduction_pools_valid_frames_and_sets_the_lengths():
    torch.manual_seed(0)
    config = tiny_audio_config(output_downsample_rate=4)
    assert (config.tokenizer_samples_per_frame, config.inputs_to_logits_ratio) == (64, 256)
    assert audio_frame_lengths(torch.tensor([16000, 64, 63, 64 * 9]), 64, 10).tolist() == [25, 1, 0, 1]
    model = OmniAudioModel(config).eval()
    x, mask, _ = padded_batch([64 * 18, 64 * 7])
    with torch.no_grad():
        pooled = model(x, mask, output_hidden_states=True)
    frames = pooled.hidden_states[-1]  # the Conformer's output at 250 frames/s
    assert pooled.last_hidden_state.shape == (2, 5, 32) and frames.shape == (2, 18, 32)
    assert pooled.frame_mask.tolist() == [[1] * 5, [1, 1, 0, 0, 0]]
    assert max_abs_diff(pooled.last_hidden_state[0, 4], frames[0, 16:18].mean(0)) < 1e-6  # a partial last window
    assert max_abs_diff(pooled.last_hidden_state[1, 1], frames[1, 4:7].mean(0)) < 1e-6  # over valid frames only
    assert max_abs_diff(pooled.pooler_output[1], frames[1, :7].mean(0)) > 0  # the clip mean weighs windows equally
    with pytest.raises(ValueError, match="output_downsample_rate must be >= 1"):
        tiny_audio_config(output_downsample_rate=0)


def test_ctc_and_classification_heads_at_the_reduced_rate():
    torch.manual_seed(0)
    config = chunked_config(output_downsample_rate=2, ctc_loss_reduction="sum", num_labels=3)
    model = OmniAudioForCTC(config).eval()
    x, mask, clips = padded_batch([2000, 1300])
    labels = torch.tensor([[7, 8, 9, 4, 10], [11, 12, -100, -100, -100]])
    with torch.no_grad():
        out = model(x, mask, labels=labels)
        lengths = model.model._get_feat_extract_output_lengths(torch.tensor([2000, 1300]))
        assert lengths.tolist() == [16, 10] and out.logits.shape[1] == 16
        expected = torch.nn.functional.ctc_loss(
            out.logits.log_softmax(-1).transpose(0, 1), torch.tensor([7, 8, 9, 4, 10, 11, 12]), lengths,
            torch.tensor([5, 2]), blank=0, reduction="sum",
        )
        alone = sum(model(clip[None], labels=label[label >= 0][None]).loss for clip, label in zip(clips, labels))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(alone.item(), rel=1e-4)
    assert (out.logits[1, 10:].argmax(-1) == config.pad_token_id).all()
    classifier = OmniAudioForAudioClassification(config)
    loss = classifier(x, mask, labels=torch.tensor([0, 2])).loss
    loss.backward()
    assert math.isfinite(loss.item()) and classifier.model.conformer_blocks[0].attn.q_proj.weight.grad.abs().sum() > 0


def test_asr_pipeline_chunks_long_audio_at_the_reduced_rate(tmp_path):
    """transformers' chunked ASR (chunk_length_s / stride_length_s) aligns its chunks to `inputs_to_logits_ratio`
    (here 4 x 64 samples) and runs with the native chunked attention too."""
    torch.manual_seed(0)
    model = OmniAudioForCTC(chunked_config(output_downsample_rate=4)).eval()
    model.save_pretrained(tmp_path)
    OmniAudioProcessor.from_characters().save_pretrained(tmp_path)
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path))
    audio = np.random.RandomState(0).randn(16000 * 6).astype(np.float32)
    whole = asr(audio.copy())["text"]
    chunked = asr(audio.copy(), chunk_length_s=2.0, stride_length_s=0.5)["text"]
    assert isinstance(chunked, str) and len(whole) > 0 and len(chunked) > 0


@pytest.mark.parametrize("rate, norm_statistics", [(1, "causal"), (3, "causal"), (1, "frame")])
def test_stream_equals_the_offline_chunked_forward(rate, norm_statistics):
    """The frames `encode_stream` yields, concatenated, are those of the offline forward on the whole audio, whatever
    the piece sizes; frames come out before the stream ends, and all that is kept of past chunks is the latent cache
    of the left chunks (`kv_lora_rank + qk_rope_head_dim` values per frame and layer)."""
    from omni_encoders.modeling_omni_audio import OmniAudioStreamState

    torch.manual_seed(0)
    config = streaming_config(
        output_downsample_rate=rate, use_quantizer=True, tokenizer_norm_statistics=norm_statistics
    )
    model = OmniAudioModel(config).eval()
    audio = torch.randn(64 * 41 + 30) * torch.linspace(0.2, 3, 64 * 41 + 30)  # louder and louder
    with torch.no_grad():
        offline = model(audio[None]).last_hidden_state
    for piece_size in (50, 333, 64 * 41 + 30):
        state = OmniAudioStreamState()
        outputs = list(model.encode_stream(audio.split(piece_size), state=state))
        streamed = torch.cat(outputs, dim=1)
        assert streamed.shape == offline.shape, piece_size
        assert max_abs_diff(streamed, offline) < 1e-4, piece_size
        if piece_size == 50:
            assert len(outputs) > 5  # frames as chunks complete, not at the end
    kept_frames = config.attention_left_chunks * config.attention_chunk_size  # 8
    assert len(state.cache) == 2 and state.cache.get_seq_length() == kept_frames
    per_frame = config.kv_lora_rank + config.qk_rope_head_dim
    assert state.cache.memory_bytes() == config.num_hidden_layers * kept_frames * per_frame * 4
    assert state.samples.shape[0] < 64 * 4  # the tokenizer keeps its receptive field, not the audio


def test_ctc_stream_logits_equal_the_offline_logits():
    """Streaming recognition: `OmniAudioForCTC.stream_logits` yields, piece by piece, the offline forward's logits."""
    torch.manual_seed(0)
    model = OmniAudioForCTC(streaming_config()).eval()
    audio = torch.randn(64 * 30)
    with torch.no_grad():
        offline = model(audio[None]).logits
    pieces = list(model.stream_logits(audio.split(100)))
    assert len(pieces) > 1 and pieces[0].shape[-1] == model.config.vocab_size
    assert max_abs_diff(torch.cat(pieces, dim=1), offline) < 1e-4


def test_stream_frames_arrive_within_a_chunk_of_audio():
    model = OmniAudioModel(streaming_config()).eval()
    pieces = iter(torch.randn(64 * 40).split(64))
    first = next(model.encode_stream(pieces))
    consumed = 40 - len(list(pieces))
    assert first.shape == (1, 4, 32)
    assert consumed <= 4 + 2  # one chunk of 4 frames, plus the tokenizer's look-ahead (71 samples)


def test_chunked_attention_and_streaming_configs_are_validated():
    for kwargs, message in (
        ({"attention_chunk_size": 0}, "attention_chunk_size must be a positive"),
        ({"attention_chunk_size": 4, "attention_left_chunks": -1}, "attention_left_chunks must be >= 0"),
        ({"attention_chunk_size": 4, "attention_right_context": 5}, r"attention_right_context must be in \[0, "),
        ({"tokenizer_norm_statistics": "batch"}, "tokenizer_norm_statistics"),
    ):
        with pytest.raises(ValueError, match=message):
            tiny_audio_config(**kwargs)
    assert tiny_audio_config().attention_chunk_size is None  # full attention stays the default
    for config, missing in (
        (tiny_audio_config(), "attention_chunk_size"),
        (chunked_config(), "attention_right_context=0"),
        (streaming_config(conv_module_causal=False), "conv_module_causal=True"),
        (streaming_config(tokenizer_norm_statistics="clip"), "tokenizer_norm_statistics"),
    ):
        with pytest.raises(ValueError, match=missing):
            next(OmniAudioModel(config).encode_stream([torch.randn(640)]))
    model = OmniAudioModel(streaming_config())
    with pytest.raises(ValueError, match="1-D waveform"):
        next(model.encode_stream([torch.randn(2, 640)]))
    with pytest.raises(ValueError, match="shorter than one encoder frame"):
        list(model.encode_stream([torch.randn(30)]))


def test_tokenizer_convolutions_train_in_float32_under_cpu_autocast():
    """PyTorch 2.13's oneDNN bfloat16 conv1d on AMX CPUs now and then returns NaN weight gradients with several threads:
    under CPU autocast the tokenizer's convolutions run in float32 when their gradient is wanted, in bf16 otherwise."""
    model = OmniAudioModel(tiny_audio_config())
    conv = model.waveform_tokenizer.conv_layers[1].conv
    dtypes = []
    conv.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    audio = torch.randn(2, 4000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(audio).last_hidden_state.float().sum().backward()
        with torch.no_grad():
            model(audio)
    assert dtypes == [torch.float32, torch.bfloat16]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

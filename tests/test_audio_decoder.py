"""The audio decoder (text to speech): config, MAS, length regulator, model, vocoder integration, processor, Auto
classes, pipeline, remote code and learning on real speech."""

import io
import itertools
import json
import shutil
import subprocess
from functools import partial

import numpy as np
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForTextToWaveform,
    AutoProcessor,
    AutoTokenizer,
    TrainingArguments,
    pipeline,
)

from helpers import max_abs_diff, run_without_package, tiny_audio_decoder_config
from omni_encoders import (
    OmniAudioDecoderCollator,
    OmniAudioDecoderConfig,
    OmniAudioDecoderFeatureExtractor,
    OmniAudioDecoderModel,
    OmniAudioDecoderProcessor,
    OmniAudioDecoderTokenizer,
    length_regulate,
    monotonic_alignment_search,
)
from omni_encoders.modeling_omni_audio_decoder import (
    _mas_kernel,
    _monotonic_alignment_search_kernel,
    _monotonic_alignment_search_torch,
    _sequence_conv1d,
)
from omni_encoders.hardware import flex_attention_cpu_problem
from omni_encoders.modeling_omni_common import OmniMelSpectrogram
from omni_encoders.modeling_omni_vocoder import init_vocoder_weights


def tiny_model(config: OmniAudioDecoderConfig | None = None) -> OmniAudioDecoderModel:
    """A tiny model whose vocoder starts at speech-like amplitude. HiFi-GAN's init (std 0.01) suits 512 channels; a
    32-channel vocoder would start at ~1e-7, below the STFT loss's magnitude floor, and get no gradient from it."""
    model = OmniAudioDecoderModel(config or tiny_audio_decoder_config())
    model.vocoder.apply(partial(init_vocoder_weights, std=0.1))
    return model


def tiny_processor(config: OmniAudioDecoderConfig) -> OmniAudioDecoderProcessor:
    feature_extractor = OmniAudioDecoderFeatureExtractor.from_model_config(config)
    return OmniAudioDecoderProcessor(feature_extractor, OmniAudioDecoderTokenizer())


def text_batch(config=None, texts=("hello world", "hi there")):
    processor = tiny_processor(config or tiny_audio_decoder_config())
    return processor(text=list(texts), return_tensors="pt")


# ----------------------------------------------------------------------------------------------------- config


def test_default_config_is_the_spec_full_size():
    config = OmniAudioDecoderConfig()
    assert (config.hidden_size, config.encoder_layers, config.decoder_layers) == (1024, 4, 4)
    assert (config.n_mels, config.sampling_rate, config.hop_length) == (80, 16000, 256)
    assert (config.num_speakers, config.speaker_embedding_size, config.kv_lora_rank) == (256, 256, 256)
    assert config.vocoder_upsample_rates == [8, 8, 2, 2] and config.vocoder_initial_channels == 512
    assert config.vocoder_resblock_kernel_sizes == [3, 7, 11]
    assert config.vocoder_resblock_dilation_sizes == [[1, 3, 5]] * 3
    assert config.vocab_size == len(OmniAudioDecoderTokenizer())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hop_length": 128}, "product of vocoder_upsample_rates"),
        ({"vocoder_upsample_rates": [8, 8, 4], "hop_length": 256}, "same length"),
        # Settings only the vocoder used to reject, at model construction: now the config does.
        ({"vocoder_upsample_kernel_sizes": [15, 16, 4, 4]}, "kernel - rate even"),
        ({"vocoder_resblock_kernel_sizes": [4], "vocoder_resblock_dilation_sizes": [[1]]}, "odd"),
        ({"vocoder_resblock_dilation_sizes": [[0]]}, "dilations >= 1"),
        ({"num_attention_heads": 3}, "divisible by num_key_value_heads"),
        ({"qk_rope_head_dim": 5}, "qk_rope_head_dim"),
        ({"ffn_kernel_size": 4}, "odd"),
        ({"hidden_dropout": 1.0}, "hidden_dropout"),
        ({"n_fft": 128}, "n_fft"),
        ({"f_max": 9000.0}, "f_max"),
        ({"pad_token_id": 99}, "pad_token_id"),
        ({"vocoder_resblock_dilation_sizes": [[1], [3]]}, "same length"),
        ({"mel_loss_weight": -1.0}, "mel_loss_weight"),
        ({"alignment_prior_scale": -1.0}, "alignment_prior_scale"),
        ({"vocoder_initializer_range": 0.0}, "vocoder_initializer_range"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_audio_decoder_config(**kwargs)


def test_config_round_trip(tmp_path):
    config = tiny_audio_decoder_config(num_speakers=7)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, OmniAudioDecoderConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()


# ----------------------------------------------------------------------------------------------------- alignment


def _path_score(log_likelihood: torch.Tensor, durations: torch.Tensor) -> float:
    """Score of the path given by `durations` on one item's `[tokens, frames]` matrix."""
    tokens = torch.repeat_interleave(torch.arange(len(durations)), durations)
    return log_likelihood[tokens, torch.arange(len(tokens))].double().sum().item()


def _brute_force_best_score(log_likelihood: torch.Tensor) -> float:
    """Best monotonic path by enumerating every split of the frames into one non-empty run per token."""
    num_tokens, num_frames = log_likelihood.shape
    best = -float("inf")
    for cuts in itertools.combinations(range(1, num_frames), num_tokens - 1):
        bounds = (0, *cuts, num_frames)
        durations = torch.tensor([bounds[i + 1] - bounds[i] for i in range(num_tokens)])
        best = max(best, _path_score(log_likelihood, durations))
    return best


def _implementations():
    implementations = {"torch": _monotonic_alignment_search_torch}
    kernel = _mas_kernel()
    if kernel is not None:
        implementations["kernel"] = lambda *args: _monotonic_alignment_search_kernel(kernel, *args)
    return implementations


@pytest.mark.parametrize("implementation", ["torch", "kernel"])
def test_mas_finds_the_optimal_monotonic_path(implementation):
    if implementation not in _implementations():
        pytest.skip("no C compiler on this machine: only the PyTorch implementation runs")
    search = _implementations()[implementation]
    generator = torch.Generator().manual_seed(0)
    for trial in range(12):
        num_tokens, num_frames = 5, 9
        log_likelihood = torch.randn(3, num_tokens, num_frames, generator=generator) * 3
        token_lengths = torch.randint(1, num_tokens + 1, (3,), generator=generator)
        frame_lengths = torch.maximum(torch.randint(1, num_frames + 1, (3,), generator=generator), token_lengths)
        token_lengths[0], frame_lengths[0] = num_tokens, num_frames  # one item uses the whole matrix
        # Padded tokens carry -inf (as the aligner's log-softmax gives): they must not matter.
        padded = torch.arange(num_tokens)[None, :, None] >= token_lengths[:, None, None]
        log_likelihood = log_likelihood.masked_fill(padded, -torch.inf)
        durations = search(log_likelihood, token_lengths, frame_lengths)
        for b in range(3):
            n, t = int(token_lengths[b]), int(frame_lengths[b])
            item = durations[b]
            assert (item[:n] >= 1).all() and (item[n:] == 0).all(), (trial, b, item)
            assert int(item.sum()) == t  # every frame assigned to exactly one token
            best = _brute_force_best_score(log_likelihood[b, :n, :t])
            assert _path_score(log_likelihood[b, :n, :t], item[:n]) == pytest.approx(best, abs=1e-4), (trial, b)


def test_mas_implementations_agree_on_a_large_batch():
    implementations = _implementations()
    log_probs = torch.randn(6, 300, 40).log_softmax(-1)  # [B, frames, tokens], as the aligner gives them
    token_lengths = torch.tensor([40, 33, 12, 1, 40, 25])
    frame_lengths = torch.tensor([300, 250, 12, 7, 41, 299])
    view = log_probs.transpose(1, 2)
    scores = {}
    for name, search in implementations.items():
        durations = search(view, token_lengths, frame_lengths)
        assert torch.equal(durations.sum(-1), frame_lengths)
        scores[name] = [_path_score(view[b, : token_lengths[b]], durations[b, : token_lengths[b]]) for b in range(6)]
    public = monotonic_alignment_search(view, token_lengths, frame_lengths)
    assert torch.equal(public.sum(-1), frame_lengths)
    for name in scores:
        assert scores[name] == pytest.approx(scores["torch"], abs=1e-3)


def test_mas_every_frame_belongs_to_exactly_one_token():
    log_likelihood = torch.randn(2, 6, 20)
    durations = monotonic_alignment_search(log_likelihood, torch.tensor([6, 4]), torch.tensor([20, 15]))
    _, frame_mask, token_index = length_regulate(torch.zeros(2, 6, 1), durations, 20)
    hard = torch.nn.functional.one_hot(token_index, 6) * frame_mask[..., None]  # [B, frames, tokens]
    assert torch.equal(hard.sum(-1), frame_mask.long())  # one token per valid frame, none on padding
    assert (token_index[:, 1:] - token_index[:, :-1] >= 0).all()  # monotonic
    assert torch.equal(hard.sum(1), durations)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_mas_rejects_impossible_lengths(use_kernel, monkeypatch):
    if not use_kernel:
        monkeypatch.setattr("omni_encoders.modeling_omni_audio_decoder._mas_kernel", lambda: None)
    with pytest.raises(ValueError, match="1 <= tokens <= frames"):
        monotonic_alignment_search(torch.randn(1, 5, 4))
    with pytest.raises(ValueError, match="1 <= tokens <= frames"):
        monotonic_alignment_search(torch.randn(2, 5, 9), torch.tensor([5, 0]), torch.tensor([9, 9]))
    with pytest.raises(ValueError, match="1 <= tokens <= frames"):
        monotonic_alignment_search(torch.randn(2, 5, 9), torch.tensor([5, 5]), torch.tensor([9, 10]))
    with pytest.raises(ValueError, match=r"\[batch, tokens, frames\]"):
        monotonic_alignment_search(torch.randn(5, 4))


def test_alignment_prior_is_the_beta_binomial_distribution():
    from scipy.stats import betabinom

    from omni_encoders.modeling_omni_audio_decoder import beta_binomial_log_prior

    token_lengths, frame_lengths = torch.tensor([4, 2]), torch.tensor([7, 3])
    prior = beta_binomial_log_prior(token_lengths, frame_lengths, 4, 7, scaling=0.7)
    for b in range(2):
        n, frames = int(token_lengths[b]) - 1, int(frame_lengths[b])
        for j in range(frames):
            expected = betabinom(n, 0.7 * (j + 1), 0.7 * (frames - j)).logpmf(np.arange(n + 1))
            assert np.allclose(prior[b, j, : n + 1].numpy(), expected, atol=1e-4)
        assert (prior[b, frames:] == 0).all() and (prior[b, :, n + 1 :] == 0).all()


def test_length_regulator_repeats_each_token_exactly():
    hidden = torch.randn(3, 4, 5)
    durations = torch.tensor([[2, 0, 3, 1], [1, 1, 0, 0], [4, 2, 2, 1]])
    frames, frame_mask, token_index = length_regulate(hidden, durations)
    assert frames.shape == (3, 9, 5) and frame_mask.sum(-1).tolist() == [6, 2, 9]
    for b in range(3):
        expected = torch.repeat_interleave(hidden[b], durations[b], dim=0)
        assert torch.equal(frames[b, : len(expected)], expected)
        assert (frames[b, len(expected):] == 0).all()
    # A fixed length pads or cuts.
    assert length_regulate(hidden, durations, num_frames=12)[0].shape == (3, 12, 5)
    with pytest.raises(ValueError, match="durations"):
        length_regulate(hidden, durations[:, :3])


# ----------------------------------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_model().eval()


def test_generate_gives_256_samples_per_frame(model):
    inputs = text_batch()
    out = model.generate(**inputs, speaker_ids=torch.tensor([0, 3]))
    assert out.mel.shape[0] == 2 and out.mel.shape[-1] == 20
    assert out.waveform.shape == (2, out.mel.shape[1] * 256)
    assert torch.equal(out.waveform_lengths, out.mel_lengths * 256)
    assert torch.equal(out.mel_lengths, out.durations.sum(-1))
    assert (out.waveform.abs() <= 1).all()
    short = int(out.waveform_lengths.min())
    item = int(out.waveform_lengths.argmin())
    assert (out.waveform[item, short:] == 0).all()
    # The vocoder alone: frames x 256 samples.
    assert model.vocoder(torch.randn(1, 7, 20)).shape == (1, 7 * 256)


def test_streaming_equals_the_full_decode(model):
    inputs = text_batch(texts=("streaming speech synthesis", "ok"))
    full = model.generate(**inputs, speaker_ids=torch.tensor([1, 2])).waveform
    chunks = list(model.generate_stream(**inputs, speaker_ids=torch.tensor([1, 2]), chunk_frames=5))
    assert len(chunks) > 1 and all(chunk.shape[1] <= 5 * 256 for chunk in chunks)
    assert max_abs_diff(torch.cat(chunks, dim=1), full) < 1e-5


def test_weight_norm_removal_keeps_the_output(model):
    inputs = text_batch()
    reference = model.generate(**inputs).waveform
    model.vocoder.remove_weight_norm()
    try:
        assert max_abs_diff(model.generate(**inputs).waveform, reference) < 1e-5
    finally:
        model.vocoder.apply_weight_norm()


def test_speakers_condition_the_speech(model):
    inputs = text_batch(texts=("same text", "same text"))
    by_id = model.generate(**inputs, speaker_ids=torch.tensor([0, 1]))
    assert max_abs_diff(by_id.mel[0], by_id.mel[1]) > 1e-4
    vector = model.speaker_table.weight[:2]
    by_vector = model.generate(**inputs, speaker_embeddings=vector)
    assert max_abs_diff(by_vector.waveform, by_id.waveform) < 1e-6  # a table row is just a stored speaker vector
    one_vector = model.generate(**inputs, speaker_embeddings=vector[0])  # one vector for the whole batch
    assert max_abs_diff(one_vector.mel[0], one_vector.mel[1]) < 1e-6


def test_inputs_embeds_match_input_ids(model):
    inputs = text_batch()
    from_ids = model.generate(**inputs)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    from_embeds = model.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    assert torch.equal(from_embeds.durations, from_ids.durations)
    assert max_abs_diff(from_embeds.waveform, from_ids.waveform) < 1e-6


def test_vocoder_initializer_range_sets_how_loud_a_fresh_vocoder_starts(tmp_path):
    mel = torch.randn(2, 16, 20) - 5
    torch.manual_seed(0)
    hifi_gan = OmniAudioDecoderModel(tiny_audio_decoder_config())  # std 0.01: a 32-channel vocoder starts silent
    assert hifi_gan.vocoder(mel).pow(2).mean().sqrt() < 1e-5
    torch.manual_seed(0)
    wider = OmniAudioDecoderModel(tiny_audio_decoder_config(vocoder_initializer_range=0.1))
    assert 0.01 < wider.vocoder(mel).pow(2).mean().sqrt() < 1
    # The acoustic model's initialisation does not depend on it.
    assert torch.equal(wider.mel_proj.weight, hifi_gan.mel_proj.weight)
    wider.save_pretrained(tmp_path)
    loaded = OmniAudioDecoderModel.from_pretrained(tmp_path)
    assert loaded.config.vocoder_initializer_range == 0.1
    assert max_abs_diff(loaded.vocoder(mel), wider.vocoder(mel)) < 1e-6


def test_speed_scales_the_durations():
    config = tiny_audio_decoder_config()
    model = OmniAudioDecoderModel(config).eval()
    with torch.no_grad():  # predict about 6 frames per token
        model.duration_predictor.linear.bias.fill_(float(np.log(7.0)))
    inputs = text_batch(config, texts=("a short sentence",))
    normal = model.generate(**inputs)
    fast = model.generate(**inputs, speed=2.0)
    slow = model.generate(**inputs, speed=0.5)
    assert fast.mel_lengths.item() < normal.mel_lengths.item() < slow.mel_lengths.item()
    expected = torch.round(torch.expm1(normal.log_durations) / 2.0).long().clamp(min=1)
    assert torch.equal(fast.durations, expected)
    assert fast.waveform.shape[1] == fast.mel_lengths.item() * 256


def test_padded_batch_equals_each_item_alone(model):
    texts = ("a much longer sentence than the other", "short")
    batch = model.generate(**text_batch(texts=texts))
    streamed = torch.cat(list(model.generate_stream(**text_batch(texts=texts), chunk_frames=5)), dim=1)
    for index, text in enumerate(texts):
        alone = model.generate(**text_batch(texts=(text,)))
        frames, samples = int(alone.mel_lengths[0]), int(alone.waveform_lengths[0])
        assert int(batch.mel_lengths[index]) == frames and int(batch.waveform_lengths[index]) == samples
        assert max_abs_diff(batch.mel[index, :frames], alone.mel[0]) < 1e-5
        scale = alone.waveform.abs().max()
        assert max_abs_diff(batch.waveform[index, :samples], alone.waveform[0]) < 1e-5 * scale
        assert max_abs_diff(streamed[index, :samples], alone.waveform[0]) < 1e-5 * scale
        assert not batch.waveform[index, samples:].any() and not streamed[index, samples:].any()


def _training_batch(config, batch_size=2, frames=(40, 28), tokens=(9, 6)):
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(2, config.vocab_size, (batch_size, max(tokens)), generator=generator)
    attention_mask = (torch.arange(max(tokens))[None] < torch.tensor(tokens)[:, None]).long()
    labels = torch.randn(batch_size, max(frames), config.n_mels, generator=generator) - 4
    labels_attention_mask = (torch.arange(max(frames))[None] < torch.tensor(frames)[:, None]).long()
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "labels_attention_mask": labels_attention_mask,
        "pitch_labels": 200 * torch.rand(batch_size, max(frames), generator=generator).clamp(min=0.3).sub(0.3),
        "energy_labels": torch.rand(batch_size, max(frames), generator=generator) * 20,
        "waveforms": torch.randn(batch_size, max(frames) * 256, generator=generator) * 0.1,
        "speaker_ids": torch.tensor([0, 2]),
    }


def test_training_forward_returns_the_loss_and_its_parts():
    config = tiny_audio_decoder_config(pitch_loss_weight=0.5, vocoder_loss_weight=2.0)
    model = tiny_model(config).train()
    batch = _training_batch(config)
    out = model(**batch)
    parts = {
        "mel": out.mel_loss, "duration": out.duration_loss, "pitch": out.pitch_loss, "energy": out.energy_loss,
        "alignment": out.alignment_loss, "vocoder": out.vocoder_loss,
    }
    assert all(value is not None and torch.isfinite(value) for value in parts.values()), parts
    expected = sum(getattr(config, f"{name}_loss_weight") * value for name, value in parts.items())
    assert torch.allclose(out.loss, expected)
    assert out.waveform is None
    assert torch.equal(out.durations.sum(-1), batch["labels_attention_mask"].sum(-1))  # MAS durations
    assert (out.durations[0, :9] >= 1).all() and (out.durations[1, 6:] == 0).all()
    assert out.mel.shape == batch["labels"].shape
    assert out.alignment_log_probs.shape == (2, 40, 9)
    assert out.waveform_segment.shape == out.target_waveform_segment.shape == (2, 4 * 256)
    out.loss.backward()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert without_grad == [], without_grad
    # A silent target segment keeps the vocoder loss finite and of the usual size (batch-level spectral convergence).
    silent = dict(batch, waveforms=torch.cat([batch["waveforms"][:1], torch.zeros_like(batch["waveforms"][1:])]))
    assert model(**silent).vocoder_loss < 20
    # Optional targets: without pitch, energy and waveforms those parts are skipped.
    minimal = model(**{k: v for k, v in batch.items() if k not in ("pitch_labels", "energy_labels", "waveforms")})
    assert minimal.pitch_loss is None and minimal.energy_loss is None and minimal.vocoder_loss is None
    assert torch.isfinite(minimal.loss)
    # Without the alignment prior MAS still gives valid durations.
    no_prior = tiny_model(tiny_audio_decoder_config(alignment_prior_scale=0.0))(**batch)
    assert torch.equal(no_prior.durations.sum(-1), batch["labels_attention_mask"].sum(-1))


def test_outputs_hidden_states_attentions_and_tuples(model):
    model.set_attn_implementation("eager")
    inputs = text_batch()
    out = model(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == (1 + 1) + (1 + 1)  # block inputs + final, for encoder and decoder
    assert len(out.attentions) == 2 and out.attentions[0].shape[:2] == (2, 4)
    as_tuple = model(**inputs, return_dict=False)
    assert torch.equal(as_tuple[0], out.waveform)  # the waveform comes first (pipelines read [0])
    model.set_attn_implementation("sdpa")


def test_eager_and_sdpa_agree():
    torch.manual_seed(0)
    model = OmniAudioDecoderModel(tiny_audio_decoder_config(attn_implementation="eager")).eval()
    inputs = text_batch(texts=("attention implementations agree", "yes"))
    batch = _training_batch(model.config)
    with torch.no_grad():
        expected = model.generate(**inputs)
        torch.manual_seed(0)  # the same random vocoder segment
        expected_train = model(**batch)
        model.set_attn_implementation("sdpa")
        actual = model.generate(**inputs)
        torch.manual_seed(0)
        actual_train = model(**batch)
    assert torch.equal(actual.durations, expected.durations)
    assert max_abs_diff(actual.mel, expected.mel) < 1e-4
    assert max_abs_diff(actual_train.loss, expected_train.loss) < 1e-4


def test_flex_attention_agrees_with_eager():
    torch.manual_seed(0)
    model = tiny_model(tiny_audio_decoder_config(attn_implementation="eager")).eval()
    inputs = text_batch(texts=("flex attention", "ok"))
    if flex_attention_cpu_problem():
        with pytest.raises(ValueError, match="flex_attention"):  # this CPU's flex kernels are wrong: refused
            model.set_attn_implementation("flex_attention")
        return
    with torch.no_grad():  # flex attention has no CPU backward
        expected = model.predict_mel(**inputs)
        model.set_attn_implementation("flex_attention")
        actual = model.predict_mel(**inputs)
    assert torch.equal(actual.durations, expected.durations)
    assert max_abs_diff(actual.mel, expected.mel) < 1e-4


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = tiny_model().train()
    batch = _training_batch(model.config)
    batch.pop("waveforms")  # the vocoder segment is random: keep the comparison deterministic
    model(**batch).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.encoder_layers)
    model(**batch).loss.backward()
    for name, grad in reference.items():
        assert max_abs_diff(dict(model.named_parameters())[name].grad, grad) < 1e-5, name


def test_lora_on_the_documented_projections():
    from peft import LoraConfig, get_peft_model

    model = tiny_model()
    targets = ["q_proj", "kv_a_proj", "kv_b_proj", "o_proj", "ffn.conv1", "ffn.conv2"]
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=targets))
    batch = _training_batch(model.config)
    peft_model(**batch).loss.backward()
    trained = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name for name in trained)
    assert {target.split(".")[-1] for target in targets} <= {name.split(".")[-4] for name in trained}
    assert all(dict(peft_model.named_parameters())[name].grad is not None for name in trained)


@pytest.mark.parametrize("kernel_size", [1, 5])
def test_feed_forward_convolution_as_matmul_equals_the_convolution(kernel_size):
    conv = torch.nn.Conv1d(6, 10, kernel_size, padding=kernel_size // 2)
    x = torch.randn(2, 7, 6)
    expected = conv(x.transpose(1, 2)).transpose(1, 2)
    with torch.no_grad():  # the unfolded matrix product
        torch.testing.assert_close(_sequence_conv1d(conv, x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_sequence_conv1d(conv, x), expected)  # with autograd: the convolution (or, k=1, linear)


def test_lora_adapters_apply_at_inference_too():
    from peft import LoraConfig, get_peft_model

    model = tiny_model().eval()
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "speaker_ids": torch.tensor([1])}
    with torch.no_grad():
        base = model.generate(**batch).waveform
        peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["ffn.conv1", "ffn.conv2"]))
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)  # fresh LoRA is a no-op (B = 0): make it change the output
        adapted = peft_model.base_model.model.generate(**batch).waveform
    assert max_abs_diff(adapted, base) > 1e-4  # the no-grad fast path must not bypass the adapters


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_finite(dtype):
    model = tiny_model().to(dtype).eval()
    out = model.generate(**text_batch())
    assert out.waveform.dtype == dtype and torch.isfinite(out.waveform).all() and torch.isfinite(out.mel).all()
    batch = _training_batch(model.config)
    batch = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_bad_inputs_raise_clear_errors(model):
    inputs = text_batch()
    ids = inputs["input_ids"]
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        model(input_ids=ids, inputs_embeds=torch.randn(2, ids.shape[1], 32))
    with pytest.raises(ValueError, match="outside"):
        model(input_ids=ids + 100)
    with pytest.raises(ValueError, match="hidden_size=32"):
        model(inputs_embeds=torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(input_ids=ids, attention_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="not both"):
        model(**inputs, speaker_ids=torch.tensor([0, 1]), speaker_embeddings=torch.randn(2, 8))
    with pytest.raises(ValueError, match="num_speakers=4"):
        model(**inputs, speaker_ids=torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="speaker_embedding_size=8"):
        model(**inputs, speaker_embeddings=torch.randn(2, 5))
    with pytest.raises(ValueError, match="speed must be positive"):
        model.generate(**inputs, speed=0)
    with pytest.raises(ValueError, match="n_mels=20"):
        model(**inputs, labels=torch.randn(2, 30, 80))
    with pytest.raises(ValueError, match="one mel frame per token"):
        model(**inputs, labels=torch.randn(2, 3, 20))
    with pytest.raises(ValueError, match="samples >= frames"):
        model(**inputs, labels=torch.randn(2, 30, 20), waveforms=torch.randn(2, 100))
    with pytest.raises(ValueError, match="pitch_labels must have shape"):
        model(**inputs, labels=torch.randn(2, 30, 20), pitch_labels=torch.rand(2, 29))
    with pytest.raises(TypeError, match="speaker_id"):  # a misspelt argument is not silently ignored
        model(**inputs, speaker_id=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="no speaker table"):
        OmniAudioDecoderModel(tiny_audio_decoder_config(num_speakers=0))(**inputs, speaker_ids=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="speaker_ids must be integer ids"):
        model(**inputs, speaker_ids=torch.tensor([1.7, 2.2]))
    # Training aligns each item's first token with its first frame: a left-padded batch would align the padding.
    left_padded = {**inputs, "attention_mask": inputs["attention_mask"].flip(-1)}
    assert not torch.equal(left_padded["attention_mask"], inputs["attention_mask"])
    with pytest.raises(ValueError, match=r"attention_mask must be 1 on a prefix of each row .* for training"):
        model(**left_padded, labels=torch.randn(2, 30, 20))
    holed = torch.ones(2, 30, dtype=torch.long)
    holed[0, 5] = 0
    with pytest.raises(ValueError, match="labels_attention_mask must be 1 on a prefix"):
        model(**inputs, labels=torch.randn(2, 30, 20), labels_attention_mask=holed)


def test_inputs_embeds_in_another_dtype_are_cast(model):
    inputs = text_batch()
    embeds = model.embed_tokens(inputs["input_ids"])
    expected = model.predict_mel(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    for dtype in (torch.bfloat16, torch.float64):  # an LLM's bf16 hidden states, numpy's float64
        output = model.predict_mel(inputs_embeds=embeds.to(dtype), attention_mask=inputs["attention_mask"])
        assert output.mel.dtype == torch.float32
        tolerance = 0.2 if dtype == torch.bfloat16 else 1e-5
        assert max_abs_diff(output.mel, expected.mel) < tolerance


# ----------------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_and_auto_classes(tmp_path, model):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForTextToWaveform.from_pretrained(tmp_path).eval()
    assert type(loaded) is OmniAudioDecoderModel
    assert type(AutoModel.from_pretrained(tmp_path)) is OmniAudioDecoderModel  # as transformers' text-to-speech models
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_omni_audio_decoder.OmniAudioDecoderModel"
    inputs = text_batch()
    expected = model.generate(**inputs, speaker_ids=torch.tensor([1, 3]))
    actual = loaded.generate(**inputs, speaker_ids=torch.tensor([1, 3]))
    assert torch.equal(actual.waveform, expected.waveform)
    state, reloaded = model.state_dict(), loaded.state_dict()
    assert state.keys() == reloaded.keys()
    assert all(torch.equal(state[key], reloaded[key]) for key in state)


# ----------------------------------------------------------------------------------------------------- processor


def test_tokenizer_is_character_level_and_round_trips(tmp_path):
    tokenizer = OmniAudioDecoderTokenizer()
    ids = tokenizer("Hello, World #1!").input_ids
    assert tokenizer.decode(ids) == "hello, world 1!"  # lower-cased, '#' dropped, one id per character
    assert len(ids) == len("hello, world 1!")
    tokenizer.save_pretrained(tmp_path)
    tiny_audio_decoder_config().save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is OmniAudioDecoderTokenizer and loaded("Hello").input_ids == tokenizer("Hello").input_ids
    with pytest.raises(ValueError, match="phonemize"):
        OmniAudioDecoderTokenizer(phonemize=True)
    # Accents fold to the vocabulary's letters instead of dropping them ("caf nave" before).
    assert tokenizer.decode(tokenizer("Café naïve, ﬁne").input_ids) == "cafe naive, fine"


def _tone(frequency, seconds, sampling_rate=16000, amplitude=0.5):
    time = np.arange(int(seconds * sampling_rate)) / sampling_rate
    return (amplitude * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def test_feature_extractor_targets():
    extractor = OmniAudioDecoderFeatureExtractor()
    tone = _tone(200.0, 0.5)
    silence = np.zeros(5000, dtype=np.float32)
    features = extractor([tone, silence], sampling_rate=16000, return_tensors="pt")
    frames = [len(tone) // 256, len(silence) // 256]
    assert features["labels"].shape == (2, frames[0], 80)
    assert features["labels_attention_mask"].sum(-1).tolist() == frames
    assert features["waveforms"].shape == (2, frames[0] * 256)
    # The log-mel is the model's OmniMelSpectrogram, and padding does not change the valid frames.
    mel = OmniMelSpectrogram(16000, 1024, 256, 80, f_max=8000.0)
    assert max_abs_diff(features["labels"][0], mel(torch.from_numpy(tone[: frames[0] * 256]))) < 1e-4
    assert max_abs_diff(features["labels"][1, : frames[1]], mel(torch.zeros(frames[1] * 256))) < 1e-4
    assert (features["labels"][1, frames[1]:] == np.log(1e-5)).all()
    # A real pitch tracker: a 200 Hz tone is voiced at ~200 Hz, silence is unvoiced.
    voiced = features["pitch_labels"][0, 3:-3]
    assert (voiced > 0).all() and (voiced - 200.0).abs().max() < 5.0
    assert (features["pitch_labels"][1] == 0).all()
    # Energy: L2 norm of the frame's STFT magnitudes (from the same frames as the mel).
    spectrogram = mel.spectrogram(torch.from_numpy(tone[: frames[0] * 256]))
    assert max_abs_diff(features["energy_labels"][0], spectrogram.norm(dim=-1)) < 1e-3
    assert (features["energy_labels"][1] == 0).all()
    # DIO on a decimated signal (pitch_speed) finds the same pitch.
    fast = OmniAudioDecoderFeatureExtractor(pitch_speed=4)([tone, silence], sampling_rate=16000, return_tensors="pt")
    assert (fast["pitch_labels"][0, 3:-3] - 200.0).abs().max() < 5.0 and (fast["pitch_labels"][1] == 0).all()
    with pytest.raises(ValueError, match="pitch_speed"):
        OmniAudioDecoderFeatureExtractor(pitch_speed=0)


@pytest.mark.parametrize(
    "audio, kwargs, message",
    [
        (np.zeros(4000, np.float32), {"sampling_rate": 22050}, "expects 16000 Hz"),
        (np.zeros((2, 2, 4000), np.float32), {}, "mono"),
        ([np.zeros((4000, 2), np.float32)], {}, "mono"),
        (np.zeros(100, np.float32), {}, "shorter than one frame"),
        (np.full(4000, np.nan, np.float32), {}, "NaN"),
        ([], {}, "No audio"),
        ("not audio", {}, "Expected audio"),
    ],
)
def test_feature_extractor_rejects_unusable_audio(audio, kwargs, message):
    with pytest.raises(ValueError, match=message):
        OmniAudioDecoderFeatureExtractor()(audio, **kwargs)


def test_processor_and_auto_classes(tmp_path):
    config = tiny_audio_decoder_config()
    processor = tiny_processor(config)
    audio = [_tone(150, 0.3), _tone(220, 0.2)]
    batch = processor(text=["hello", "hi"], audio=audio, sampling_rate=16000, return_tensors="pt")
    assert set(batch) == {
        "input_ids", "attention_mask", "labels", "labels_attention_mask", "pitch_labels", "energy_labels", "waveforms"
    }
    assert batch["labels"].shape[-1] == 20 and batch["input_ids"].shape == (2, 5)
    with pytest.raises(ValueError, match="one waveform per text"):
        processor(text=["a", "b"], audio=[_tone(150, 0.3)], sampling_rate=16000)
    with pytest.raises(ValueError, match="nothing to speak"):
        processor(text=["###"])
    with pytest.raises(ValueError, match="Pass `text`"):
        processor()
    processor.save_pretrained(tmp_path)
    config.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is OmniAudioDecoderProcessor
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is OmniAudioDecoderFeatureExtractor
    assert loaded.feature_extractor.feature_size == 20 and loaded.feature_extractor.n_fft == 512
    again = loaded(text=["hello", "hi"], audio=audio, sampling_rate=16000, return_tensors="pt")
    assert all(torch.equal(again[key], batch[key]) for key in batch)


# ----------------------------------------------------------------------------------------------------- pipeline


def _save_checkpoint(path):
    torch.manual_seed(0)
    config = tiny_audio_decoder_config()
    model = OmniAudioDecoderModel(config).eval()
    model.save_pretrained(path)
    tiny_processor(config).save_pretrained(path)
    return model


def test_model_card_shows_the_config():
    from omni_encoders import create_model_card

    card = create_model_card(tiny_model(tiny_audio_decoder_config(encoder_layers=2)), model_id="org/tiny-tts").text
    assert "2 feed-forward Transformer blocks" in card and "20-bin mel spectrogram" in card
    assert "{{" not in card and ".waveform" in card


def test_text_to_audio_pipeline(tmp_path):
    model = _save_checkpoint(tmp_path)
    tts = pipeline("text-to-audio", model=str(tmp_path))
    speech = tts("Hello there.")
    assert speech["sampling_rate"] == 16000
    expected = model.generate(**text_batch(texts=("Hello there.",))).waveform[0]
    assert speech["audio"].shape == tuple(expected.shape)
    assert np.allclose(speech["audio"], expected.numpy(), atol=1e-6)
    vector = torch.randn(1, 8)
    cloned = tts("Hello there.", forward_params={"speaker_embeddings": vector})
    expected = model.generate(**text_batch(texts=("Hello there.",)), speaker_embeddings=vector).waveform[0]
    assert np.allclose(cloned["audio"], expected.numpy(), atol=1e-6)
    faster = tts("Hello there.", forward_params={"speed": 3.0})
    assert faster["audio"].shape[0] <= speech["audio"].shape[0]


def test_remote_code_loads_without_the_package(tmp_path):
    model = _save_checkpoint(tmp_path / "ckpt")
    expected = model.generate(**text_batch(texts=("remote code",)), speaker_ids=torch.tensor([2])).waveform
    result = run_without_package(
        f"""
        import json, torch
        from transformers import AutoModelForTextToWaveform, AutoProcessor, pipeline
        path = {str(tmp_path / "ckpt")!r}
        model = AutoModelForTextToWaveform.from_pretrained(path, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        speech = model.generate(**processor(text="remote code", return_tensors="pt"), speaker_ids=torch.tensor([2]))
        tts = pipeline("text-to-audio", model=path, trust_remote_code=True)
        print(json.dumps({{"model": type(model).__name__, "processor": type(processor).__name__,
                          "tokenizer": type(processor.tokenizer).__name__,
                          "waveform": speech.waveform[0].tolist(), "pipeline": len(tts("remote code")["audio"])}}))
        """,
        tmp_path,
    )
    assert result["model"] == "OmniAudioDecoderModel" and result["processor"] == "OmniAudioDecoderProcessor"
    assert result["tokenizer"] == "OmniAudioDecoderTokenizer"
    assert max_abs_diff(torch.tensor(result["waveform"]), expected[0]) < 1e-5
    assert result["pipeline"] == expected.shape[1]


# ----------------------------------------------------------------------------------------------------- real speech


SENTENCES = ["The quick brown fox.", "Speech on a laptop.", "Hello, how are you?"]
VOICES = ["en-us", "en-gb", "en-us+f3"]


@pytest.fixture(scope="module")
def real_speech():
    """Three utterances by three espeak-ng voices, resampled to 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    import soundfile
    import soxr

    examples = []
    for speaker, (text, voice) in enumerate(zip(SENTENCES, VOICES)):
        command = ["espeak-ng", "-v", voice, "-s", "170", "--stdout", text]
        wav = subprocess.run(command, capture_output=True, check=True)
        audio, rate = soundfile.read(io.BytesIO(wav.stdout), dtype="float32")
        examples.append({"text": text, "audio": {"array": soxr.resample(audio, rate, 16000), "sampling_rate": 16000},
                         "speaker_id": speaker})
    return examples


def test_a_few_optimisation_steps_on_real_speech_lower_the_loss(real_speech):
    torch.manual_seed(0)
    config = tiny_audio_decoder_config(vocoder_segment_frames=8)
    model = tiny_model(config).train()
    batch = OmniAudioDecoderCollator(tiny_processor(config))(real_speech)
    assert batch["labels"].shape[0] == 3 and (batch["pitch_labels"] > 0).any()  # espeak speech is voiced
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        torch.manual_seed(1)  # the same vocoder segments every step
        out = model(**batch)
        losses.append(out.loss.item())
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.85 * losses[0], losses
    assert torch.equal(out.durations.sum(-1), batch["labels_attention_mask"].sum(-1))


def test_collator_batches_examples_with_or_without_the_waveforms(real_speech):
    config = tiny_audio_decoder_config()
    with_waveforms = OmniAudioDecoderCollator(tiny_processor(config))(real_speech)
    assert with_waveforms["waveforms"].shape == (3, with_waveforms["labels"].shape[1] * 256)
    assert with_waveforms["speaker_ids"].tolist() == [0, 1, 2]
    acoustic_only = OmniAudioDecoderCollator(tiny_processor(config), return_waveforms=False)(real_speech)
    assert set(with_waveforms) - set(acoustic_only) == {"waveforms"}
    assert all(torch.equal(acoustic_only[key], with_waveforms[key]) for key in acoustic_only)
    out = tiny_model(config).train()(**acoustic_only)
    assert out.vocoder_loss is None and out.waveform_segment is None and torch.isfinite(out.loss)


def _word_boundary_error_ms(durations: torch.Tensor, texts: list[str], word_ends: list[np.ndarray]) -> float:
    """Mean distance between the end of each word's last character under `durations` and flite's word ends."""
    errors = []
    for item, text, ends in zip(durations, texts, word_ends):
        last_characters = np.cumsum([len(word) + 1 for word in text.split()]) - 2
        aligned = np.cumsum(item.numpy())[last_characters] * 256 / 16000
        errors.extend(np.abs(aligned - ends)[:-1])  # the boundaries between words
    return 1000 * float(np.mean(errors))


def test_alignment_learns_the_word_boundaries_of_real_speech():
    """The aligner alone (alignment loss only), trained on twelve flite utterances, moves the Monotonic Alignment
    Search durations from the prior's diagonal (~100 ms off flite's word boundaries) onto the words. With the RAD-TTS
    temperature 0.0005 the scores stay far below the prior's and the alignment drifts further off (~160 ms)."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (scripts/setup.sh installs it)")
    from omni_encoders.data import digits_to_words, synthesize, word_end_times

    rng = np.random.default_rng(0)
    texts = [digits_to_words("".join(map(str, rng.integers(0, 10, 4)))) for _ in range(12)]
    audio = [synthesize("flite:slt", text) for text in texts]
    word_ends = [word_end_times("flite:slt", text) for text in texts]
    torch.manual_seed(0)
    weights = {f"{name}_loss_weight": 0.0 for name in ("mel", "duration", "pitch", "energy", "vocoder")}
    config = tiny_audio_decoder_config(num_speakers=0, alignment_size=64, **weights)
    model = OmniAudioDecoderModel(config).train()
    batch = tiny_processor(config)(text=texts, audio=audio, sampling_rate=16000, return_pitch=False,
                                   return_tensors="pt")  # fmt: skip
    del batch["waveforms"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    errors = []
    for step in range(81):
        out = model(**batch)
        if step % 40 == 0:
            errors.append(_word_boundary_error_ms(out.durations, texts, word_ends))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert errors[-1] < 0.7 * errors[0], errors
    assert torch.equal(out.durations.sum(-1), batch["labels_attention_mask"].sum(-1))


def test_gan_trainer_trains_the_vocoder_adversarially(real_speech, tmp_path):
    from torch import nn

    from omni_encoders import OmniAudioDecoderGANTrainer
    from omni_encoders.modeling_omni_vocoder import OmniMultiPeriodDiscriminator, OmniMultiResolutionDiscriminator

    torch.manual_seed(0)
    config = tiny_audio_decoder_config(vocoder_segment_frames=8)
    model = tiny_model(config)
    discriminators = nn.ModuleDict({
        "period": OmniMultiPeriodDiscriminator(periods=(2, 3), channels=(4, 8)),
        "resolution": OmniMultiResolutionDiscriminator(resolutions=((256, 64, 256),), channels=4, num_layers=2),
    })
    before = {name: p.detach().clone() for name, p in discriminators.named_parameters()}
    vocoder_before = model.vocoder.output_conv.bias.detach().clone()
    trainer = OmniAudioDecoderGANTrainer(
        model=model,
        args=TrainingArguments(
            str(tmp_path), max_steps=1, per_device_train_batch_size=3, learning_rate=1e-3, report_to=[],
            remove_unused_columns=False, save_strategy="no", logging_steps=1, use_cpu=True,
        ),
        train_dataset=real_speech,
        data_collator=OmniAudioDecoderCollator(tiny_processor(config)),
        discriminators=discriminators,
    )
    trainer.train()
    changed = [n for n, p in trainer.discriminators.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) > 0
    assert not torch.equal(model.vocoder.output_conv.bias.detach(), vocoder_before)
    logs = [entry for entry in trainer.state.log_history if "discriminator_loss" in entry]
    assert logs and all(np.isfinite(entry["generator_adversarial_loss"]) for entry in logs)
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final" / "discriminators.safetensors").exists()


def test_gan_trainer_resumes_the_discriminators_and_their_optimizer(real_speech, tmp_path):
    from torch import nn

    from omni_encoders import OmniAudioDecoderGANTrainer
    from omni_encoders.modeling_omni_vocoder import OmniMultiPeriodDiscriminator, OmniMultiResolutionDiscriminator

    config = tiny_audio_decoder_config(vocoder_segment_frames=8)

    def gan_trainer(max_steps):
        torch.manual_seed(0)
        discriminators = nn.ModuleDict({
            "period": OmniMultiPeriodDiscriminator(periods=(2,), channels=(4,)),
            "resolution": OmniMultiResolutionDiscriminator(resolutions=((256, 64, 256),), channels=4, num_layers=2),
        })
        return OmniAudioDecoderGANTrainer(
            model=tiny_model(config),
            args=TrainingArguments(
                str(tmp_path), max_steps=max_steps, per_device_train_batch_size=3, learning_rate=1e-3, report_to=[],
                remove_unused_columns=False, save_strategy="steps", save_steps=1, use_cpu=True,
            ),
            train_dataset=real_speech,
            data_collator=OmniAudioDecoderCollator(tiny_processor(config)),
            discriminators=discriminators,
        )

    first = gan_trainer(max_steps=1)
    first.train()
    checkpoint = tmp_path / "checkpoint-1"
    assert (checkpoint / "discriminators.safetensors").exists()
    assert (checkpoint / "discriminator_optimizer.pt").exists()
    saved = {name: p.detach().clone() for name, p in first.discriminators.named_parameters()}
    resumed = gan_trainer(max_steps=2)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    # Two AdamW steps in all: the first one's moments and step count came back with the checkpoint.
    steps = {int(state["step"]) for state in resumed.discriminator_optimizer.state.values()}
    assert steps == {2}
    assert any(not torch.equal(p.detach(), saved[n]) for n, p in resumed.discriminators.named_parameters())

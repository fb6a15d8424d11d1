"""The waveform decoder (vocoder), its discriminators and losses: shapes, streaming, weight norm, save/load and
training."""

import math
import platform

import pytest
import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.nn.utils import parametrize
from transformers import PreTrainedConfig, PreTrainedModel

from helpers import max_abs_diff
from omni_encoders.modeling_omni_common import OmniMelSpectrogram
from omni_encoders.modeling_omni_vocoder import (
    _snake_kernel,
    OmniMultiPeriodDiscriminator,
    OmniMultiResolutionDiscriminator,
    OmniSnake,
    OmniVocoder,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    init_vocoder_weights,
    mel_spectrogram_loss,
    multi_resolution_stft_loss,
)


N_MELS = 8
TINY_VOCODER = {"n_mels": N_MELS, "initial_channels": 16}  # default upsampling 8·8·2·2: hop 256
TINY_MPD = {"periods": (2, 3, 5, 7, 11), "channels": (4, 8, 8, 8, 8)}
TINY_MRD = {"resolutions": ((256, 32, 128), (512, 64, 256), (128, 16, 64)), "channels": 4}


def tiny_vocoder(std: float = 0.1, **overrides) -> OmniVocoder:
    vocoder = OmniVocoder(**{**TINY_VOCODER, **overrides})
    # HiFi-GAN's std of 0.01 suits 512 channels; with 16 a larger one keeps the output away from float underflow.
    vocoder.apply(lambda module: init_vocoder_weights(module, std=std))
    return vocoder


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return max_abs_diff(actual, expected) / expected.abs().max().item()


def sine_sweep(num_samples: int, sampling_rate: int = 16000, low: float = 150.0, high: float = 2000.0) -> torch.Tensor:
    """A logarithmic sine sweep from `low` to `high` Hz at amplitude 0.5, float32 `[num_samples]`."""
    time = torch.arange(num_samples, dtype=torch.float64) / sampling_rate
    duration = num_samples / sampling_rate
    rate = math.log(high / low) / duration
    phase = 2 * math.pi * low * (torch.exp(rate * time) - 1) / rate
    return (0.5 * torch.sin(phase)).float()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These small convolutions are fastest on one thread, and far slower when threads contend for busy cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A PreTrainedModel that owns a vocoder and both discriminators, as the speech decoder will.
@strict
class TinyVocoderConfig(PreTrainedConfig):
    model_type = "tiny_omni_vocoder_test"
    n_mels: int = N_MELS
    initial_channels: int = 16
    initializer_range: float = 0.01


class TinyVocoderModel(PreTrainedModel):
    config: TinyVocoderConfig
    config_class = TinyVocoderConfig
    main_input_name = "mel"
    supports_gradient_checkpointing = True
    _no_split_modules = ["OmniMultiReceptiveFieldFusion"]

    def __init__(self, config: TinyVocoderConfig):
        super().__init__(config)
        self.vocoder = OmniVocoder(n_mels=config.n_mels, initial_channels=config.initial_channels)
        self.period_discriminator = OmniMultiPeriodDiscriminator(**TINY_MPD)
        self.resolution_discriminator = OmniMultiResolutionDiscriminator(**TINY_MRD)
        self.post_init()

    def _init_weights(self, module: nn.Module):
        init_vocoder_weights(module, std=self.config.initializer_range)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.vocoder(mel)


# ------------------------------------------------------------------------------------------------------- snake


def test_snake_matches_the_formula_and_is_safe_at_alpha_zero():
    snake = OmniSnake(3)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([0.5, 0.0, -2.0]).view(1, 3, 1))
    x = torch.randn(2, 3, 10, requires_grad=True)
    y = snake(x)
    alpha = torch.tensor([0.5, 1.0, -2.0]).view(1, 3, 1)
    expected = x + torch.sin(alpha * x) ** 2 / alpha
    torch.testing.assert_close(y[:, [0, 2]], expected[:, [0, 2]])
    torch.testing.assert_close(y[:, 1], x[:, 1])  # alpha -> 0 tends to the identity; no division by zero
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(snake.alpha.grad).all()

    log_snake = OmniSnake(3, alpha=2.0, log_scale_alpha=True)
    torch.testing.assert_close(log_snake.alpha, torch.full((1, 3, 1), math.log(2.0)))
    torch.testing.assert_close(log_snake(x), x + torch.sin(2 * x) ** 2 / 2)
    with torch.no_grad():
        log_snake.alpha.fill_(float("nan"))
    init_vocoder_weights(log_snake)
    torch.testing.assert_close(log_snake.alpha, torch.full((1, 3, 1), math.log(2.0)))


def _snake_without_kernel(snake: OmniSnake, x: torch.Tensor, monkeypatch) -> torch.Tensor:
    with monkeypatch.context() as patch:
        patch.setattr("omni_encoders.modeling_omni_vocoder._snake_kernel", lambda: None)
        return snake(x)


# Every instruction-set version of the kernel, each built alone, on any x86 CPU (all of ours have AVX2): the AVX2 and
# baseline versions are checked on an AVX-512 machine too, and the default build picks the CPU's own at load time.
KERNEL_LEVELS = [None, "x86-64-v3", "x86-64"] if platform.machine() == "x86_64" else [None]


@pytest.mark.parametrize("march", KERNEL_LEVELS)
@pytest.mark.parametrize("log_scale_alpha", [False, True])
def test_snake_kernel_matches_pytorch_and_float64(log_scale_alpha, march, monkeypatch):
    kernel = _snake_kernel(march)
    if kernel is None:
        pytest.skip("no C compiler on this machine: Snake runs in PyTorch only")
    monkeypatch.setattr("omni_encoders.modeling_omni_vocoder._snake_kernel", lambda: kernel)
    generator = torch.Generator().manual_seed(0)
    snake = OmniSnake(6, log_scale_alpha=log_scale_alpha)
    alpha = torch.tensor([0.05, 0.5, 1.0, 3.0, 40.0, -2.0])
    with torch.no_grad():
        snake.alpha.copy_((alpha.abs().log() if log_scale_alpha else alpha).view(1, 6, 1))
    x = torch.randn(3, 6, 5000, generator=generator) * 4
    x[0, :, :4] = torch.tensor([0.0, 1e6, -3e4, 1e-30])
    with torch.no_grad():
        fused, reference = snake(x), _snake_without_kernel(snake, x, monkeypatch)
        # Against float64 truth the kernel is as exact as PyTorch's float32 sin (a few float32 ulps of the output).
        alpha64 = (alpha.abs() if log_scale_alpha else alpha).double().view(1, 6, 1)
        truth = x.double() + torch.sin(alpha64 * x.double()) ** 2 / alpha64
        assert fused.dtype == torch.float32
        ulps = (fused.double() - truth).abs() / torch.finfo(torch.float32).eps
        assert (ulps <= 4 * truth.abs().clamp_min(1.0)).all()
        torch.testing.assert_close(fused, reference, rtol=2e-6, atol=2e-6)
        # bfloat16 storage: float32 arithmetic, then one rounding, so it matches PyTorch's float32 result cast back.
        x16 = x.bfloat16()
        fused16, reference16 = snake(x16), _snake_without_kernel(snake, x16, monkeypatch)
        assert fused16.dtype == torch.bfloat16
        assert (fused16 != reference16).float().mean() < 1e-3  # only rare rounding-boundary ties differ ...
        torch.testing.assert_close(fused16, reference16, rtol=2**-7, atol=0)  # ... and then by one bf16 step
        # Non-finite inputs behave as in PyTorch, and several threads give the same result as one.
        special = torch.tensor([[[float("nan"), float("inf"), -float("inf"), 2.0]]]).expand(1, 6, 4).contiguous()
        torch.testing.assert_close(snake(special), _snake_without_kernel(snake, special, monkeypatch), equal_nan=True)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(3)
            big = torch.randn(1, 6, 70_000, generator=generator)
            threaded = snake(big)
            torch.set_num_threads(1)
            assert torch.equal(threaded, snake(big))
        finally:
            torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_snake_kernel_on_channels_last_activations(dtype, monkeypatch):
    snake = OmniSnake(48)
    with torch.no_grad():
        snake.alpha.uniform_(0.2, 5.0)
        x = (torch.randn(2, 48, 1, 1000) * 3).to(dtype)
        x[1, 5, 0, 7] = 1e6  # one time step takes the large-argument path
        channels_last = x.contiguous(memory_format=torch.channels_last)  # 200 time steps of 48 channels per row
        output = snake(channels_last)
        assert output.is_contiguous(memory_format=torch.channels_last) and output.dtype == dtype
        reference = _snake_without_kernel(snake, x, monkeypatch)
    if _snake_kernel() is not None:
        torch.testing.assert_close(output, reference, rtol=2**-7 if dtype == torch.bfloat16 else 2e-6, atol=2e-6)


def test_vocoder_inference_layout_gives_the_training_layout_outputs():
    vocoder = tiny_vocoder()
    mel = torch.randn(2, 9, N_MELS)
    assert vocoder._runs_channels_last(mel) is False  # autograd on: [B, C, T]
    expected = vocoder(mel)
    with torch.no_grad():
        assert vocoder._runs_channels_last(mel)
        torch.testing.assert_close(vocoder(mel), expected, rtol=1e-5, atol=1e-6)
        assert not tiny_vocoder(anti_alias=True)._runs_channels_last(mel)


def test_snake_kernel_is_not_used_with_autograd(monkeypatch):
    calls = []
    monkeypatch.setattr(
        "omni_encoders.modeling_omni_vocoder._snake_with_kernel", lambda *args: calls.append(args) or args[1]
    )
    snake, x = OmniSnake(2), torch.randn(1, 2, 8, requires_grad=True)
    snake(x).sum().backward()  # the kernel has no backward: training must take the PyTorch path
    assert not calls and x.grad is not None


def test_anti_aliased_snake_keeps_length_and_passes_constants():
    snake = OmniSnake(4, anti_alias=True)
    x = torch.randn(2, 4, 37)
    assert snake(x).shape == x.shape
    # The low-pass filters have unit DC gain and the padding replicates, so a constant signal stays Snake(constant).
    constant = torch.full((1, 4, 20), 0.7)
    torch.testing.assert_close(snake(constant), snake.snake(constant), atol=1e-5, rtol=1e-5)
    # Snake creates harmonics of a tone; above Nyquist they fold back between the harmonics (aliasing). The
    # alias-free version keeps the harmonics and removes most of the folded energy.
    length, frequency = 768, 0.15  # cycles per sample: harmonics 0.6, 0.75, ... fold to 0.4, 0.25, ...
    tone = 2 * torch.sin(2 * math.pi * frequency * torch.arange(length + 256.0)).view(1, 1, -1)
    window = torch.hann_window(length)

    def spectrum(activation):
        with torch.no_grad():
            return torch.fft.rfft(activation(tone)[0, 0, 128:-128] * window).abs().square()

    plain, alias_free = spectrum(OmniSnake(1)), spectrum(OmniSnake(1, anti_alias=True))
    harmonic = torch.zeros_like(plain, dtype=torch.bool)
    for k in range(0, 4):
        centre = round(k * frequency * length)
        harmonic[max(centre - 3, 0) : centre + 4] = True
    assert alias_free[harmonic].sum().item() == pytest.approx(plain[harmonic].sum().item(), rel=0.1)
    assert alias_free[~harmonic].sum() < plain[~harmonic].sum() / 10


# ------------------------------------------------------------------------------------------------------- vocoder


@pytest.mark.parametrize("num_frames", [1, 7, 33])
def test_output_is_frames_times_hop_in_unit_range(num_frames):
    vocoder = tiny_vocoder(std=1.0)  # large weights: the output saturates, the tanh bounds it
    assert vocoder.hop_length == 256
    mel = torch.randn(2, num_frames, N_MELS) * 3
    with torch.no_grad():
        waveform = vocoder(mel)
        unbatched = vocoder(mel[0])
    assert waveform.shape == (2, num_frames * 256)
    assert waveform.abs().max() <= 1.0 and waveform.abs().max() > 0.99
    assert unbatched.shape == (num_frames * 256,)
    assert relative_error(unbatched, waveform[0]) < 1e-4


def test_batch_items_are_independent():
    vocoder = tiny_vocoder()
    mel = torch.randn(3, 12, N_MELS)
    with torch.no_grad():
        assert relative_error(vocoder(mel[1:2])[0], vocoder(mel)[1]) < 1e-5


@pytest.mark.parametrize("grad", [True, False])  # the training layout, and the channels-last inference one
def test_padded_items_decode_as_alone_with_mel_lengths(grad):
    vocoder = tiny_vocoder(inference_chunk_frames=16)  # the 40-frame mel goes through the chunked decode
    lengths = torch.tensor([40, 3, 17])
    mel = torch.randn(3, 40, N_MELS)
    mel[1:] = torch.where(torch.arange(40)[:, None] < lengths[1:, None, None], mel[1:], math.log(1e-5))  # silence
    with torch.set_grad_enabled(grad):
        batch = vocoder(mel, lengths)
        alone = [vocoder(mel[index : index + 1, :length])[0] for index, length in enumerate(lengths.tolist())]
        padded_without_lengths = vocoder(mel)[1, : 3 * 256]
        streamed = torch.cat(list(vocoder.stream(mel, 7, mel_lengths=lengths)), dim=-1)
    for index, length in enumerate(lengths.tolist()):
        assert relative_error(batch[index, : length * 256], alone[index]) < 1e-5
        assert relative_error(streamed[index, : length * 256], alone[index]) < 1e-5
        assert not batch[index, length * 256 :].any() and not streamed[index, length * 256 :].any()
    # Without the lengths the padding's activations leak into the short item's samples.
    assert relative_error(padded_without_lengths, alone[1]) > 1e-2
    with pytest.raises(ValueError, match=r"mel_lengths must lie in \[0, frames=40\]"):
        vocoder(mel, torch.tensor([41, 1, 1]))
    with pytest.raises(ValueError, match="integer tensor of shape"):
        vocoder(mel, torch.tensor([3.0, 1.0, 1.0]))


def test_default_layout_follows_the_reference_checkpoint():
    with torch.device("meta"):
        vocoder = OmniVocoder()
    assert vocoder.hop_length == 256
    shapes = {key: tuple(value.shape) for key, value in vocoder.state_dict().items()}
    assert shapes["input_proj.parametrizations.weight.original1"] == (512, 80, 7)
    assert shapes["upsamplers.0.parametrizations.weight.original0"] == (512, 1, 1)
    assert shapes["upsamplers.3.parametrizations.weight.original1"] == (64, 32, 4)
    assert shapes["mrf_blocks.0.resblocks.2.convs1.2.parametrizations.weight.original1"] == (256, 256, 11)
    assert vocoder.mrf_blocks[0].resblocks[2].convs1[2].dilation == (5,)
    assert shapes["final_activation.alpha"] == (1, 32, 1)
    assert shapes["output_conv.parametrizations.weight.original1"] == (1, 32, 7)
    assert len(vocoder.mrf_blocks) == 4 and len(vocoder.mrf_blocks[0].resblocks) == 3


@pytest.mark.parametrize("anti_alias", [False, True])
def test_context_frames_is_the_exact_receptive_field(anti_alias):
    # Small enough that float64 gradients do not underflow at the edge of the receptive field.
    vocoder = OmniVocoder(
        n_mels=4, initial_channels=8, upsample_rates=(4, 2), upsample_kernel_sizes=(8, 4),
        resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 3), (1,)), anti_alias=anti_alias,
    ).double()
    mel = torch.randn(1, 40, 4, dtype=torch.float64, requires_grad=True)
    frame = 20
    vocoder(mel)[0, frame * 8 : (frame + 1) * 8].sum().backward()
    influencing = (mel.grad[0].abs().sum(-1) > 0).nonzero().flatten()
    assert vocoder.context_frames == (frame - influencing.min().item(), influencing.max().item() - frame)
    with torch.device("meta"):
        assert OmniVocoder().context_frames == (13, 13)


def test_long_inputs_are_decoded_in_chunks_at_inference(monkeypatch):
    vocoder = tiny_vocoder(inference_chunk_frames=8)
    mel = torch.randn(2, 30, N_MELS)
    decoded, decode = [], vocoder._decode
    monkeypatch.setattr(
        vocoder, "_decode", lambda chunk, lengths=None: decoded.append(chunk.shape[1]) or decode(chunk, lengths)
    )
    with torch.no_grad():
        chunked = vocoder(mel)
        assert decoded == [21, 29, 27, 19]  # 4 chunks of <= 8 frames, each with up to 13 frames of context a side
        vocoder.inference_chunk_frames = 0
        assert relative_error(chunked, vocoder(mel)) < 1e-5 and decoded[-1] == 30
        vocoder.inference_chunk_frames = 8
        vocoder(mel[:, :8])  # not longer than a chunk: one pass
        vocoder.inference_chunk_frames = 16
        vocoder(torch.randn(1, 60, N_MELS))  # 4 equal chunks of 15 frames (not 16, 16, 16, 12), 13 frames of context
        assert decoded[-5:] == [8, 28, 41, 41, 28]
    vocoder.inference_chunk_frames = 8
    vocoder(mel)  # with autograd: one pass (the activations are kept for the backward anyway)
    assert decoded[-1] == 30 and len(decoded) == 11
    with pytest.raises(ValueError, match="inference_chunk_frames must be >= 0"):
        OmniVocoder(**TINY_VOCODER, inference_chunk_frames=-1)


@pytest.mark.parametrize(
    "anti_alias, num_frames, chunk_sizes",
    [(False, 40, (1, 7, 40, 64)), (True, 45, (8,))],  # 7 and 8 do not divide the lengths
)
def test_streaming_equals_full_decode(anti_alias, num_frames, chunk_sizes):
    vocoder = tiny_vocoder(anti_alias=anti_alias)
    left, right = vocoder.context_frames
    # Long enough that some chunks get context cut off on both sides.
    assert num_frames > left + min(chunk_sizes) + right
    mel = torch.randn(2, num_frames, N_MELS)
    with torch.no_grad():
        full = vocoder(mel)
        for chunk_frames in chunk_sizes:
            chunks = list(vocoder.stream(mel, chunk_frames))
            assert len(chunks) == math.ceil(num_frames / chunk_frames)
            assert all(chunk.shape == (2, chunk_frames * 256) for chunk in chunks[:-1])
            assert relative_error(torch.cat(chunks, dim=-1), full) < 1e-5
        # With half the context the chunk borders are wrong. (The outermost frames of the receptive field weigh in
        # below float32 resolution, so a frame or two less would still pass.)
        short = torch.cat(list(vocoder.stream(mel, 7, context_frames=(left // 2, right // 2))), dim=-1)
        assert relative_error(short, full) > 1e-3


def test_weight_norm_removal_keeps_outputs():
    vocoder = tiny_vocoder()
    mel = torch.randn(2, 9, N_MELS)
    convs = [m for m in vocoder.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]
    assert all(parametrize.is_parametrized(conv, "weight") for conv in convs)
    with torch.no_grad():
        before = vocoder(mel)
        vocoder.remove_weight_norm()
        assert not any(parametrize.is_parametrized(conv, "weight") for conv in convs)
        assert not any("parametrizations" in name for name, _ in vocoder.named_parameters())
        after = vocoder(mel)
        vocoder.apply_weight_norm()
        again = vocoder(mel)
    assert relative_error(after, before) < 1e-5
    assert relative_error(again, before) < 1e-5
    assert all(parametrize.is_parametrized(conv, "weight") for conv in convs)


@pytest.mark.parametrize("remove_weight_norm", [False, True])
def test_save_pretrained_round_trip(tmp_path, remove_weight_norm):
    model = TinyVocoderModel(TinyVocoderConfig()).eval()
    fresh_keys = set(model.state_dict())
    mel = torch.randn(2, 6, N_MELS)
    if remove_weight_norm:
        model.vocoder.remove_weight_norm()
    # Checkpoints always hold the weight-norm layout, whatever the state of the saved model.
    assert set(model.state_dict()) == fresh_keys
    model.save_pretrained(tmp_path)
    loaded = TinyVocoderModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected, actual = model(mel), loaded(mel)
        if remove_weight_norm:  # g = ||w||, v = w refolds to w up to rounding
            assert relative_error(actual, expected) < 1e-5
            loaded.vocoder.remove_weight_norm()
            assert relative_error(loaded(mel), expected) < 1e-5
        else:
            assert torch.equal(actual, expected)
            for key, value in model.state_dict().items():
                assert torch.equal(loaded.state_dict()[key], value), key
    waveform = torch.randn(2, 2048)
    torch.testing.assert_close(loaded.period_discriminator(waveform)[0], model.period_discriminator(waveform)[0])
    torch.testing.assert_close(
        loaded.resolution_discriminator(waveform)[0], model.resolution_discriminator(waveform)[0]
    )


def test_load_state_dict_accepts_either_layout():
    source, target = tiny_vocoder(), tiny_vocoder()
    mel = torch.randn(1, 5, N_MELS)
    with torch.no_grad():
        expected = source(mel)
        target.remove_weight_norm()
        target.load_state_dict(source.state_dict())  # (g, v) into plain weights
        assert relative_error(target(mel), expected) < 1e-5
        source.remove_weight_norm()
        plain = {k: v for k, v in source.state_dict().items()}
        # A plain layout (as a converted HiFi-GAN checkpoint would be) into a weight-normalised model.
        plain = {
            key.replace(".parametrizations.weight.original1", ".weight"): value
            for key, value in plain.items()
            if not key.endswith("original0")
        }
        fresh = tiny_vocoder()
        fresh.load_state_dict(plain)
        assert relative_error(fresh(mel), expected) < 1e-5


def test_every_parameter_is_initialised_by_init_weights():
    model = TinyVocoderModel(TinyVocoderConfig())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    for item in [*model.modules(), *model.parameters()]:
        if hasattr(item, "_is_hf_initialized"):
            del item._is_hf_initialized
    model.initialize_weights()
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name
    snake = model.vocoder.final_activation
    assert torch.equal(snake.alpha, torch.ones_like(snake.alpha))
    conv = model.vocoder.output_conv
    weight_norm = conv.parametrizations.weight
    torch.testing.assert_close(weight_norm.original0, torch.norm_except_dim(weight_norm.original1, 2, 0))
    assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    assert 0.005 < model.vocoder.mrf_blocks[0].resblocks[0].convs1[0].weight.std() < 0.02  # N(0, 0.01)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = TinyVocoderModel(TinyVocoderConfig()).train()
    mel = torch.randn(1, 4, N_MELS)
    model(mel).square().sum().backward()
    expected = [p.grad.clone() for p in model.vocoder.parameters()]
    model.zero_grad()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.vocoder.mrf_blocks[0].gradient_checkpointing
    model(mel).square().sum().backward()
    for grad, parameter in zip(expected, model.vocoder.parameters()):
        torch.testing.assert_close(parameter.grad, grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward_is_finite(dtype):
    vocoder = tiny_vocoder(anti_alias=True).to(dtype)
    mpd = OmniMultiPeriodDiscriminator(**TINY_MPD).to(dtype)
    mrd = OmniMultiResolutionDiscriminator(**TINY_MRD).to(dtype)
    mpd.apply(init_vocoder_weights)
    mrd.apply(init_vocoder_weights)
    mel = torch.randn(2, 6, N_MELS)  # float32 mels are cast to the model's dtype
    with torch.no_grad():
        waveform = vocoder(mel)
        assert waveform.dtype == dtype and torch.isfinite(waveform).all()
        chunks = torch.cat(list(vocoder.stream(mel, 4)), dim=-1)
        assert relative_error(chunks, waveform) < 5e-2
        for discriminator in (mpd, mrd):
            logits, features = discriminator(waveform)
            assert all(torch.isfinite(x).all() for x in logits)
            assert all(torch.isfinite(x).all() for maps in features for x in maps)
        loss = multi_resolution_stft_loss(waveform, torch.randn(2, 6 * 256).to(dtype))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"upsample_rates": (8, 8), "upsample_kernel_sizes": (16,)}, "same length"),
        ({"upsample_rates": (8, 8, 2, 2), "upsample_kernel_sizes": (15, 16, 4, 4)}, "kernel - rate even"),
        ({"upsample_rates": (8, 8, 2, 2), "upsample_kernel_sizes": (4, 16, 4, 4)}, "kernel >= rate"),
        ({"initial_channels": 24}, "divisible by 2\\*\\*4"),
        ({"resblock_kernel_sizes": (3, 4, 11)}, "odd"),
        ({"resblock_kernel_sizes": (3, 7)}, "same length"),
        ({"resblock_dilation_sizes": ((1, 3, 5), (), (1,))}, "dilations >= 1"),
    ],
)
def test_bad_architecture_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OmniVocoder(**{**TINY_VOCODER, **kwargs})


def test_bad_inputs_raise_clear_errors():
    vocoder = tiny_vocoder()
    with pytest.raises(ValueError, match="n_mels=8"):
        vocoder(torch.randn(1, 5, 80))
    with pytest.raises(ValueError, match="frames >= 1"):
        vocoder(torch.randn(1, 0, N_MELS))
    with pytest.raises(ValueError, match="chunk_frames"):
        next(vocoder.stream(torch.randn(1, 5, N_MELS), 0))
    with pytest.raises(ValueError, match="at least 11 samples"):
        OmniMultiPeriodDiscriminator(**TINY_MPD)(torch.randn(1, 5))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        OmniMultiResolutionDiscriminator(**TINY_MRD)(torch.randn(1, 1, 2048))
    with pytest.raises(ValueError, match="same shape"):
        multi_resolution_stft_loss(torch.randn(1, 4096), torch.randn(1, 4000))
    with pytest.raises(ValueError, match="at least 512 samples"):
        multi_resolution_stft_loss(torch.randn(1, 300), torch.randn(1, 300))
    with pytest.raises(ValueError, match="one real and one fake"):
        discriminator_loss([torch.zeros(1, 3)], [])


# ------------------------------------------------------------------------------------------------------- training


def test_discriminator_shapes():
    waveform = torch.randn(3, 4000)
    mpd = OmniMultiPeriodDiscriminator(**TINY_MPD)
    logits, features = mpd(waveform)
    assert len(logits) == len(features) == 5
    for period, period_logits, maps in zip(TINY_MPD["periods"], logits, features):
        assert period_logits.shape[0] == 3 and period_logits.dim() == 2
        assert len(maps) == len(TINY_MPD["channels"]) + 1
        assert [m.shape[1] for m in maps] == [*TINY_MPD["channels"], 1]
        assert all(m.shape[-1] == period for m in maps)
    mrd = OmniMultiResolutionDiscriminator(**TINY_MRD)
    logits, features = mrd(waveform)
    assert len(logits) == len(features) == 3
    for (n_fft, hop, _), res_logits, maps in zip(TINY_MRD["resolutions"], logits, features):
        assert res_logits.shape[0] == 3 and len(maps) == 6
        assert maps[0].shape == (3, 4, 4000 // hop, n_fft // 2 + 1)  # [B, C, frames, bins]
    # Default full-size layouts: HiFi-GAN periods, BigVGAN resolutions.
    with torch.device("meta"):
        assert [d.period for d in OmniMultiPeriodDiscriminator().discriminators] == [2, 3, 5, 7, 11]
        assert OmniMultiResolutionDiscriminator().discriminators[1].resolution == (2048, 240, 1200)


def test_adversarial_losses_have_gradients():
    vocoder = tiny_vocoder()
    mpd, mrd = OmniMultiPeriodDiscriminator(**TINY_MPD), OmniMultiResolutionDiscriminator(**TINY_MRD)
    mel = torch.randn(2, 8, N_MELS)
    real = sine_sweep(2 * 8 * 256).view(2, -1)
    fake = vocoder(mel)

    # Discriminator step: gradients reach the discriminators only.
    loss_d = 0
    for discriminator in (mpd, mrd):
        real_logits, _ = discriminator(real)
        fake_logits, _ = discriminator(fake.detach())
        loss_d = loss_d + discriminator_loss(real_logits, fake_logits)
    loss_d.backward()
    assert loss_d > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*mpd.parameters(), *mrd.parameters()])
    assert all(p.grad is None for p in vocoder.parameters())

    # Generator step.
    mpd.zero_grad()
    mrd.zero_grad()
    loss_g = multi_resolution_stft_loss(fake, real)
    for discriminator in (mpd, mrd):
        real_logits, real_features = discriminator(real)
        fake_logits, fake_features = discriminator(fake)
        loss_g = loss_g + generator_adversarial_loss(fake_logits)
        loss_g = loss_g + 2 * feature_matching_loss(real_features, fake_features)
    loss_g.backward()
    grads = [p.grad for p in vocoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert vocoder.input_proj.parametrizations.weight.original1.grad.abs().sum() > 0
    assert feature_matching_loss(real_features, real_features) == 0


def test_lsgan_losses_values():
    ones, zeros = [torch.ones(2, 5), torch.ones(2, 3)], [torch.zeros(2, 5), torch.zeros(2, 3)]
    assert discriminator_loss(ones, zeros) == 0  # perfect discriminator
    assert discriminator_loss(zeros, ones) == 4  # (1 + 1) per discriminator
    assert generator_adversarial_loss(ones) == 0 and generator_adversarial_loss(zeros) == 2


def test_stft_loss_is_zero_for_identical_inputs_and_positive_otherwise():
    target = sine_sweep(2 * 4096).view(2, 4096)
    assert multi_resolution_stft_loss(target, target.clone()) == 0
    noisy = target + 0.05 * torch.randn_like(target)
    predicted = noisy.clone().requires_grad_(True)
    loss = multi_resolution_stft_loss(predicted, target)
    assert loss > 0
    loss.backward()
    assert torch.isfinite(predicted.grad).all() and predicted.grad.abs().sum() > 0
    assert multi_resolution_stft_loss(target + 0.2 * torch.randn_like(target), target) > loss  # monotone in the error
    mel = OmniMelSpectrogram(n_mels=N_MELS)
    assert mel_spectrogram_loss(target, target.clone(), mel) == 0
    assert mel_spectrogram_loss(noisy, target, mel) > 0


def test_losses_ignore_padding_beyond_lengths():
    first, second = sine_sweep(2048), sine_sweep(4096, low=300.0)
    prediction_first = first + 0.1 * torch.randn(2048)
    prediction_second = second + 0.1 * torch.randn(4096)
    target = torch.stack([torch.cat([first, torch.zeros(2048)]), second])
    garbage = torch.stack([torch.cat([prediction_first, torch.randn(2048)]), prediction_second])
    zeros = torch.stack([torch.cat([prediction_first, torch.zeros(2048)]), prediction_second])
    lengths = torch.tensor([2048, 4096])
    mel = OmniMelSpectrogram(n_mels=N_MELS)
    for loss in (multi_resolution_stft_loss, lambda p, t, lengths: mel_spectrogram_loss(p, t, mel, lengths)):
        torch.testing.assert_close(loss(garbage, target, lengths=lengths), loss(zeros, target, lengths=lengths))
        # Batch of one: the padded item equals the item alone.
        torch.testing.assert_close(
            loss(garbage[:1], target[:1], lengths=lengths[:1]), loss(prediction_first[None], first[None], lengths=None)
        )


def test_optimisation_on_stft_loss_lowers_it():
    num_frames = 16
    target = sine_sweep(num_frames * 256)[None]
    mel = OmniMelSpectrogram(n_mels=N_MELS)(target)  # [1, 16, 8]
    vocoder = tiny_vocoder(std=0.01)  # HiFi-GAN's initialisation: a nearly silent start
    optimizer = torch.optim.Adam(vocoder.parameters(), lr=5e-3)
    losses = []
    mel_loss = OmniMelSpectrogram(n_mels=N_MELS)
    for _ in range(8):
        waveform = vocoder(mel)
        loss = multi_resolution_stft_loss(waveform, target) + mel_spectrogram_loss(waveform, target, mel_loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""The waveform decoder of the omni-encoders speech decoder, and the pieces to train it adversarially.

- [`OmniVocoder`]: a BigVGAN-style vocoder, log-mel `[B, frames, n_mels]` -> waveform `[B, frames * hop_length]` in
  `[-1, 1]`: transposed-convolution upsampling (8·8·2·2 = 256× by default), each stage followed by
  multi-receptive-field fusion of multi-periodicity (AMP) residual blocks with Snake activations (optionally
  alias-free). Weight-normalised convolutions (removable for inference) and an exact chunked streaming decode.
- [`OmniMultiPeriodDiscriminator`] (HiFi-GAN) and [`OmniMultiResolutionDiscriminator`] (UnivNet/BigVGAN).
- Losses: [`multi_resolution_stft_loss`], [`mel_spectrogram_loss`], and the LSGAN [`discriminator_loss`],
  [`generator_adversarial_loss`] and [`feature_matching_loss`].
- [`init_vocoder_weights`], to call from the owning `PreTrainedModel._init_weights`.

These are plain `nn.Module`s and functions: the speech-decoder model builds them from its own config.
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration_omni_audio_decoder import validate_vocoder_layout
from .modeling_omni_common import lengths_to_mask, load_c_kernel

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d)


# --------------------------------------------------------------------------------------------------------------------
# Receptive-field bookkeeping (for the exact streaming decode)
# --------------------------------------------------------------------------------------------------------------------


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _conv_input_span(conv: nn.Conv1d, first: int, last: int) -> tuple[int, int]:
    """Input samples that output samples `first..last` of a stride-1 `conv` read (zero padding counts as outside)."""
    padding, dilation, kernel_size = conv.padding[0], conv.dilation[0], conv.kernel_size[0]
    return first - padding, last - padding + dilation * (kernel_size - 1)


def _transposed_conv_input_span(
    first: int, last: int, kernel_size: int, stride: int, padding: int
) -> tuple[int, int]:
    """Input samples that output samples `first..last` of a transposed convolution read.

    Output `n` sums input `j` with tap `n + padding - j * stride` when that tap lies in `[0, kernel_size)`.
    """
    return _ceil_div(first + padding - kernel_size + 1, stride), (last + padding) // stride


def _union(*spans: tuple[int, int]) -> tuple[int, int]:
    return min(span[0] for span in spans), max(span[1] for span in spans)


# --------------------------------------------------------------------------------------------------------------------
# Snake activation
# --------------------------------------------------------------------------------------------------------------------


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass filter `[kernel_size]` (float32, unit DC gain), as in BigVGAN's alias-free
    activations. `cutoff` and `half_width` are fractions of the sampling rate."""
    half_size = kernel_size // 2
    attenuation = 2.285 * (half_size - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta, dtype=torch.float64)
    if kernel_size % 2 == 0:
        time = torch.arange(-half_size, half_size, dtype=torch.float64) + 0.5
    else:
        time = torch.arange(kernel_size, dtype=torch.float64) - half_size
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps / taps.sum()).float()


# --------------------------------------------------------------------------------------------------------------------
# Snake
# --------------------------------------------------------------------------------------------------------------------


# Inference-time Snake in one pass over memory, compiled on first use (`load_c_kernel`). In PyTorch it takes five
# element-wise passes through a float32 buffer plus casts; on long audio those passes are memory-bound and cost as much
# as the vocoder's convolutions (bfloat16, 20 s of audio: about 30x faster per activation, 40% less vocoder time).
_SNAKE_C_SOURCE = r"""#include <pthread.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

/* Snake, x + sin^2(alpha x) / alpha, over rows of contiguous values: time series of one channel ([B, C, T]) or
   whole time steps of all channels (channels-last), in float32 arithmetic whatever the storage (float32 or
   bfloat16). sin^2 has period pi, so u = alpha x is reduced to r = u - k pi/2 (k the nearest integer), and sin^2(u)
   is sin^2(r) for even k and cos^2(r) for odd k, with |r| <= pi/4 where short minimax polynomials are exact to float
   precision. Branch-free inner loops, compiled for AVX-512 and AVX2 next to the baseline (picked at load time), so
   that they vectorise. */

#if defined(VECTOR_CLONES)
/* given on the command line (empty: compiled for the -march level alone) */
#elif defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

static inline float select_float(uint32_t take_first, float first, float second) { /* branch-free: vectorises */
    uint32_t a, b, mask = 0u - take_first;
    memcpy(&a, &first, sizeof a);
    memcpy(&b, &second, sizeof b);
    uint32_t bits = (a & mask) | (b & ~mask);
    float result;
    memcpy(&result, &bits, sizeof result);
    return result;
}

static inline float square_of_sin_or_cos(float r, uint32_t odd) { /* sin^2(r) (even) or cos^2(r) (odd), |r| <= pi/4 */
    float r2 = r * r;
    float s = r + r * r2 * (-1.6666654611e-1f + r2 * (8.3321608736e-3f + r2 * -1.9515295891e-4f));
    float c = 1.0f - 0.5f * r2
              + r2 * r2 * (4.166664568298827e-2f + r2 * (-1.388731625493765e-3f + r2 * 2.443315711809948e-5f));
    float v = select_float(odd, c, s);
    return v * v;
}

/* |u| < 65536: k in float, and r = u - k pi/2 with pi/2 split in three floats, each step one fused
   multiply-add (exact product), so r keeps float precision. */
static inline float sin_squared_small(float u) {
    const float round_shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds a float to an integer */
    float shifted = u * 0.636619772367581343f + round_shift;
    float k = shifted - round_shift;
    uint32_t bits;
    memcpy(&bits, &shifted, sizeof bits); /* the low mantissa bit is the parity of k */
    float r = fmaf(-k, 1.57079637050628662109375f, u);
    r = fmaf(-k, -4.371138828673793e-8f, r);
    r = fmaf(-k, -1.7763568394002505e-15f, r);
    return square_of_sin_or_cos(r, bits & 1);
}

/* Any u: k and r in double (exact for |u| up to 2^51, past which float32 has no phase left). */
static inline float sin_squared_any(float u) {
    const double round_shift = 6755399441055744.0; /* 1.5 * 2^52 */
    double shifted = (double)u * 0.63661977236758134308 + round_shift;
    double k = shifted - round_shift;
    uint64_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    float v2 = square_of_sin_or_cos((float)((double)u - k * 1.57079632679489661923), bits & 1);
    return v2 > 1.0f ? 1.0f : v2; /* |u| beyond 2^51, where float32 has no phase left; NaN stays NaN */
}

static inline float bf16_to_float(uint16_t value) {
    uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, sizeof result);
    return result;
}

static inline uint16_t float_to_bf16(float value) { /* round to nearest even, NaN kept quiet */
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    uint32_t quiet_nan = (bits >> 16) | 0x40u, is_nan = (bits & 0x7FFFFFFFu) > 0x7F800000u, mask = 0u - is_nan;
    return (uint16_t)((quiet_nan & mask) | (rounded & ~mask));
}

/* One row of n values. ALPHA(i) is the alpha of value i: the row's channel (rows of one channel, [B, C, T]) or
   channel i (channels-last rows of one time step, [B, T, C]). The row is computed with the float reduction, finding
   its largest |alpha x| on the way (as integers: the bit patterns of non-negative floats order like their values,
   and NaN is above inf). When that is small, every argument was, which is the usual case; otherwise (large values,
   inf or NaN) the row is computed again with the double reduction. */
#define SMALL_ARGUMENT_BITS 0x47800000u /* 65536.0f */
#define DEFINE_SNAKE_ROW(NAME, TYPE, LOAD, STORE, ALPHA)                                                              \
    VECTOR_CLONES static void NAME(const TYPE *restrict x, TYPE *restrict out, int64_t n,                            \
                                   const float *restrict alpha, const float *restrict inverse_alpha) {               \
        uint32_t largest = 0;                                                                                         \
        for (int64_t i = 0; i < n; ++i) {                                                                             \
            float value = LOAD(x[i]), u = value * alpha[ALPHA];                                                       \
            uint32_t bits;                                                                                            \
            memcpy(&bits, &u, sizeof bits);                                                                           \
            bits &= 0x7FFFFFFFu;                                                                                      \
            largest = bits > largest ? bits : largest;                                                                \
            out[i] = STORE(value + sin_squared_small(u) * inverse_alpha[ALPHA]);                                      \
        }                                                                                                             \
        if (largest < SMALL_ARGUMENT_BITS) return;                                                                    \
        for (int64_t i = 0; i < n; ++i) {                                                                             \
            float value = LOAD(x[i]);                                                                                 \
            out[i] = STORE(value + sin_squared_any(value * alpha[ALPHA]) * inverse_alpha[ALPHA]);                     \
        }                                                                                                             \
    }

#define AS_IS(value) (value)
DEFINE_SNAKE_ROW(snake_f32_channel, float, AS_IS, AS_IS, 0)
DEFINE_SNAKE_ROW(snake_f32_channels_last, float, AS_IS, AS_IS, i)
DEFINE_SNAKE_ROW(snake_bf16_channel, uint16_t, bf16_to_float, float_to_bf16, 0)
DEFINE_SNAKE_ROW(snake_bf16_channels_last, uint16_t, bf16_to_float, float_to_bf16, i)

typedef struct {
    const char *x;
    char *out;
    const float *alpha, *inverse_alpha;
    int64_t first_row, end_row, total, channels, length, is_bf16, channels_last;
} snake_job;

static void *snake_rows(void *argument) {
    const snake_job *job = (const snake_job *)argument;
    int64_t value_bytes = job->is_bf16 ? 2 : 4;
    for (int64_t row = job->first_row; row < job->end_row; ++row) {
        int64_t first = row * job->length, n = job->total - first < job->length ? job->total - first : job->length;
        const char *x = job->x + first * value_bytes;
        char *out = job->out + first * value_bytes;
        if (job->channels_last) {
            if (job->is_bf16)
                snake_bf16_channels_last((const uint16_t *)x, (uint16_t *)out, n, job->alpha, job->inverse_alpha);
            else
                snake_f32_channels_last((const float *)x, (float *)out, n, job->alpha, job->inverse_alpha);
            continue;
        }
        int64_t channel = row % job->channels;
        const float *alpha = job->alpha + channel, *inverse_alpha = job->inverse_alpha + channel;
        if (job->is_bf16)
            snake_bf16_channel((const uint16_t *)x, (uint16_t *)out, n, alpha, inverse_alpha);
        else
            snake_f32_channel((const float *)x, (float *)out, n, alpha, inverse_alpha);
    }
    return NULL;
}

#define MAX_THREADS 256

/* x, out: `total` contiguous values, not overlapping, in rows of `length` (the last one may be shorter). Without
   channels_last, row r is a time series of channel r % channels and alpha, inverse_alpha hold `channels` float32
   values; with channels_last, a row holds whole time steps of all channels and alpha, inverse_alpha hold the alphas
   of a row (the `channels` values repeated, `length` in all). Returns 0. */
int omni_snake(const void *x, void *out, int64_t is_bf16, int64_t channels_last, int64_t total, int64_t channels,
               int64_t length, const float *alpha, const float *inverse_alpha, int64_t num_threads) {
    int64_t rows = (total + length - 1) / length;
    if (num_threads > rows) num_threads = rows;
    if (num_threads > MAX_THREADS) num_threads = MAX_THREADS;
    if (num_threads < 1) num_threads = 1;
    snake_job jobs[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS];
    for (int64_t t = 0; t < num_threads; ++t) {
        jobs[t] = (snake_job){(const char *)x, (char *)out, alpha, inverse_alpha, rows * t / num_threads,
                              rows * (t + 1) / num_threads, total, channels, length, is_bf16, channels_last};
        started[t] = t > 0 && pthread_create(&threads[t], NULL, snake_rows, &jobs[t]) == 0;
        if (t > 0 && !started[t]) snake_rows(&jobs[t]); /* no thread available: do its rows here */
    }
    snake_rows(&jobs[0]);
    for (int64_t t = 1; t < num_threads; ++t)
        if (started[t]) pthread_join(threads[t], NULL);
    return 0;
}
"""


@functools.cache
def _snake_kernel(march: str | None = None):
    """The compiled Snake kernel (a ctypes function), or None where it cannot be built (see [`load_c_kernel`]).

    By default one library holds the AVX-512, AVX2 and baseline x86-64 versions and the loader picks the one the CPU
    runs (GCC's `target_clones`), so it is right on every x86 CPU; `march` (e.g. "x86-64-v3", AVX2) builds that level
    alone instead, which lets the tests run each version on a CPU that has more."""
    flags = ("-pthread", "-lm") + ((f"-march={march}", "-DVECTOR_CLONES=") if march else ())
    library = load_c_kernel("snake", _SNAKE_C_SOURCE, flags)
    if library is None:
        return None
    function = library.omni_snake
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 5 + [ctypes.c_void_p] * 2 + [ctypes.c_int64]
    return function


# Below this many values one thread does the whole tensor (starting threads would cost more).
_SNAKE_VALUES_PER_THREAD = 1 << 16


# Channels-last rows of the kernel hold whole time steps, about this many values (short rows cost overhead).
_SNAKE_CHANNELS_LAST_ROW = 4096


def _snake_with_kernel(
    kernel, hidden_states: torch.Tensor, alpha: torch.Tensor, inverse_alpha: torch.Tensor
) -> torch.Tensor:
    """Snake of a CPU float32/bfloat16 tensor with the C kernel: contiguous `[B, C, T]`, or channels-last
    `[B, C, 1, T]` (see [`OmniVocoder`]); `alpha`, `inverse_alpha`: `C` float32 values. Returns a new tensor of the
    input's dtype and layout."""
    output = torch.empty_like(hidden_states)
    channels, total = hidden_states.shape[1], hidden_states.numel()
    channels_last = hidden_states.dim() == 4
    if channels_last:
        steps_per_row = max(1, _SNAKE_CHANNELS_LAST_ROW // channels)
        alpha, inverse_alpha = alpha.flatten().repeat(steps_per_row), inverse_alpha.flatten().repeat(steps_per_row)
        length = channels * steps_per_row
    else:
        alpha, inverse_alpha, length = alpha.contiguous(), inverse_alpha.contiguous(), hidden_states.shape[-1]
    threads = min(torch.get_num_threads(), max(1, total // _SNAKE_VALUES_PER_THREAD))
    kernel(
        hidden_states.data_ptr(), output.data_ptr(), int(hidden_states.dtype == torch.bfloat16), int(channels_last),
        total, channels, length, alpha.data_ptr(), inverse_alpha.data_ptr(), threads,
    )
    return output


class OmniSnake(nn.Module):
    """Snake activation `x + 1/alpha * sin²(alpha * x)` with a learnable frequency `alpha` per channel (BigVGAN).

    Numerically safe for any `alpha`: `1/alpha` is taken as `sign(alpha) / max(|alpha|, eps)`, so `alpha -> 0` tends
    to the identity (the true limit) instead of dividing by zero. Low-precision inputs (bf16/fp16) are computed in
    float32 and cast back.

    With `anti_alias=True` the activation runs at twice the sampling rate between Kaiser-sinc low-pass filters
    (BigVGAN's alias-free `Activation1d`: 12-tap filters, replicate padding), so the harmonics Snake creates do not
    fold back into the band. The filters are derived data, rebuilt per device on first use; they are not saved.

    Args:
        channels: number of channels (dim 1 of the input).
        alpha: initial value of `alpha`.
        log_scale_alpha: store `log(alpha)` instead of `alpha` (BigVGAN's `alpha_logscale`; keeps `alpha > 0`).
        anti_alias: apply the activation alias-free at 2× the sampling rate.
        eps: smallest `|alpha|` divided by.

    Shapes: `[B, channels, T] -> [B, channels, T]`.
    """

    upsample_ratio = 2
    filter_size = 12

    def __init__(
        self,
        channels: int,
        alpha: float = 1.0,
        log_scale_alpha: bool = False,
        anti_alias: bool = False,
        eps: float = 1e-9,
    ):
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"The initial Snake alpha must be > 0, got {alpha}.")
        self.channels = channels
        self.alpha_init = alpha
        self.log_scale_alpha = log_scale_alpha
        self.anti_alias = anti_alias
        self.eps = eps
        initial = math.log(alpha) if log_scale_alpha else alpha
        self.alpha = nn.Parameter(torch.full((1, channels, 1), initial))
        self._filters: dict[str, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return f"{self.channels}, log_scale_alpha={self.log_scale_alpha}, anti_alias={self.anti_alias}"

    def snake(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The plain Snake function of `[B, C, T]` (or channels-last `[B, C, 1, T]`, see [`OmniVocoder`]), computed in
        float32, returned in the dtype of `hidden_states`."""
        alpha = self.alpha.float()
        if hidden_states.dim() == 4:
            alpha = alpha.unsqueeze(-1)
        if self.log_scale_alpha:
            alpha = alpha.exp()
            inverse_alpha = 1.0 / alpha.clamp_min(self.eps)
        else:
            inverse_alpha = torch.sign(alpha) / alpha.abs().clamp_min(self.eps)
        layout = torch.channels_last if hidden_states.dim() == 4 else torch.contiguous_format
        if (
            not torch.is_grad_enabled()
            and hidden_states.device.type == "cpu"
            and hidden_states.dtype in (torch.float32, torch.bfloat16)
            and hidden_states.is_contiguous(memory_format=layout)
            and not torch.compiler.is_compiling()
            and (kernel := _snake_kernel()) is not None
        ):
            return _snake_with_kernel(kernel, hidden_states, alpha, inverse_alpha)
        # Mixed-dtype ops promote a bf16/fp16 input to float32 as they read it (no separate upcast pass), and squaring
        # by a multiplication is several times cheaper than `pow(2)` on CPU.
        if torch.is_grad_enabled():
            sine = torch.sin(hidden_states * alpha)
            return torch.addcmul(hidden_states, sine * sine, inverse_alpha).to(hidden_states.dtype)
        # Without autograd, everything in place in one float32 buffer: on long audio fresh buffers of this size cost
        # more (page faults, cache misses) than the arithmetic. Same operations and roundings as `addcmul`.
        sine = (hidden_states * alpha).sin_()
        return sine.mul_(sine).mul_(inverse_alpha).add_(hidden_states).to(hidden_states.dtype)

    def low_pass_filter(self, device: torch.device) -> torch.Tensor:
        """The anti-aliasing filter `[1, 1, filter_size]` in float32 on `device` (cutoff at the input Nyquist)."""
        key = str(device)
        if key not in self._filters:
            ratio = self.upsample_ratio
            taps = kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, self.filter_size)
            self._filters[key] = taps.to(device).view(1, 1, -1)
        return self._filters[key]

    # Padding of the 2× upsampler (replicate-pad, transposed conv, crop) and of the low-pass downsampler.
    @property
    def _upsample_padding(self) -> tuple[int, int]:
        ratio, size = self.upsample_ratio, self.filter_size
        pad = size // ratio - 1
        return pad, pad * ratio + (size - ratio) // 2  # (input pad each side, output crop on the left)

    @property
    def _downsample_padding(self) -> tuple[int, int]:
        return self.filter_size // 2 - int(self.filter_size % 2 == 0), self.filter_size // 2

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        if not self.anti_alias:
            return self.snake(hidden_states)
        ratio, size = self.upsample_ratio, self.filter_size
        channels, length = hidden_states.shape[1], hidden_states.shape[-1]
        taps = self.low_pass_filter(hidden_states.device).expand(channels, 1, size)
        pad, crop = self._upsample_padding
        upsampled = nn.functional.pad(hidden_states.float(), (pad, pad), mode="replicate")
        upsampled = ratio * nn.functional.conv_transpose1d(upsampled, taps, stride=ratio, groups=channels)
        upsampled = upsampled[..., crop : crop + ratio * length]
        activated = nn.functional.pad(self.snake(upsampled), self._downsample_padding, mode="replicate")
        return nn.functional.conv1d(activated, taps, stride=ratio, groups=channels).to(dtype)

    def input_span(self, first: int, last: int) -> tuple[int, int]:
        """Input samples that output samples `first..last` depend on."""
        if not self.anti_alias:
            return first, last
        ratio, size = self.upsample_ratio, self.filter_size
        down_left = self._downsample_padding[0]
        pad, crop = self._upsample_padding
        # The downsampler's output m reads 2×-rate samples ratio*m - down_left .. ratio*m - down_left + size - 1.
        first, last = ratio * first - down_left, ratio * last - down_left + size - 1
        # 2×-rate sample u is the transposed convolution's output u + crop over the input padded by `pad`.
        first, last = _transposed_conv_input_span(first + crop, last + crop, size, ratio, 0)
        return first - pad, last - pad


# --------------------------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------------------------


def _convolve(conv: nn.Conv1d | nn.ConvTranspose1d, hidden_states: torch.Tensor) -> torch.Tensor:
    """`conv` on `[B, C, T]`, or on channels-last `[B, C, 1, T]` as the same operation in 2D with a `1 x kernel`
    kernel (see [`OmniVocoder`]: oneDNN runs that layout without re-laying-out the activations)."""
    if hidden_states.dim() == 3:
        return conv(hidden_states)
    weight = conv.weight.unsqueeze(2)
    stride, padding, dilation = (1, conv.stride[0]), (0, conv.padding[0]), (1, conv.dilation[0])
    if isinstance(conv, nn.ConvTranspose1d):
        output_padding = (0, conv.output_padding[0])
        return nn.functional.conv_transpose2d(
            hidden_states, weight, conv.bias, stride, padding, output_padding, conv.groups, dilation
        )
    return nn.functional.conv2d(hidden_states, weight, conv.bias, stride, padding, dilation, conv.groups)


def _time_mask(lengths: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """`1` on each item's first `lengths[b]` time steps of `like` (`[B, C, T]` or `[B, C, 1, T]`), `0` after, in a
    shape that broadcasts against it; `None` for `lengths=None` (nothing to mask)."""
    if lengths is None:
        return None
    valid = lengths_to_mask(lengths, like.shape[-1])
    return valid.to(like.dtype).view(like.shape[0], *(1,) * (like.dim() - 2), like.shape[-1])


def _zero_padding(hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the time steps past each item's end (see [`_time_mask`]), in place without autograd."""
    if mask is None:
        return hidden_states
    return hidden_states.mul_(mask) if not torch.is_grad_enabled() else hidden_states * mask


class OmniAMPBlock(nn.Module):
    """Multi-periodicity residual block (BigVGAN's AMPBlock1: HiFi-GAN's ResBlock1 with Snake activations, alias-free
    with `anti_alias=True`).

    For each dilation `d`: `x = x + conv2(snake(conv1_d(snake(x))))`, where `conv1_d` has kernel `kernel_size` and
    dilation `d` and `conv2` dilation 1. Lengths are preserved ("same" zero padding).

    Args:
        channels: channels in and out.
        kernel_size: odd kernel size of both convolutions.
        dilations: dilation of the first convolution of each residual unit.
        log_scale_alpha, anti_alias: see [`OmniSnake`].

    Shapes: `[B, channels, T] -> [B, channels, T]`.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        dilations: Sequence[int] = (1, 3, 5),
        log_scale_alpha: bool = False,
        anti_alias: bool = False,
    ):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilations
        )
        self.activations = nn.ModuleList(
            OmniSnake(channels, log_scale_alpha=log_scale_alpha, anti_alias=anti_alias)
            for _ in range(2 * len(dilations))
        )

    def forward(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`padding_mask` (from [`_time_mask`]): zero past each item's end after every convolution, so that every
        layer of a padded batch sees zeros there, as the zero padding of an item decoded alone."""
        in_place = not torch.is_grad_enabled()
        for index, (conv1, conv2) in enumerate(zip(self.convs1, self.convs2)):
            # One expression, so that each intermediate is freed as soon as the next exists (peak memory).
            first_activation, second_activation = self.activations[2 * index], self.activations[2 * index + 1]
            residual = _zero_padding(
                _convolve(
                    conv2,
                    second_activation(_zero_padding(_convolve(conv1, first_activation(hidden_states)), padding_mask)),
                ),
                padding_mask,
            )
            # Without autograd the sum goes into the fresh residual: no third tensor of this size.
            hidden_states = residual.add_(hidden_states) if in_place else hidden_states + residual
        return hidden_states

    def input_span(self, first: int, last: int) -> tuple[int, int]:
        """Input samples that output samples `first..last` depend on."""
        for index in reversed(range(len(self.convs1))):
            span = _conv_input_span(self.convs2[index], first, last)
            span = self.activations[2 * index + 1].input_span(*span)
            span = _conv_input_span(self.convs1[index], *span)
            span = self.activations[2 * index].input_span(*span)
            first, last = _union(span, (first, last))
        return first, last


class OmniMultiReceptiveFieldFusion(GradientCheckpointingLayer):
    """Multi-receptive-field fusion (HiFi-GAN): the mean of parallel [`OmniAMPBlock`]s with different kernel sizes,
    so short kernels model fine detail and long ones broader structure.

    Shapes: `[B, channels, T] -> [B, channels, T]`.
    """

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int] = (3, 7, 11),
        dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        log_scale_alpha: bool = False,
        anti_alias: bool = False,
    ):
        super().__init__()
        self.resblocks = nn.ModuleList(
            OmniAMPBlock(channels, kernel_size, dilations, log_scale_alpha, anti_alias)
            for kernel_size, dilations in zip(kernel_sizes, dilation_sizes)
        )

    def forward(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        in_place = not torch.is_grad_enabled()  # every resblock returns a fresh tensor: accumulate into the first
        output = self.resblocks[0](hidden_states, padding_mask)
        for resblock in self.resblocks[1:]:
            branch = resblock(hidden_states, padding_mask)
            output = output.add_(branch) if in_place else output + branch
        return output.div_(len(self.resblocks)) if in_place else output / len(self.resblocks)

    def input_span(self, first: int, last: int) -> tuple[int, int]:
        """Input samples that output samples `first..last` depend on."""
        return _union(*(resblock.input_span(first, last) for resblock in self.resblocks))


def _weight_norm_layout(state_dict: dict, key: str, weight: torch.Tensor) -> None:
    """Store `weight` under `key` as weight norm's `(g, v)`: `g = ||weight||` per slice of dim 0, `v = weight`."""
    with torch.no_grad():
        weight = weight.detach()
        state_dict[f"{key}.parametrizations.weight.original0"] = torch.norm_except_dim(weight, 2, 0)
        state_dict[f"{key}.parametrizations.weight.original1"] = weight


def _save_in_weight_norm_layout(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    # state_dict post-hook of modules with weight-normalised convolutions: convolutions whose weight norm was removed
    # are saved as (g, v) too, so every checkpoint has the layout of a freshly built model.
    for name, conv in module.named_modules():
        if isinstance(conv, _CONVOLUTIONS) and not parametrize.is_parametrized(conv, "weight"):
            key = f"{prefix}{name}"
            weight = state_dict.pop(f"{key}.weight", None)
            if weight is not None:
                _weight_norm_layout(state_dict, key, weight)


def _load_either_layout(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    # load_state_dict pre-hook: fold (g, v) into `weight` for convolutions whose weight norm was removed, and split a
    # plain `weight` into (g, v) for weight-normalised ones, so `load_state_dict` accepts both layouts.
    for name, conv in module.named_modules():
        if not isinstance(conv, _CONVOLUTIONS):
            continue
        key = f"{prefix}{name}"
        g_key, v_key = f"{key}.parametrizations.weight.original0", f"{key}.parametrizations.weight.original1"
        if parametrize.is_parametrized(conv, "weight"):
            if f"{key}.weight" in state_dict and v_key not in state_dict:
                _weight_norm_layout(state_dict, key, state_dict.pop(f"{key}.weight"))
        elif g_key in state_dict and v_key in state_dict:
            state_dict[f"{key}.weight"] = torch._weight_norm(state_dict.pop(v_key), state_dict.pop(g_key), 0)


def _weight_normalise(module: nn.Module) -> None:
    """Weight-normalise every convolution of `module` and make its checkpoints independent of later removal."""
    for conv in module.modules():
        if isinstance(conv, _CONVOLUTIONS):
            weight_norm(conv)
    module.register_state_dict_post_hook(_save_in_weight_norm_layout)
    module.register_load_state_dict_pre_hook(_load_either_layout)


class OmniVocoder(nn.Module):
    """BigVGAN-style waveform decoder: log-mel `[B, frames, n_mels]` -> waveform `[B, frames * hop_length]` in
    `[-1, 1]`.

    `input_proj` (conv 7) -> for each upsample rate: transposed conv (channels halve) -> multi-receptive-field fusion
    of [`OmniAMPBlock`]s -> Snake -> `output_conv` (conv 7, one channel) -> tanh. Each transposed convolution of rate
    `r` and kernel `k` uses padding `(k - r) / 2`, so every stage multiplies the length exactly by `r` and
    `hop_length = prod(upsample_rates)` samples come out per mel frame (256 by default: 16 ms at 16 kHz).

    **Weight norm.** Every convolution is built weight-normalised (`torch.nn.utils.parametrizations.weight_norm`), the
    layout to train in; [`remove_weight_norm`] folds it away for inference with identical outputs (up to float
    rounding), [`apply_weight_norm`] restores it. Checkpoints are always in the weight-norm layout (keys
    `<conv>.parametrizations.weight.original0` = g, `.original1` = v, as in the reference checkpoint): a model whose
    weight norm was removed saves each weight as `g = ||w||`, `v = w`, so `save_pretrained` -> `from_pretrained`
    works in both states (a loaded model is weight-normalised; call `remove_weight_norm()` again for inference), and
    `load_state_dict` accepts either layout in either state.

    **Streaming.** Every layer is convolutional, so an output frame depends on a fixed window of mel frames:
    [`context_frames`] computes it exactly from the layers (13 frames on each side for the default architecture).
    [`stream`] decodes overlapping chunks with that context and crops it, so the chunks concatenate to `forward(mel)`.
    On CPU without autograd, `forward` itself decodes long mels that way (see `inference_chunk_frames`).

    **CPU inference layout.** Without autograd on CPU, the activations are kept channels-last, as `[B, C, 1, T]`
    tensors in `torch.channels_last` memory (i.e. `[B, T, C]`), and every convolution runs as its 2D form with a
    `1 x kernel` kernel: oneDNN computes in that layout, and would otherwise re-lay-out every convolution's input and
    output (1.4-2x faster convolutions in bfloat16). The outputs are those of the usual `[B, C, T]` path up to float
    rounding.

    Args:
        n_mels: mel bins of the input.
        initial_channels: channels after `input_proj`; halved by every upsampling stage.
        upsample_rates: upsampling factor of each stage; their product is `hop_length`.
        upsample_kernel_sizes: kernel of each transposed convolution (`kernel >= rate`, `kernel - rate` even).
        resblock_kernel_sizes: kernel sizes (odd) of the parallel residual blocks of each fusion.
        resblock_dilation_sizes: dilations of each of those residual blocks.
        log_scale_alpha: Snake alphas stored as logarithms (see [`OmniSnake`]).
        anti_alias: alias-free Snake activations at 2× rate (BigVGAN); slower, and a wider receptive field.
        inference_chunk_frames: without autograd on CPU, `forward` decodes mels of more than this many frames in
            equal chunks of at most this many (as [`stream`] does, with the exact context): the same waveform up to
            float rounding, with peak memory bounded by the chunk instead of growing with the audio, and faster on
            long inputs, whose full-length activations (tens of MB per layer) miss the caches and are re-faulted from
            the OS at every allocation (about 20 % less time at 40 s of audio, bfloat16). 0 always decodes in one pass.
    """

    def __init__(
        self,
        n_mels: int = 80,
        initial_channels: int = 512,
        upsample_rates: Sequence[int] = (8, 8, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (16, 16, 4, 4),
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        log_scale_alpha: bool = False,
        anti_alias: bool = False,
        inference_chunk_frames: int = 512,
    ):
        super().__init__()
        if inference_chunk_frames < 0:
            raise ValueError(f"inference_chunk_frames must be >= 0 (0 = one pass), got {inference_chunk_frames}.")
        validate_vocoder_layout(
            n_mels, initial_channels, upsample_rates, upsample_kernel_sizes, resblock_kernel_sizes,
            resblock_dilation_sizes,
        )
        self.n_mels = n_mels
        self.upsample_rates = tuple(upsample_rates)
        self.inference_chunk_frames = inference_chunk_frames
        self.input_proj = nn.Conv1d(n_mels, initial_channels, 7, padding=3)
        channels = [initial_channels // 2**stage for stage in range(len(upsample_rates) + 1)]
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose1d(channels[stage], channels[stage + 1], kernel, stride=rate, padding=(kernel - rate) // 2)
            for stage, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernel_sizes))
        )
        self.mrf_blocks = nn.ModuleList(
            OmniMultiReceptiveFieldFusion(
                channels[stage + 1], resblock_kernel_sizes, resblock_dilation_sizes, log_scale_alpha, anti_alias
            )
            for stage in range(len(upsample_rates))
        )
        self.final_activation = OmniSnake(channels[-1], log_scale_alpha=log_scale_alpha, anti_alias=anti_alias)
        self.output_conv = nn.Conv1d(channels[-1], 1, 7, padding=3)
        _weight_normalise(self)

    @property
    def hop_length(self) -> int:
        """Waveform samples per mel frame: the product of the upsample rates."""
        return math.prod(self.upsample_rates)

    @property
    def context_frames(self) -> tuple[int, int]:
        """`(left, right)`: how many mel frames before and after a frame its `hop_length` output samples depend on.

        Computed exactly by walking the receptive field back through every layer (convolution padding and dilation,
        transposed-convolution taps, anti-aliasing filters).
        """
        first, last = _conv_input_span(self.output_conv, 0, self.hop_length - 1)
        first, last = self.final_activation.input_span(first, last)
        for upsampler, mrf in zip(reversed(self.upsamplers), reversed(self.mrf_blocks)):
            first, last = mrf.input_span(first, last)
            first, last = _transposed_conv_input_span(
                first, last, upsampler.kernel_size[0], upsampler.stride[0], upsampler.padding[0]
            )
        first, last = _conv_input_span(self.input_proj, first, last)
        return -first, last

    def apply_weight_norm(self) -> None:
        """Weight-normalise every convolution that is not (the training layout, as built)."""
        for conv in self.modules():
            if isinstance(conv, _CONVOLUTIONS) and not parametrize.is_parametrized(conv, "weight"):
                weight_norm(conv)

    def remove_weight_norm(self) -> None:
        """Fold weight norm into plain weights (for inference: same outputs, less work per forward)."""
        for conv in self.modules():
            if isinstance(conv, _CONVOLUTIONS) and parametrize.is_parametrized(conv, "weight"):
                parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)

    def _check_mel(self, mel: torch.Tensor, mel_lengths: torch.Tensor | None = None) -> None:
        if mel.dim() != 3 or mel.shape[-1] != self.n_mels or mel.shape[1] == 0:
            raise ValueError(
                f"Expected a log-mel spectrogram of shape [batch, frames, n_mels={self.n_mels}] (frames >= 1), got "
                f"{tuple(mel.shape)}."
            )
        if mel_lengths is None:
            return
        if (
            not isinstance(mel_lengths, torch.Tensor)
            or mel_lengths.shape != (mel.shape[0],)
            or mel_lengths.is_floating_point()
            or mel_lengths.is_complex()
        ):
            raise ValueError(
                f"mel_lengths must be an integer tensor of shape [batch={mel.shape[0]}] (valid frames of each item), "
                f"got {mel_lengths!r}."
            )
        if not torch.compiler.is_compiling() and bool(((mel_lengths < 0) | (mel_lengths > mel.shape[1])).any()):
            raise ValueError(f"mel_lengths must lie in [0, frames={mel.shape[1]}], got {mel_lengths.tolist()}.")

    def forward(self, mel: torch.Tensor, mel_lengths: torch.LongTensor | None = None) -> torch.Tensor:
        """
        Args:
            mel (`torch.FloatTensor` of shape `(batch_size, frames, n_mels)`, or `(frames, n_mels)`):
                Log-mel spectrogram (as [`OmniMelSpectrogram`] computes it).
            mel_lengths (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Valid frames of each item of a padded batch. Each item's waveform is then the one it gets decoded
                alone (every layer sees zeros past its end, as the zero padding of a lone item), and zero after
                `mel_lengths * hop_length` samples. Exact without `anti_alias`; with it, the anti-aliasing filters'
                replicate padding at an item's end sees zeros instead, which changes the last samples a little.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, frames * hop_length)` (or `(frames * hop_length,)`): the
            waveform in `[-1, 1]`, in the dtype of the model.
        """
        unbatched = mel.dim() == 2
        if unbatched and mel_lengths is not None:
            raise ValueError("mel_lengths is for a padded batch [batch, frames, n_mels]; got one unbatched mel.")
        mel = mel[None] if unbatched else mel
        self._check_mel(mel, mel_lengths)
        num_frames, chunk_frames = mel.shape[1], self.inference_chunk_frames
        if chunk_frames and num_frames > chunk_frames and mel.device.type == "cpu" and not torch.is_grad_enabled():
            num_chunks = -(-num_frames // chunk_frames)  # equal chunks: none is left with little but context
            chunks = self.stream(mel, -(-num_frames // num_chunks), mel_lengths=mel_lengths)
            waveform = torch.cat(list(chunks), dim=-1)
        else:
            waveform = self._decode(mel, mel_lengths)
        return waveform[0] if unbatched else waveform

    def _decode(self, mel: torch.Tensor, mel_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, frames, n_mels]` -> `[B, frames * hop_length]` in one pass; with `mel_lengths`, every convolution's
        output is zeroed past each item's end (at that stage's rate)."""
        dtype = self.input_proj.bias.dtype
        if mel_lengths is not None and (torch.compiler.is_compiling() or bool((mel_lengths < mel.shape[1]).any())):
            lengths = mel_lengths
        else:
            lengths = None  # nothing is padded
        if self._runs_channels_last(mel):
            # [B, frames, n_mels] is already the memory of a channels-last [B, n_mels, 1, frames]: no copy.
            hidden_states = mel.to(dtype).contiguous().unsqueeze(1).permute(0, 3, 1, 2)
        else:
            hidden_states = mel.transpose(1, 2).to(dtype)
        padding_mask = _time_mask(lengths, hidden_states)
        if padding_mask is not None:
            hidden_states = hidden_states * padding_mask  # not in place: it may be the caller's mel
        hidden_states = _zero_padding(_convolve(self.input_proj, hidden_states), padding_mask)
        for rate, upsampler, mrf in zip(self.upsample_rates, self.upsamplers, self.mrf_blocks):
            hidden_states = _convolve(upsampler, hidden_states)  # frees the stage's input before the fusion runs
            lengths = None if lengths is None else lengths * rate
            padding_mask = _time_mask(lengths, hidden_states)
            hidden_states = mrf(_zero_padding(hidden_states, padding_mask), padding_mask)
        hidden_states = _convolve(self.output_conv, self.final_activation(hidden_states))
        waveform = torch.tanh(_zero_padding(hidden_states, padding_mask))
        return waveform.reshape(waveform.shape[0], -1)

    def _runs_channels_last(self, mel: torch.Tensor) -> bool:
        """Whether this decode runs channels-last (see the class docstring): CPU inference with plain convolutions
        (not, e.g., LoRA-wrapped ones) and without anti-aliasing."""
        if torch.is_grad_enabled() or mel.device.type != "cpu" or self.final_activation.anti_alias:
            return False
        convolutions = [self.input_proj, self.output_conv, *self.upsamplers]
        for mrf in self.mrf_blocks:
            for resblock in mrf.resblocks:
                convolutions += [*resblock.convs1, *resblock.convs2]
        return all(
            isinstance(conv, (nn.Conv1d, nn.ConvTranspose1d)) and conv.padding_mode == "zeros"
            for conv in convolutions
        )

    def stream(
        self,
        mel: torch.Tensor,
        chunk_frames: int,
        context_frames: int | tuple[int, int] | None = None,
        mel_lengths: torch.LongTensor | None = None,
    ) -> Iterator[torch.Tensor]:
        """Decode `mel` chunk by chunk; the chunks concatenated along time equal `forward(mel)` (up to float
        rounding).

        Each chunk of `chunk_frames` mel frames is decoded together with `context_frames` frames of its neighbours
        on each side (fewer at the ends of `mel`, where `forward` zero-pads too); the samples of the context are cut
        off. Run it under `torch.inference_mode()` (and after [`remove_weight_norm`]) for speed.

        Args:
            mel (`torch.FloatTensor` of shape `(batch_size, frames, n_mels)`): the log-mel spectrogram.
            chunk_frames: mel frames per chunk (the last chunk may be shorter).
            context_frames: frames of context `(left, right)` or the same on both sides. Defaults to
                [`context_frames`], the exact receptive field; more changes nothing, less gives an approximation
                (the outermost frames of the receptive field weigh in very little: on small random models one
                frame less per side still matched within float32 rounding, half the context did not).
            mel_lengths (`torch.LongTensor` of shape `(batch_size,)`, *optional*): valid frames of each item of a
                padded batch, as in `forward`.

        Yields:
            `torch.FloatTensor` of shape `(batch_size, chunk_frames * hop_length)` (shorter for the last chunk).
        """
        self._check_mel(mel, mel_lengths)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}.")
        if context_frames is None:
            context_frames = self.context_frames
        left, right = (context_frames, context_frames) if isinstance(context_frames, int) else context_frames
        if left < 0 or right < 0:
            raise ValueError(f"context_frames must be >= 0, got {context_frames}.")
        num_frames, hop_length = mel.shape[1], self.hop_length
        for start in range(0, num_frames, chunk_frames):
            end = min(start + chunk_frames, num_frames)
            window_start, window_end = max(0, start - left), min(num_frames, end + right)
            window = mel[:, window_start:window_end]
            lengths = None if mel_lengths is None else (mel_lengths - window_start).clamp(0, window.shape[1])
            waveform = self._decode(window, lengths)
            offset = (start - window_start) * hop_length
            yield waveform[:, offset : offset + (end - start) * hop_length]


def init_vocoder_weights(module: nn.Module, std: float = 0.01) -> None:
    """Initialise `module` if it is a layer of [`OmniVocoder`] or of the discriminators; call it from the owning
    `PreTrainedModel._init_weights` for every module (transformers builds models on the meta device, so every
    parameter must be set here).

    Convolutions: weights `N(0, std)` (HiFi-GAN uses `std=0.01`), biases zero; for weight-normalised ones `v ~ N(0,
    std)` and `g = ||v||`, i.e. the same effective weight. Snake: `alpha` at its initial value. Uses
    `transformers.initialization`, so parameters loaded from a checkpoint are left alone.
    """
    if isinstance(module, _CONVOLUTIONS):
        if parametrize.is_parametrized(module, "weight"):
            parametrization = module.parametrizations.weight
            direction, magnitude = parametrization.original1, parametrization.original0
            init.normal_(direction, mean=0.0, std=std)
            init.copy_(magnitude, torch.norm_except_dim(direction.detach(), 2, parametrization[0].dim))
        else:
            init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, OmniSnake):
        init.constant_(module.alpha, math.log(module.alpha_init) if module.log_scale_alpha else module.alpha_init)


# --------------------------------------------------------------------------------------------------------------------
# Discriminators
# --------------------------------------------------------------------------------------------------------------------


def _check_waveform(waveform: torch.Tensor, min_samples: int, what: str) -> None:
    if waveform.dim() != 2:
        raise ValueError(f"{what} expects waveforms of shape [batch, samples], got {tuple(waveform.shape)}.")
    if waveform.shape[-1] < min_samples:
        raise ValueError(f"{what} needs waveforms of at least {min_samples} samples, got {waveform.shape[-1]}.")


class OmniPeriodDiscriminator(nn.Module):
    """HiFi-GAN period discriminator: the waveform folded into `[samples / period, period]` (reflect-padded to a
    multiple of `period`) and scored by strided `(kernel_size, 1)` 2D convolutions, so each column sees one phase of
    the period.

    Args:
        period: folding period in samples.
        channels: output channels of the convolutions before the one-channel `conv_post` (the first
            `len(channels) - 1` are strided by `stride`, the last is not).
        kernel_size, stride: of the convolutions along time.
        leaky_relu_slope: negative slope of the activations.
    """

    def __init__(
        self,
        period: int,
        channels: Sequence[int] = (32, 128, 512, 1024, 1024),
        kernel_size: int = 5,
        stride: int = 3,
        leaky_relu_slope: float = 0.1,
    ):
        super().__init__()
        self.period = period
        self.leaky_relu_slope = leaky_relu_slope
        in_channels = (1, *channels[:-1])
        strides = [stride] * (len(channels) - 1) + [1]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, (kernel_size, 1), (s, 1), padding=((kernel_size - 1) // 2, 0))
            for c_in, c_out, s in zip(in_channels, channels, strides)
        )
        self.conv_post = nn.Conv2d(channels[-1], 1, (3, 1), 1, padding=(1, 0))

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`waveform [B, S]` -> `(logits [B, N], feature maps [B, C_i, S_i, period])`."""
        batch_size, num_samples = waveform.shape
        remainder = num_samples % self.period
        hidden_states = waveform[:, None].to(self.conv_post.bias.dtype)
        if remainder:
            hidden_states = nn.functional.pad(hidden_states, (0, self.period - remainder), mode="reflect")
        hidden_states = hidden_states.view(batch_size, 1, -1, self.period)
        features = []
        for conv in self.convs:
            hidden_states = nn.functional.leaky_relu(conv(hidden_states), self.leaky_relu_slope)
            features.append(hidden_states)
        hidden_states = self.conv_post(hidden_states)
        features.append(hidden_states)
        return hidden_states.flatten(1), features


class OmniMultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN multi-period discriminator: one [`OmniPeriodDiscriminator`] per period (2, 3, 5, 7, 11 by default).

    All convolutions are weight-normalised (like the vocoder's, checkpoints keep the weight-norm layout).
    Initialise with [`init_vocoder_weights`].

    Args:
        periods: the folding periods (primes, so the discriminators see different structure).
        channels, kernel_size, stride, leaky_relu_slope: see [`OmniPeriodDiscriminator`].
    """

    def __init__(
        self,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        channels: Sequence[int] = (32, 128, 512, 1024, 1024),
        kernel_size: int = 5,
        stride: int = 3,
        leaky_relu_slope: float = 0.1,
    ):
        super().__init__()
        if len(periods) == 0 or min(periods) < 1 or len(channels) == 0:
            raise ValueError(
                f"Need periods >= 1 and channels, got periods={list(periods)}, channels={list(channels)}."
            )
        self.discriminators = nn.ModuleList(
            OmniPeriodDiscriminator(period, channels, kernel_size, stride, leaky_relu_slope) for period in periods
        )
        _weight_normalise(self)

    def forward(self, waveform: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """
        Args:
            waveform (`torch.FloatTensor` of shape `(batch_size, samples)`): real or generated audio.

        Returns:
            `(logits, features)`: per period, the logits `[B, N_p]` and the list of feature maps (for
            [`feature_matching_loss`]).
        """
        _check_waveform(waveform, max(d.period for d in self.discriminators), type(self).__name__)
        outputs = [discriminator(waveform) for discriminator in self.discriminators]
        return [logits for logits, _ in outputs], [features for _, features in outputs]


class OmniResolutionDiscriminator(nn.Module):
    """UnivNet/BigVGAN resolution discriminator: 2D convolutions over the linear magnitude spectrogram
    `[B, 1, frames, n_fft // 2 + 1]` of one STFT resolution, strided along frequency.

    The STFT runs in float32 (Hann window of `win_length`, reflect padding of `(n_fft - hop_length) / 2` on each
    side, no centring: `samples // hop_length` frames).

    Args:
        resolution: `(n_fft, hop_length, win_length)`.
        channels: channels of every convolution.
        num_layers: convolutions before `conv_post`; all but the first and last are strided by 2 along frequency.
        leaky_relu_slope: negative slope of the activations.
    """

    def __init__(
        self,
        resolution: Sequence[int],
        channels: int = 32,
        num_layers: int = 5,
        leaky_relu_slope: float = 0.1,
    ):
        super().__init__()
        n_fft, hop_length, win_length = resolution
        if hop_length > n_fft or win_length > n_fft or (n_fft - hop_length) % 2:
            raise ValueError(
                f"Resolution (n_fft={n_fft}, hop_length={hop_length}, win_length={win_length}) needs hop_length and "
                "win_length <= n_fft and n_fft - hop_length even."
            )
        self.resolution = (n_fft, hop_length, win_length)
        self.leaky_relu_slope = leaky_relu_slope
        layers = []
        for index in range(num_layers):
            last = index == num_layers - 1
            kernel = (3, 3) if last else (3, 9)
            stride = (1, 2) if 0 < index < num_layers - 1 else (1, 1)
            padding = (1, 1) if last else (1, 4)
            layers.append(nn.Conv2d(1 if index == 0 else channels, channels, kernel, stride, padding))
        self.convs = nn.ModuleList(layers)
        self.conv_post = nn.Conv2d(channels, 1, (3, 3), padding=(1, 1))

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """`waveform [B, S]` -> linear magnitude `[B, S // hop_length, n_fft // 2 + 1]` in float32."""
        n_fft, hop_length, win_length = self.resolution
        padding = (n_fft - hop_length) // 2
        padded = nn.functional.pad(waveform.float()[:, None], (padding, padding), mode="reflect")[:, 0]
        window = torch.hann_window(win_length, device=waveform.device)
        spectrum = torch.stft(padded, n_fft, hop_length, win_length, window, center=False, return_complex=True)
        return _magnitude(spectrum).transpose(1, 2)

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`waveform [B, S]` -> `(logits [B, N], feature maps [B, C, frames, bins_i])`."""
        hidden_states = self.spectrogram(waveform)[:, None].to(self.conv_post.bias.dtype)
        features = []
        for conv in self.convs:
            hidden_states = nn.functional.leaky_relu(conv(hidden_states), self.leaky_relu_slope)
            features.append(hidden_states)
        hidden_states = self.conv_post(hidden_states)
        features.append(hidden_states)
        return hidden_states.flatten(1), features


class OmniMultiResolutionDiscriminator(nn.Module):
    """UnivNet/BigVGAN multi-resolution discriminator: one [`OmniResolutionDiscriminator`] per STFT resolution.

    All convolutions are weight-normalised (checkpoints keep the weight-norm layout). Initialise with
    [`init_vocoder_weights`].

    Args:
        resolutions: `(n_fft, hop_length, win_length)` per discriminator (BigVGAN's defaults).
        channels, num_layers, leaky_relu_slope: see [`OmniResolutionDiscriminator`].
    """

    def __init__(
        self,
        resolutions: Sequence[Sequence[int]] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240)),
        channels: int = 32,
        num_layers: int = 5,
        leaky_relu_slope: float = 0.1,
    ):
        super().__init__()
        if len(resolutions) == 0:
            raise ValueError("OmniMultiResolutionDiscriminator needs at least one resolution.")
        self.discriminators = nn.ModuleList(
            OmniResolutionDiscriminator(resolution, channels, num_layers, leaky_relu_slope)
            for resolution in resolutions
        )
        _weight_normalise(self)

    def forward(self, waveform: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """
        Args:
            waveform (`torch.FloatTensor` of shape `(batch_size, samples)`): real or generated audio, at least
                `max(n_fft - hop_length) / 2 + 1` samples (the reflect padding) and one hop long.

        Returns:
            `(logits, features)`: per resolution, the logits `[B, N_r]` and the list of feature maps.
        """
        resolutions = [discriminator.resolution for discriminator in self.discriminators]
        min_samples = max(max((n_fft - hop) // 2 + 1, hop) for n_fft, hop, _ in resolutions)
        _check_waveform(waveform, min_samples, type(self).__name__)
        outputs = [discriminator(waveform) for discriminator in self.discriminators]
        return [logits for logits, _ in outputs], [features for _, features in outputs]


# --------------------------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------------------------


def _magnitude(spectrum: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    # sqrt(|z|² + eps): a finite log and finite gradients at z = 0. (Clamping instead would stop the gradient of a
    # nearly silent output, e.g. of a freshly initialised vocoder.)
    return (torch.view_as_real(spectrum).pow(2).sum(-1) + eps).sqrt()


def _check_pair(predicted: torch.Tensor, target: torch.Tensor, min_samples: int, name: str) -> None:
    if predicted.shape != target.shape or predicted.dim() != 2:
        raise ValueError(
            f"{name} expects predicted and target waveforms of the same shape [batch, samples], got "
            f"{tuple(predicted.shape)} and {tuple(target.shape)}."
        )
    if predicted.shape[-1] < min_samples:
        raise ValueError(f"{name} needs at least {min_samples} samples per waveform, got {predicted.shape[-1]}.")


def _mask_samples(waveform: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return waveform
    positions = torch.arange(waveform.shape[-1], device=waveform.device)
    return waveform * (positions < lengths.to(waveform.device)[:, None])


def _frame_mask(
    lengths: torch.Tensor | None, batch_size: int, num_frames: int, hop_length: int, device: torch.device
) -> torch.Tensor:
    # Frames whose hop (the samples it stands for) starts inside the signal, as float weights [B, frames].
    if lengths is None:
        return torch.ones(batch_size, num_frames, device=device)
    starts = torch.arange(num_frames, device=device) * hop_length
    return (starts < lengths.to(device)[:, None]).float()


def multi_resolution_stft_loss(
    predicted: torch.Tensor,
    target: torch.Tensor,
    resolutions: Sequence[Sequence[int]] = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048)),
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-resolution STFT loss (Parallel WaveGAN): for each `(n_fft, hop_length, win_length)`, spectral
    convergence `||T - P||_F / ||T||_F` plus log-magnitude L1 `mean |log T - log P|`, averaged over resolutions.

    Magnitudes come from one batched `torch.stft` per resolution in float32 (Hann window, zero padding of
    `(n_fft - hop_length) / 2` per side, no centring, magnitude `sqrt(|X|² + 1e-7)`). Spectral convergence is
    computed per waveform and averaged over the batch. Zero exactly when `predicted == target`.

    Args:
        predicted (`torch.FloatTensor` of shape `(batch_size, samples)`): generated waveforms.
        target (`torch.FloatTensor` of shape `(batch_size, samples)`): real waveforms.
        resolutions: the STFT resolutions.
        lengths (`torch.LongTensor` of shape `(batch_size,)`, *optional*): valid samples of each waveform of a
            padded batch; samples beyond are ignored (zeroed in both, and their frames left out of the average).

    Returns:
        Scalar loss (float32).
    """
    _check_pair(predicted, target, max(hop for _, hop, _ in resolutions), "multi_resolution_stft_loss")
    predicted = _mask_samples(predicted.float(), lengths)
    target = _mask_samples(target.float(), lengths)
    batch_size = predicted.shape[0]
    stacked = torch.cat([predicted, target])
    loss = predicted.new_zeros(())
    for n_fft, hop_length, win_length in resolutions:
        if hop_length > n_fft or win_length > n_fft:
            raise ValueError(
                f"Resolution ({n_fft}, {hop_length}, {win_length}) needs hop_length and win_length <= n_fft."
            )
        pad_left = (n_fft - hop_length) // 2
        padded = nn.functional.pad(stacked, (pad_left, n_fft - hop_length - pad_left))
        window = torch.hann_window(win_length, device=stacked.device)
        spectrum = torch.stft(padded, n_fft, hop_length, win_length, window, center=False, return_complex=True)
        magnitude = _magnitude(spectrum).transpose(1, 2)  # [2B, frames, bins]
        predicted_magnitude, target_magnitude = magnitude[:batch_size], magnitude[batch_size:]
        weights = _frame_mask(lengths, batch_size, magnitude.shape[1], hop_length, magnitude.device)[..., None]
        difference = (target_magnitude - predicted_magnitude) * weights
        spectral_convergence = difference.square().sum((1, 2)).sqrt() / (
            (target_magnitude * weights).square().sum((1, 2)).sqrt().clamp_min(1e-7)
        )
        log_difference = (target_magnitude.log() - predicted_magnitude.log()).abs() * weights
        log_magnitude = log_difference.sum() / (weights.sum() * magnitude.shape[-1])
        loss = loss + spectral_convergence.mean() + log_magnitude
    return loss / len(resolutions)


def mel_spectrogram_loss(
    predicted: torch.Tensor,
    target: torch.Tensor,
    mel_spectrogram: nn.Module,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """L1 distance between the log-mel spectrograms of `predicted` and `target` (HiFi-GAN's mel loss).

    Args:
        predicted, target (`torch.FloatTensor` of shape `(batch_size, samples)`): generated and real waveforms.
        mel_spectrogram: the log-mel transform, e.g. the model's [`OmniMelSpectrogram`] (`[B, S] -> [B, frames,
            n_mels]`).
        lengths (`torch.LongTensor` of shape `(batch_size,)`, *optional*): valid samples per waveform; padded samples
            and their frames are ignored.

    Returns:
        Scalar loss (float32).
    """
    _check_pair(predicted, target, getattr(mel_spectrogram, "hop_length", 1), "mel_spectrogram_loss")
    batch_size = predicted.shape[0]
    mels = mel_spectrogram(torch.cat([_mask_samples(predicted, lengths), _mask_samples(target, lengths)]).float())
    hop_length = getattr(mel_spectrogram, "hop_length", 1)
    weights = _frame_mask(lengths, batch_size, mels.shape[1], hop_length, mels.device)[..., None]
    difference = (mels[:batch_size] - mels[batch_size:]).abs() * weights
    return difference.sum() / (weights.sum() * mels.shape[-1])


def discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """LSGAN discriminator loss, summed over discriminators: `mean((1 - D(real))²) + mean(D(fake)²)`.

    Pass the logits of generated audio computed from `waveform.detach()` so only the discriminators learn from it.
    """
    if len(real_logits) != len(fake_logits) or len(real_logits) == 0:
        raise ValueError(
            f"Expected one real and one fake logits tensor per discriminator, got {len(real_logits)} and "
            f"{len(fake_logits)}."
        )
    return sum(
        (1 - real.float()).square().mean() + fake.float().square().mean()
        for real, fake in zip(real_logits, fake_logits)
    )


def generator_adversarial_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """LSGAN generator loss, summed over discriminators: `mean((1 - D(fake))²)`."""
    if len(fake_logits) == 0:
        raise ValueError("Expected the logits of at least one discriminator.")
    return sum((1 - fake.float()).square().mean() for fake in fake_logits)


def feature_matching_loss(
    real_features: Sequence[Sequence[torch.Tensor]], fake_features: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """Feature-matching loss (HiFi-GAN), summed over discriminators and layers: `mean |D_l(real) - D_l(fake)|`.

    The real features are targets (detached). HiFi-GAN weights this loss by 2 in the generator's total.
    """
    if len(real_features) != len(fake_features) or len(real_features) == 0:
        raise ValueError(
            f"Expected the feature maps of the same discriminators, got {len(real_features)} real and "
            f"{len(fake_features)} fake lists."
        )
    loss = 0.0
    for real_maps, fake_maps in zip(real_features, fake_features):
        if len(real_maps) != len(fake_maps):
            raise ValueError(f"Feature lists differ in length: {len(real_maps)} real vs {len(fake_maps)} fake maps.")
        for real, fake in zip(real_maps, fake_maps):
            loss = loss + (real.detach().float() - fake.float()).abs().mean()
    return loss


__all__ = [
    "OmniAMPBlock",
    "OmniMultiPeriodDiscriminator",
    "OmniMultiReceptiveFieldFusion",
    "OmniMultiResolutionDiscriminator",
    "OmniPeriodDiscriminator",
    "OmniResolutionDiscriminator",
    "OmniSnake",
    "OmniVocoder",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "init_vocoder_weights",
    "kaiser_sinc_filter",
    "mel_spectrogram_loss",
    "multi_resolution_stft_loss",
]

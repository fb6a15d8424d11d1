# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Speech decoder: text -> waveform vs. `FastSpeech2ConformerWithHifiGan`, the vocoder vs. `SpeechT5HifiGan`, and
Monotonic Alignment Search vs. the `monotonic-align` package (the Cython MAS of VITS-family models).

    python benchmarks/bench_audio_decoder.py                     # default size, 100 characters, bf16, batch 1
    python benchmarks/bench_audio_decoder.py --scaling           # + text 10 -> 500 characters
    python benchmarks/bench_audio_decoder.py --part mas --batch-size 16

Matching:

- TTS: `FastSpeech2ConformerWithHifiGan` with our width, heads, encoder/decoder depth, feed-forward width and kernel
  (`positionwise_conv_kernel_size`), variance predictors, postnet and a HiFi-GAN of our upsampling (8·8·2·2 = 256×,
  512 channels, resblocks 3/7/11). Its blocks are set to FastSpeech 2 blocks like ours (attention + convolutional
  feed-forward: no macaron second feed-forward, no convolution module; see `build_tts`), so both do the same work per
  block (the standard Conformer blocks would do about twice ours). With
  random weights the duration predictors would predict arbitrary lengths, so both are set to predict 5 frames per
  character (80 ms): both then synthesise the same number of frames (`--frames-per-char`). The real-time factor (RTF)
  is synthesis time / audio duration (below 1 = faster than real time).
- Vocoder: `SpeechT5HifiGan` (HiFi-GAN V1: LeakyReLU) with our vocoder's sizes, on the same mel frames. Ours has
  Snake activations (BigVGAN). Ours runs with weight norm removed, as documented for inference (`remove_weight_norm`);
  HiFi-GAN in transformers has plain weights.
- MAS: the same `[batch, frames, tokens]` log-likelihoods (log-softmax over tokens of random scores, with random
  lengths) go to `monotonic_align.maximum_path` and to our `monotonic_alignment_search` (which reads them through a
  transposed view, no copy); the paths are checked to be identical. Both run on CPU in float32 whatever `--dtype`;
  with `--device cuda` our vectorised PyTorch version is timed on the GPU as well.
"""

from __future__ import annotations

import argparse
import math

import torch
from transformers import (
    FastSpeech2ConformerConfig,
    FastSpeech2ConformerHifiGanConfig,
    FastSpeech2ConformerWithHifiGan,
    FastSpeech2ConformerWithHifiGanConfig,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
)

from harness import DTYPES, Case, add_common_arguments, compare, describe, setup, sizes
from omni_encoders import OmniAudioDecoderConfig, OmniAudioDecoderModel
from omni_encoders.modeling_omni_audio_decoder import monotonic_alignment_search


def our_config(args: argparse.Namespace) -> OmniAudioDecoderConfig:
    if args.size == "full":
        return OmniAudioDecoderConfig(attn_implementation=args.attn)
    return OmniAudioDecoderConfig(
        hidden_size=256, encoder_layers=2, decoder_layers=2, num_attention_heads=4, num_key_value_heads=4,
        kv_lora_rank=64, qk_rope_head_dim=32, intermediate_size=1024, vocoder_initial_channels=128,
        attn_implementation=args.attn,
    )


def vocoder_sizes(config: OmniAudioDecoderConfig) -> dict:
    return {
        "model_in_dim": config.n_mels, "upsample_initial_channel": config.vocoder_initial_channels,
        "upsample_rates": list(config.vocoder_upsample_rates),
        "upsample_kernel_sizes": list(config.vocoder_upsample_kernel_sizes),
        "resblock_kernel_sizes": list(config.vocoder_resblock_kernel_sizes),
        "resblock_dilation_sizes": [list(d) for d in config.vocoder_resblock_dilation_sizes],
        "normalize_before": False,
    }


def fastspeech2_config(config: OmniAudioDecoderConfig) -> FastSpeech2ConformerWithHifiGanConfig:
    model_config = FastSpeech2ConformerConfig(
        hidden_size=config.hidden_size, vocab_size=config.vocab_size, num_mel_bins=config.n_mels,
        encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        encoder_num_attention_heads=config.num_attention_heads, decoder_num_attention_heads=config.num_attention_heads,
        encoder_linear_units=config.intermediate_size, decoder_linear_units=config.intermediate_size,
        positionwise_conv_kernel_size=config.ffn_kernel_size, encoder_normalize_before=True,
        decoder_normalize_before=True, use_macaron_style_in_conformer=False,
        duration_predictor_channels=config.variance_predictor_hidden_size,
        duration_predictor_kernel_size=config.variance_predictor_kernel_size,
        pitch_predictor_layers=2, pitch_predictor_channels=config.variance_predictor_hidden_size,
        pitch_predictor_kernel_size=config.variance_predictor_kernel_size,
        energy_predictor_channels=config.variance_predictor_hidden_size,
        energy_predictor_kernel_size=config.variance_predictor_kernel_size,
        pitch_embed_kernel_size=config.variance_embedding_kernel_size,
        energy_embed_kernel_size=config.variance_embedding_kernel_size,
        speech_decoder_postnet_layers=config.postnet_layers, speech_decoder_postnet_units=config.postnet_channels,
        speech_decoder_postnet_kernel=config.postnet_kernel_size,
    )
    vocoder_config = FastSpeech2ConformerHifiGanConfig(**vocoder_sizes(config), sampling_rate=config.sampling_rate)
    return FastSpeech2ConformerWithHifiGanConfig(
        model_config=model_config.to_dict(), vocoder_config=vocoder_config.to_dict()
    )


def _keep_dtype_length_regulator() -> None:
    """FastSpeech2Conformer's length regulator returns float32 whatever the model dtype (transformers 5.24), which
    breaks bf16 inference in the next LayerNorm: cast its output back to the input dtype."""
    from transformers.models.fastspeech2_conformer import modeling_fastspeech2_conformer as module

    original = module.length_regulator
    if getattr(original, "keeps_dtype", False):
        return

    def length_regulator(encoded_embeddings, *args, **kwargs):
        return original(encoded_embeddings, *args, **kwargs).to(encoded_embeddings.dtype)

    length_regulator.keeps_dtype = True
    module.length_regulator = length_regulator


def fix_durations(linear: torch.nn.Linear, frames: int, log_offset: float) -> None:
    """Make a duration predictor's last layer predict `frames` for every token (random weights predict anything)."""
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.fill_(math.log(frames + log_offset))


def build_tts(args: argparse.Namespace):
    dtype = DTYPES[args.dtype]
    config = our_config(args)
    ours = OmniAudioDecoderModel._from_config(config, dtype=dtype).to(args.device).eval()
    ours.vocoder.remove_weight_norm()
    fix_durations(ours.duration_predictor.linear, args.frames_per_char, 1.0)  # log1p(durations)
    _keep_dtype_length_regulator()
    peer = FastSpeech2ConformerWithHifiGan._from_config(fastspeech2_config(config), dtype=dtype)
    peer = peer.to(args.device, dtype).eval()  # `.to(dtype)` also casts its float32 position tables
    # `use_cnn_in_conformer=False` fails in transformers 5.24 (the layers then lack `conv_module`): drop the
    # convolution modules after building instead, so that the peer's blocks match ours.
    for layer in [*peer.model.encoder.conformer_layers, *peer.model.decoder.conformer_layers]:
        layer.use_cnn_module, layer.conv_module = False, None
    fix_durations(peer.model.duration_predictor.linear, args.frames_per_char, peer.model.duration_predictor.log_domain_offset)
    return config, ours, peer


def run_tts(args: argparse.Namespace) -> list[dict]:
    config, ours, peer = build_tts(args)
    characters = sizes(args, args.chars, [10, 50, 100, 250, 500])
    print(f"# TTS: OmniAudioDecoderModel vs FastSpeech2ConformerWithHifiGan ({args.size} size) — {describe(args)}")
    rows = []
    for num_chars in characters:
        generator = torch.Generator().manual_seed(num_chars)
        input_ids = torch.randint(1, config.vocab_size, (args.batch_size, num_chars), generator=generator)
        input_ids = input_ids.to(args.device)
        # As a tokenizer returns it; without it FastSpeech2Conformer makes a float32 mask that upcasts a bf16 model.
        attention_mask = torch.ones_like(input_ids)
        seconds = num_chars * args.frames_per_char * config.hop_length / config.sampling_rate
        audio_seconds = args.batch_size * seconds
        out = ours.generate(input_ids)
        expected = num_chars * args.frames_per_char * config.hop_length
        assert out.waveform.shape[-1] == expected, (out.waveform.shape, expected)
        assert peer(input_ids, attention_mask, return_dict=True).waveform.shape[-1] == expected
        cases = [
            Case("OmniAudioDecoderModel.generate", lambda: ours.generate(input_ids, attention_mask), audio_seconds,
                 f"{num_chars} chars -> {seconds:.2f} s"),
            Case("FastSpeech2ConformerWithHifiGan", lambda: peer(input_ids, attention_mask), audio_seconds,
                 f"{num_chars} chars -> {seconds:.2f} s"),
        ]
        table = compare(f"text to speech, {num_chars} characters, batch {args.batch_size}", cases, args,
                        unit="audio s/s")
        for row in table:
            row["rtf"] = round(row["latency_ms"] / 1000 / seconds, 3)
            row["rtf_cpu"] = round(row["cpu_ms"] / 1000 / seconds, 3)
        print("real-time factor (synthesis time / audio duration; wall, CPU time): " + ", ".join(
            f"{row['name']} {row['rtf']}, {row['rtf_cpu']}" for row in table))
        rows += table
    return rows


def run_vocoder(args: argparse.Namespace) -> list[dict]:
    dtype = DTYPES[args.dtype]
    config = our_config(args)
    ours = OmniAudioDecoderModel._from_config(config, dtype=dtype).vocoder.to(args.device).eval()
    ours.remove_weight_norm()
    peer_config = SpeechT5HifiGanConfig(**vocoder_sizes(config), sampling_rate=config.sampling_rate)
    peer = SpeechT5HifiGan._from_config(peer_config, dtype=dtype).to(args.device).eval()
    print(f"# Vocoder: OmniVocoder vs SpeechT5HifiGan ({args.size} size) — {describe(args)}")
    # `--sweep` gives characters: the vocoder sees `frames_per_char` mel frames per character.
    characters = sizes(args, args.chars, [25, 125, 500])
    frame_counts = [num_chars * args.frames_per_char for num_chars in characters]
    rows = []
    for num_frames in frame_counts:
        mel = torch.randn(args.batch_size, num_frames, config.n_mels, dtype=dtype, device=args.device)
        seconds = num_frames * config.hop_length / config.sampling_rate
        cases = [
            Case("OmniVocoder (Snake)", lambda: ours(mel), args.batch_size * seconds, f"{num_frames} frames"),
            Case("SpeechT5HifiGan (LeakyReLU)", lambda: peer(mel), args.batch_size * seconds, f"{num_frames} frames"),
        ]
        rows += compare(f"vocoder, {num_frames} mel frames ({seconds:.2f} s), batch {args.batch_size}", cases, args,
                        unit="audio s/s")
    return rows


def random_log_likelihoods(batch_size: int, num_tokens: int, num_frames: int, seed: int):
    """`[B, frames, tokens]` log-softmax scores and lengths (the longest item fills the tensor)."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch_size, num_frames, num_tokens, generator=generator).log_softmax(-1)
    token_lengths = torch.randint(max(1, num_tokens // 2), num_tokens + 1, (batch_size,), generator=generator)
    token_lengths[0] = num_tokens
    frame_lengths = token_lengths * num_frames // num_tokens
    return scores, token_lengths, frame_lengths


def durations_to_path(durations: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Durations `[B, N]` -> 0/1 path `[B, frames, N]` (VITS layout)."""
    ends = durations.cumsum(-1)
    frames = torch.arange(num_frames).expand(durations.shape[0], -1).contiguous()
    token = torch.searchsorted(ends, frames, right=True)
    valid = frames < ends[:, -1:]
    path = torch.zeros(durations.shape[0], num_frames, durations.shape[1] + 1, dtype=torch.int32)
    path.scatter_(2, token.unsqueeze(-1), valid.unsqueeze(-1).int())
    return path[..., :-1]


def run_mas(args: argparse.Namespace) -> list[dict]:
    import monotonic_align

    print(f"# MAS: monotonic_alignment_search vs monotonic_align.maximum_path — {describe(args)} (float32, CPU)")
    token_counts = sizes(args, args.chars, [10, 50, 100, 250, 500])
    rows = []
    for num_tokens in token_counts:
        num_frames = num_tokens * args.frames_per_char
        scores, token_lengths, frame_lengths = random_log_likelihoods(args.batch_size, num_tokens, num_frames, 0)
        mask = (torch.arange(num_frames)[None, :, None] < frame_lengths[:, None, None]) & (
            torch.arange(num_tokens)[None, None, :] < token_lengths[:, None, None]
        )
        log_likelihood = scores.transpose(1, 2)  # [B, tokens, frames] view of frame-major memory

        theirs = monotonic_align.maximum_path(scores, mask.float()).int()
        durations = monotonic_alignment_search(log_likelihood, token_lengths, frame_lengths)
        ours_path = durations_to_path(durations, num_frames)
        same_items = sum(torch.equal(a, b) for a, b in zip(ours_path, theirs))
        note = f"{num_tokens} tokens x {num_frames} frames, identical paths: {same_items}/{args.batch_size}"
        if same_items < args.batch_size:
            # Near-ties: the Cython MAS accumulates in float32, ours in float64. Score both paths exactly.
            exact = scores.double()
            gain = ((ours_path.double() - theirs.double()) * exact).sum((1, 2))
            note += (
                f"; where not, ours scores >= theirs in float64: {bool((gain >= 0).all())}, by up to "
                f"{gain.max().item():.1e}"
            )
        cases = [
            Case("monotonic_alignment_search", lambda: monotonic_alignment_search(
                log_likelihood, token_lengths, frame_lengths), args.batch_size, note),
            Case("monotonic_align.maximum_path", lambda: monotonic_align.maximum_path(scores, mask.float()),
                 args.batch_size, "Cython"),
        ]
        if args.device.startswith("cuda"):  # the vectorised PyTorch version, on the GPU (synchronised in the call)
            on_device = [t.to(args.device) for t in (log_likelihood, token_lengths, frame_lengths)]
            if not torch.equal(monotonic_alignment_search(*on_device).cpu(), durations):
                print("WARNING: the GPU durations differ from the CPU kernel's")

            def on_gpu():
                monotonic_alignment_search(*on_device)
                torch.cuda.synchronize(args.device)

            cases.insert(1, Case(f"monotonic_alignment_search ({args.device})", on_gpu, args.batch_size, "torch"))
        cpu_args = argparse.Namespace(**{**vars(args), "device": "cpu"})
        rows += compare(f"MAS, batch {args.batch_size}, {num_tokens} tokens x {num_frames} frames", cases, cpu_args,
                        unit="alignments/s")
    return rows


def main(argv=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--part", choices=["all", "tts", "vocoder", "mas"], default="all")
    parser.add_argument("--chars", type=int, default=100, help="characters of text (tokens of the MAS)")
    parser.add_argument("--frames-per-char", type=int, default=5, help="mel frames per character (16 ms each)")
    parser.set_defaults(repeat=3)
    args = parser.parse_args(argv)
    setup(args)
    rows = []
    if args.part in ("all", "tts"):
        rows += run_tts(args)
    if args.part in ("all", "vocoder"):
        rows += run_vocoder(args)
    if args.part in ("all", "mas"):
        rows += run_mas(args)
    return rows


if __name__ == "__main__":
    main()

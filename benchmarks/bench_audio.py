# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Audio encoder vs. `Wav2Vec2ConformerModel` at matched size and audio length.

    python benchmarks/bench_audio.py                        # full size (1024 wide, 6 blocks), 10 s of audio, bf16
    python benchmarks/bench_audio.py --seconds 30
    python benchmarks/bench_audio.py --size small --scaling # + audio 1 s -> 2 min (see the README for 10 min)
    python benchmarks/bench_audio.py --samples-per-frame 320   # our tokenizer at wav2vec2's frame rate
    python benchmarks/bench_audio.py --seconds 600 --one-call --peers native  # 10 min: one call each (hours)
    python benchmarks/bench_audio.py --chunk-size 250 --left-chunks 2   # chunked attention (1 s chunks): linear time

Two peers, both with our width, depth, heads, FFN width and depthwise kernel, rotary positions and `--attn`:

- `Wav2Vec2ConformerModel (native)`: wav2vec2's own feature encoder (7 convs of 512 channels, 320x downsampling,
  50 frames/s). For the same audio it runs its Conformer on 5x fewer frames than ours (250 frames/s).
- `Wav2Vec2ConformerModel (64x)`: its feature encoder configured like our tokenizer (channels 32..512, hidden;
  kernels 7,5,5,3,3,3; six stride-2 convs = 64x, 250 frames/s): the same token count as ours.

`--samples-per-frame 320` configures our tokenizer at wav2vec2's native frame rate instead (strides 5,4,2,2,2,2,
kernels 10,8,3,3,3,3; the spec's default is 64x): the same audio then gives ours and the native peer the same frame
count, and the matched-tokenizer peer is left out (it would be the native frame rate again).
"""

from __future__ import annotations

import argparse

import torch
from transformers import Wav2Vec2ConformerConfig, Wav2Vec2ConformerModel

from harness import DTYPES, Case, add_common_arguments, compare, describe, setup, sizes
from omni_encoders import OmniAudioConfig, OmniAudioModel


SAMPLING_RATE = 16000


# The tokenizer layouts of `--samples-per-frame`: (kernel sizes, strides), six convolutions each.
TOKENIZERS = {64: ((7, 5, 5, 3, 3, 3), (2, 2, 2, 2, 2, 2)), 320: ((10, 8, 3, 3, 3, 3), (5, 4, 2, 2, 2, 2))}


def our_config(args: argparse.Namespace) -> OmniAudioConfig:
    kernel_sizes, strides = TOKENIZERS[args.samples_per_frame]
    tokenizer = {"tokenizer_kernel_sizes": kernel_sizes, "tokenizer_strides": strides}
    if args.chunk_size is not None:
        tokenizer.update(
            attention_chunk_size=args.chunk_size, attention_left_chunks=args.left_chunks,
            attention_right_context=args.right_context,
        )
    if args.size == "full":
        return OmniAudioConfig(attn_implementation=args.attn, **tokenizer)
    return OmniAudioConfig(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, kv_lora_rank=64,
        qk_rope_head_dim=32, intermediate_size=1024, attn_implementation=args.attn, **tokenizer,
    )


def peer_configs(config: OmniAudioConfig) -> dict[str, Wav2Vec2ConformerConfig]:
    common = {
        "hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
        "hidden_act": "swish", "conv_depthwise_kernel_size": config.conv_kernel_size,
        "position_embeddings_type": "rotary", "feat_extract_norm": "layer", "conv_bias": True,
    }
    matched_encoder = {
        "conv_dim": list(config.tokenizer_channels), "conv_kernel": list(config.tokenizer_kernel_sizes),
        "conv_stride": list(config.tokenizer_strides),
    }
    peers = {"native": Wav2Vec2ConformerConfig(**common)}
    if config.inputs_to_logits_ratio != peers["native"].inputs_to_logits_ratio:
        peers[f"{config.inputs_to_logits_ratio}x"] = Wav2Vec2ConformerConfig(**common, **matched_encoder)
    return peers


def build(args: argparse.Namespace):
    dtype = DTYPES[args.dtype]
    config = our_config(args)
    ours = OmniAudioModel._from_config(config, dtype=dtype).to(args.device).eval()
    configs = peer_configs(config)
    unknown = set(args.peers or ()) - configs.keys()
    if unknown:
        raise ValueError(f"--peers {' '.join(sorted(unknown))}: with this tokenizer the peers are {sorted(configs)}")
    peers = {}
    for name, peer_config in configs.items():
        if args.peers and name not in args.peers:
            continue
        peer_config._attn_implementation = args.attn
        peers[name] = Wav2Vec2ConformerModel._from_config(peer_config, dtype=dtype).to(args.device).eval()
    return config, ours, peers


def frames_of(model: Wav2Vec2ConformerModel, samples: int) -> int:
    return int(model._get_feat_extract_output_lengths(torch.tensor(samples)))


def run(args: argparse.Namespace) -> list[dict]:
    setup(args)
    config, ours, peers = build(args)
    durations = sizes(args, args.seconds, [1, 10, 30, 60, 120])
    attention = "full attention" if args.chunk_size is None else (
        f"chunked attention: {args.chunk_size}-frame chunks, {args.left_chunks} left, {args.right_context} ahead"
    )
    print(
        f"# Audio: OmniAudioModel ({config.inputs_to_logits_ratio}x tokenizer, {attention}) vs "
        f"Wav2Vec2ConformerModel ({args.size} size, full attention) — {describe(args)}"
    )
    rows = []
    for seconds in durations:
        samples = int(seconds * SAMPLING_RATE)
        waveforms = torch.randn(args.batch_size, samples, dtype=DTYPES[args.dtype], device=args.device)
        audio_seconds = args.batch_size * seconds
        frames = samples // config.inputs_to_logits_ratio
        cases = [Case("OmniAudioModel", lambda: ours(waveforms), audio_seconds, f"{frames} frames")]
        for name, peer in peers.items():
            cases.append(Case(
                f"Wav2Vec2ConformerModel ({name})", lambda peer=peer: peer(waveforms), audio_seconds,
                f"{frames_of(peer, samples)} frames",
            ))
        rows += compare(f"{seconds:g} s of 16 kHz audio, batch {args.batch_size}", cases, args,
                        unit="audio s/s")
    return rows


def main(argv=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length of the main comparison")
    parser.add_argument(
        "--samples-per-frame", type=int, choices=sorted(TOKENIZERS), default=64,
        help="our tokenizer's downsampling: 64 (the spec's, 250 frames/s) or 320 (wav2vec2's, 50 frames/s)",
    )
    parser.add_argument(
        "--peers", nargs="+", choices=["native", "64x"], default=None,
        help="the peers to run (default: both; the 64x one only exists with --samples-per-frame 64)",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=None,
        help="our model with chunked attention over chunks of this many frames (default: full attention)",
    )
    parser.add_argument("--left-chunks", type=int, default=2, help="with --chunk-size: previous chunks visible")
    parser.add_argument("--right-context", type=int, default=0, help="with --chunk-size: look-ahead frames")
    parser.set_defaults(repeat=3)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

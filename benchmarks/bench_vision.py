# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Vision encoder vs. SigLIP's vision tower alone, at matched size (our overhead = dual-stream blocks + TiTok).

    python benchmarks/bench_vision.py                       # full size (so400m backbone), 384 px, bf16, batch 1
    python benchmarks/bench_vision.py --scaling             # + image side 224 -> 512
    python benchmarks/bench_vision.py --device cuda --batch-size 32 --attn flash_attention_2 --peak-tflops 989

The peer is `SiglipVisionModel` built from our backbone config (same width, depth, patch size, attention
implementation), so the ratio is the cost of what we add on top of the backbone. Our achieved TFLOP/s (FLOPs counted
by `torch.utils.flop_counter`) is printed too, and the model FLOP utilisation when `--peak-tflops` is given.
"""

from __future__ import annotations

import argparse

import torch
from transformers import SiglipVisionModel

from harness import DTYPES, Case, add_common_arguments, compare, count_flops, describe, setup, sizes
from omni_encoders import OmniVisionConfig, OmniVisionModel


SMALL_BACKBONE = {
    "model_type": "siglip_vision_model", "hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
    "num_attention_heads": 6, "image_size": 224, "patch_size": 16, "vision_use_head": False,
}


def build(args: argparse.Namespace):
    dtype = DTYPES[args.dtype]
    if args.size == "full":
        config = OmniVisionConfig(attn_implementation=args.attn)
    else:
        config = OmniVisionConfig(
            backbone_config=SMALL_BACKBONE, num_attention_heads=6, num_tokens=64, attn_implementation=args.attn
        )
    ours = OmniVisionModel._from_config(config, dtype=dtype).to(args.device).eval()
    peer_config = config.backbone_config
    peer_config._attn_implementation = args.attn
    peer = SiglipVisionModel._from_config(peer_config, dtype=dtype).to(args.device).eval()
    return config, ours, peer


def run(args: argparse.Namespace) -> list[dict]:
    setup(args)
    config, ours, peer = build(args)
    sides = sizes(args, args.image_size or config.image_size, [224, 320, 384, 448, 512])
    print(f"# Vision: OmniVisionModel vs SiglipVisionModel ({args.size} size) — {describe(args)}")
    rows = []
    for side in sides:
        pixels = torch.randn(args.batch_size, 3, side, side, dtype=DTYPES[args.dtype], device=args.device)
        grid = side // config.patch_size
        interpolate = side != config.image_size
        cases = [
            Case("OmniVisionModel", lambda: ours(pixels), args.batch_size,
                 f"{grid}x{grid} patches -> {config.num_tokens} tokens"),
            Case("SiglipVisionModel", lambda: peer(pixels, interpolate_pos_encoding=interpolate), args.batch_size,
                 f"{grid * grid} tokens"),
        ]
        table = compare(f"image {side}x{side}, batch {args.batch_size}", cases, args, unit="images/s")
        if side == config.image_size:
            flops = count_flops(cases[0].fn, ours)
            achieved = flops / (table[0]["latency_ms"] / 1000) / 1e12
            line = f"ours: {flops / 1e9 / args.batch_size:.0f} GFLOP per image, {achieved:.2f} TFLOP/s achieved"
            if args.peak_tflops:
                line += f", model FLOP utilisation {100 * achieved / args.peak_tflops:.1f}% of {args.peak_tflops}"
            print(line)
            table[0]["tflops"] = round(achieved, 3)
        rows += table
    return rows


def main(argv=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak, for the MFU")
    parser.add_argument("--image-size", type=int, default=None, help="image side of the main comparison (default: 384)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

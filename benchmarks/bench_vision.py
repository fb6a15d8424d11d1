# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Vision encoder vs. SigLIP's vision tower alone, at matched size (our overhead = dual-stream blocks + TiTok).

    python benchmarks/bench_vision.py                      # full size (so400m), 384 px, bf16, batch 1
    python benchmarks/bench_vision.py --scaling            # + image side 224 -> 512
    python benchmarks/bench_vision.py --dtype fp32 --batch-size 8 --device cuda
"""

from __future__ import annotations

import argparse

import torch
from transformers import SiglipVisionModel

from harness import DTYPES, add_common_arguments, describe, measure, print_table, setup
from omni_encoders import OmniVisionConfig, OmniVisionModel


def build(args: argparse.Namespace, size: str):
    dtype = DTYPES[args.dtype]
    if size == "full":
        config = OmniVisionConfig(attn_implementation=args.attn)
    else:  # a small configuration for quick runs
        config = OmniVisionConfig(
            backbone_config={"model_type": "siglip_vision_model", "hidden_size": 384, "intermediate_size": 1536,
                             "num_hidden_layers": 6, "num_attention_heads": 6, "image_size": 224, "patch_size": 16,
                             "vision_use_head": False},
            num_attention_heads=6, num_tokens=64, attn_implementation=args.attn,
        )
    ours = OmniVisionModel._from_config(config, dtype=dtype).to(args.device).eval()
    peer = SiglipVisionModel._from_config(config.backbone_config, dtype=dtype).to(args.device).eval()
    return config, ours, peer


def run(args: argparse.Namespace) -> list[dict]:
    setup(args)
    config, ours, peer = build(args, args.size)
    sides = [config.image_size] + ([224, 320, 384, 448, 512] if args.scaling else [])
    rows = []
    print(f"# Vision: OmniVisionModel vs SiglipVisionModel ({args.size} size) — {describe(args)}")
    for side in dict.fromkeys(sides):
        pixels = torch.randn(args.batch_size, 3, side, side, dtype=DTYPES[args.dtype], device=args.device)
        grid = side // config.patch_size
        interpolate = side != config.image_size
        ours_m = measure("OmniVisionModel", lambda: ours(pixels), args.batch_size, args,
                         note=f"{grid}x{grid} patches -> {config.num_tokens} tokens")
        peer_m = measure("SiglipVisionModel", lambda: peer(pixels, interpolate_pos_encoding=interpolate),
                         args.batch_size, args, note=f"{grid * grid} tokens")
        rows += print_table(f"image {side}x{side}", ours_m, [peer_m])
    return rows


def main(argv=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--size", choices=["full", "small"], default="full")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

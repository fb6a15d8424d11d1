# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Video encoder (factorised space/time attention) vs. the joint-attention peers `VideoMAEModel` and `VJEPA2Model`.

    python benchmarks/bench_video.py                        # small width, 16 frames of 27x27 patches, bf16
    python benchmarks/bench_video.py --scaling              # + frames 4 -> 32
    python benchmarks/bench_video.py --size full --repeat 1 # the default config (so400m backbone): minutes per call

Matching: the peers get our width, heads, MLP width, patch size and frame size, `tubelet_size=1` so that they see the
same `frames * 27 * 27` tokens we do, and a depth equal to the blocks every one of our tokens passes through (backbone
layers + dual-stream blocks + video blocks). Our backbone and dual-stream blocks attend within each frame, our video
blocks within each frame and then across frames at each position (frame-causal); the peers attend over all
`frames * 729` tokens at once in every layer. All use the same attention implementation (`--attn`, SDPA by default,
which never materialises the score matrix on CPU or CUDA).
"""

from __future__ import annotations

import argparse

import torch
from transformers import VideoMAEConfig, VideoMAEModel, VJEPA2Config, VJEPA2Model

from harness import DTYPES, Case, add_common_arguments, compare, describe, setup, sizes
from omni_encoders import OmniVideoConfig, OmniVideoModel


def our_config(args: argparse.Namespace) -> OmniVideoConfig:
    if args.size == "full":
        return OmniVideoConfig(attn_implementation=args.attn)
    # Small width, same geometry as the full model: 384 px frames, 14 px patches (27x27 grid), 16 frames.
    backbone = {
        "model_type": "siglip_vision_model", "hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
        "num_attention_heads": 6, "image_size": 384, "patch_size": 14, "vision_use_head": False,
    }
    vision = {"backbone_config": backbone, "num_attention_heads": 6, "num_tokens": 0}
    return OmniVideoConfig(vision_config=vision, num_attention_heads=6, attn_implementation=args.attn)


def frame_counts(args: argparse.Namespace, config: OmniVideoConfig) -> list[int]:
    return sizes(args, args.frames or config.num_frames, [4, 8, 16, 32])


def build(args: argparse.Namespace):
    dtype = DTYPES[args.dtype]
    config = our_config(args)
    backbone = config.vision_config.backbone_config
    depth = backbone.num_hidden_layers + config.vision_config.num_hidden_layers + config.num_hidden_layers
    ours = OmniVideoModel._from_config(config, dtype=dtype).to(args.device).eval()
    common = {
        "hidden_size": backbone.hidden_size, "num_hidden_layers": depth,
        "num_attention_heads": backbone.num_attention_heads, "patch_size": backbone.patch_size, "tubelet_size": 1,
    }
    max_frames = max(frame_counts(args, config))
    videomae_config = VideoMAEConfig(
        **common, intermediate_size=backbone.intermediate_size, image_size=backbone.image_size,
        num_frames=max_frames, hidden_act="gelu",
    )
    vjepa2_config = VJEPA2Config(
        **common, mlp_ratio=backbone.intermediate_size / backbone.hidden_size, crop_size=backbone.image_size,
        frames_per_clip=max_frames, pred_num_hidden_layers=1,
    )
    peers = {}
    for name, cls, peer_config in (("VideoMAEModel", VideoMAEModel, videomae_config),
                                   ("VJEPA2Model", VJEPA2Model, vjepa2_config)):
        peer_config._attn_implementation = args.attn
        peers[name] = cls._from_config(peer_config, dtype=dtype).to(args.device).eval()
    return config, depth, ours, peers


def run(args: argparse.Namespace) -> list[dict]:
    setup(args)
    config, depth, ours, peers = build(args)
    side = config.vision_config.image_size
    grid = side // config.vision_config.patch_size
    print(
        f"# Video: OmniVideoModel vs VideoMAEModel / VJEPA2Model ({args.size} size: width "
        f"{config.hidden_size}, peer depth {depth}) — {describe(args)}"
    )
    rows = []
    for num_frames in frame_counts(args, config):
        videos = torch.randn(args.batch_size, num_frames, 3, side, side, dtype=DTYPES[args.dtype], device=args.device)
        tokens = num_frames * grid * grid
        # VideoMAE's fixed sinusoidal table covers `num_frames` frames of the config: slice the tokens it sees.
        calls = {
            "VideoMAEModel": lambda: videomae(peers["VideoMAEModel"], videos),
            "VJEPA2Model": lambda: peers["VJEPA2Model"](videos, skip_predictor=True),
        }
        cases = [
            Case("OmniVideoModel", lambda: ours(videos), args.batch_size,
                 f"{tokens} tokens, factorised -> {num_frames * config.num_tokens_per_frame} tokens"),
            *(Case(name, calls[name], args.batch_size, f"{tokens} tokens, joint") for name in args.peers),
        ]
        rows += compare(f"{num_frames} frames of {grid}x{grid} patches, batch {args.batch_size}", cases, args,
                        unit="videos/s")
    return rows


def videomae(model: VideoMAEModel, videos: torch.Tensor):
    """VideoMAE with a position table for as many frames as `videos` has (its table is built for the config's)."""
    embeddings = model.embeddings
    full_table = embeddings.position_embeddings
    tokens = videos.shape[1] * embeddings.patch_embeddings.num_patches // model.config.num_frames
    embeddings.position_embeddings = full_table[:, :tokens]
    try:
        return model(videos)
    finally:
        embeddings.position_embeddings = full_table


def main(argv=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--peers", nargs="+", choices=["VideoMAEModel", "VJEPA2Model"],
                        default=["VideoMAEModel", "VJEPA2Model"], help="joint-attention peers to run")
    parser.add_argument("--frames", type=int, default=None, help="frames of the main comparison (default: the config's)")
    parser.set_defaults(size="small", repeat=3)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""`omni-encoders` command line: the end-to-end tour of the models on real data made or bundled on this machine.

    omni-encoders                  # the whole tour (same as `omni-encoders tour`)
    omni-encoders tour --steps vision
    omni-encoders encode-image photo.jpg --size full
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch


DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 74 - len(title)), flush=True)


def sample_image():
    """A real photograph that ships with scikit-learn (a Chinese temple, 427x640)."""
    from sklearn.datasets import load_sample_image

    import PIL.Image

    return PIL.Image.fromarray(load_sample_image("china.jpg"))


def encode_image(image, size: str = "full", dtype: torch.dtype = torch.bfloat16) -> dict:
    """Encode `image` with a randomly initialised vision encoder (`size="full"`: the spec's SigLIP so400m model) and
    return the output shapes and timings."""
    from . import OmniVisionConfig, OmniVisionImageProcessor, OmniVisionModel

    if size == "full":
        config = OmniVisionConfig()
    else:
        config = OmniVisionConfig(
            backbone_config={"model_type": "siglip_vision_model", "hidden_size": 192, "intermediate_size": 768,
                             "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 224, "patch_size": 16},
            num_attention_heads=4, num_tokens=64,
        )
    start = time.perf_counter()
    model = OmniVisionModel._from_config(config, dtype=dtype).eval()
    build_seconds = time.perf_counter() - start
    processor = OmniVisionImageProcessor(size={"height": config.image_size, "width": config.image_size})
    pixel_values = processor(image, return_tensors="pt").pixel_values.to(dtype)
    with torch.inference_mode():
        model(pixel_values)  # warm-up
        start = time.perf_counter()
        outputs = model(pixel_values)
        forward_seconds = time.perf_counter() - start
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "pixel_values": tuple(pixel_values.shape),
        "tokens": tuple(outputs.last_hidden_state.shape),
        "patch_embeddings": tuple(outputs.patch_embeddings.shape),
        "pooled": tuple(outputs.pooler_output.shape),
        "build_seconds": build_seconds,
        "forward_seconds": forward_seconds,
        "finite": bool(torch.isfinite(outputs.last_hidden_state).all()),
    }


def tour_vision(args: argparse.Namespace) -> None:
    _banner(f"Vision encoder ({args.size} size, {args.dtype})")
    image = sample_image()
    print(f"image: scikit-learn sample 'china.jpg', {image.width}x{image.height} RGB")
    report = encode_image(image, size=args.size, dtype=DTYPES[args.dtype])
    print(f"parameters: {report['parameters'] / 1e6:.1f} M (built in {report['build_seconds']:.1f} s)")
    print(f"pixel_values {report['pixel_values']} -> TiTok tokens {report['tokens']}, "
          f"patch embeddings {report['patch_embeddings']}, pooled {report['pooled']}")
    print(f"forward: {report['forward_seconds'] * 1000:.0f} ms, outputs finite: {report['finite']}")
    if not report["finite"]:
        raise SystemExit("vision encoder produced non-finite values")


def write_moving_digit_video(
    path: str, num_frames: int = 24, size: int = 96, fps: int = 12, digit_index: int = 0
) -> str:
    """Write an mp4 (H.264, via PyAV) of a scikit-learn handwritten digit sliding from left to right: the direction of
    motion can only be told from the order of the frames. Returns `path`."""
    import av
    import numpy as np
    import PIL.Image
    from sklearn.datasets import load_digits

    digit = load_digits().images[digit_index] / 16.0 * 255  # 8x8, 0-16 gray levels
    glyph = np.asarray(PIL.Image.fromarray(digit.astype(np.uint8)).resize((size // 2, size // 2), PIL.Image.BICUBIC))
    offsets = np.linspace(0, size - glyph.shape[1], num_frames).astype(int)
    frames = np.zeros((num_frames, size, size, 3), dtype=np.uint8)
    top = (size - glyph.shape[0]) // 2
    for frame, left in zip(frames, offsets):  # building the test video, not a model hot path
        frame[top : top + glyph.shape[0], left : left + glyph.shape[1]] = glyph[..., None]
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def encode_videos(
    paths: list[str], size: str = "full", dtype: torch.dtype = torch.bfloat16, num_frames: int | None = None
) -> dict:
    """Encode the video files `paths` (one batch; clips shorter than `num_frames` are padded and masked) with a
    randomly initialised video encoder (`size="full"`: the spec's model on SigLIP so400m frames) and return the output
    shapes and timings. `num_frames` defaults to the config's (16 at full size)."""
    from . import OmniVideoConfig, OmniVideoModel, OmniVideoVideoProcessor

    if size == "full":
        config = OmniVideoConfig()
    else:
        config = OmniVideoConfig(
            vision_config={
                "backbone_config": {"model_type": "siglip_vision_model", "hidden_size": 192, "intermediate_size": 768,
                                    "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 224,
                                    "patch_size": 16},
                "num_attention_heads": 4, "num_hidden_layers": 1,
            },
            num_hidden_layers=2, num_attention_heads=4, num_tokens_per_frame=16, num_frames=8,
        )
    start = time.perf_counter()
    model = OmniVideoModel._from_config(config, dtype=dtype).eval()
    build_seconds = time.perf_counter() - start
    processor = OmniVideoVideoProcessor(
        size={"height": config.image_size, "width": config.image_size}, num_frames=num_frames or config.num_frames
    )
    start = time.perf_counter()
    inputs = processor(paths, return_tensors="pt", return_metadata=True)
    process_seconds = time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        outputs = model(inputs.pixel_values_videos.to(dtype), frame_mask=inputs.frame_mask)
        forward_seconds = time.perf_counter() - start
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "sampled_frames": [metadata.frames_indices for metadata in inputs.video_metadata],
        "pixel_values_videos": tuple(inputs.pixel_values_videos.shape),
        "frame_mask": inputs.frame_mask.tolist(),
        "tokens": tuple(outputs.last_hidden_state.shape),
        "token_mask_sums": outputs.attention_mask.sum(1).tolist(),
        "pooled": tuple(outputs.pooler_output.shape),
        "aux_loss": outputs.aux_loss.item(),
        "build_seconds": build_seconds,
        "process_seconds": process_seconds,
        "forward_seconds": forward_seconds,
        "finite": all(bool(torch.isfinite(t).all()) for t in (outputs.last_hidden_state, outputs.pooler_output)),
    }


def tour_video(args: argparse.Namespace) -> None:
    import tempfile

    _banner(f"Video encoder ({args.size} size, {args.dtype})")
    # At full size every frame goes through SigLIP so400m: 4 frames per clip keep the CPU tour short (the model takes
    # up to 32).
    num_frames = 4 if args.size == "full" else 8
    with tempfile.TemporaryDirectory() as folder:
        clip = write_moving_digit_video(f"{folder}/digit_moving_right.mp4", num_frames=24)
        short = write_moving_digit_video(f"{folder}/short_clip.mp4", num_frames=3, digit_index=3)
        print("videos: a scikit-learn digit sliding right (24 frames at 12 fps) and a 3-frame clip, H.264 mp4 written "
              f"with PyAV; sampling {num_frames} frames per clip")
        report = encode_videos([clip, short], size=args.size, dtype=DTYPES[args.dtype], num_frames=num_frames)
    print(f"parameters: {report['parameters'] / 1e6:.1f} M (built in {report['build_seconds']:.1f} s)")
    print(f"decoded, sampled and resized in {report['process_seconds'] * 1000:.0f} ms: "
          f"frames {report['sampled_frames']}")
    print(f"pixel_values_videos {report['pixel_values_videos']}, frame_mask {report['frame_mask']}")
    print(f"-> tokens {report['tokens']} (valid per video {report['token_mask_sums']}), pooled {report['pooled']}, "
          f"MoE aux loss {report['aux_loss']:.3f}")
    print(f"forward: {report['forward_seconds'] * 1000:.0f} ms, outputs finite: {report['finite']}")
    if not report["finite"]:
        raise SystemExit("video encoder produced non-finite values")


TOUR_STEPS: dict[str, Callable[[argparse.Namespace], None]] = {
    "vision": tour_vision,
    "video": tour_video,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omni-encoders", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")

    tour = commands.add_parser("tour", help="run the end-to-end tour (default)")
    tour.add_argument("--steps", default=",".join(TOUR_STEPS), help=f"comma-separated subset of {list(TOUR_STEPS)}")
    tour.add_argument("--size", choices=["full", "small"], default="full", help="model size for the encoding steps")
    tour.add_argument("--dtype", choices=list(DTYPES), default="bf16")

    encode = commands.add_parser("encode-image", help="encode one image file and print the token shapes")
    encode.add_argument("path")
    encode.add_argument("--size", choices=["full", "small"], default="full")
    encode.add_argument("--dtype", choices=list(DTYPES), default="bf16")

    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["tour", *(argv or [])])

    if args.command == "encode-image":
        import PIL.Image

        print(encode_image(PIL.Image.open(args.path), size=args.size, dtype=DTYPES[args.dtype]))
        return 0

    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    unknown = [step for step in steps if step not in TOUR_STEPS]
    if unknown:
        parser.error(f"unknown tour steps {unknown}; choose from {list(TOUR_STEPS)}")
    start = time.perf_counter()
    for step in steps:
        TOUR_STEPS[step](args)
    _banner(f"Tour finished in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

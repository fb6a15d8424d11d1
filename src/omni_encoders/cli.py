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


TOUR_STEPS: dict[str, Callable[[argparse.Namespace], None]] = {
    "vision": tour_vision,
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

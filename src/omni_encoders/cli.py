# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""`omni-encoders` command line: the end-to-end tour of the models on real data made or bundled on this machine.

    omni-encoders                  # the whole tour (same as `omni-encoders tour`)
    omni-encoders tour --steps vision
    omni-encoders tour --steps train-vision --output-dir digits-classifier
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


def train_digit_classifier(output_dir: str, epochs: float = 15, seed: int = 42) -> dict:
    """Train a small vision classifier from scratch on scikit-learn's digits with `Trainer`, evaluate it on the
    held-out digits and save it (model + image processor) to `output_dir`.

    The same pieces as `examples/image_classification.py`, at a shorter budget: the digits as a 🤗 dataset, processed
    on the fly (`with_transform`) by `OmniVisionImageProcessor`, accuracy from `omni_encoders.metrics`. Returns the
    held-out metrics, the training losses logged (ten per run) and the training time.
    """
    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed

    from . import OmniVisionConfig, OmniVisionForImageClassification, OmniVisionImageProcessor
    from .data import build_digit_images
    from .training import ImageClassificationTransform, classification_metrics

    dataset = build_digit_images(image_size=32)
    labels = dataset["train"].features["label"].names
    processor = OmniVisionImageProcessor(size={"height": 32, "width": 32})
    transform = ImageClassificationTransform(processor)
    set_seed(seed)
    model = OmniVisionForImageClassification(
        OmniVisionConfig(
            backbone_config={"model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 256,
                             "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
            num_hidden_layers=1, num_attention_heads=4, num_tokens=8, num_labels=len(labels),
            id2label=dict(enumerate(labels)), label2id={label: index for index, label in enumerate(labels)},
        )
    )  # fmt: skip
    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        learning_rate=3e-3,
        weight_decay=0.05,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        bf16=True,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,  # the transform needs the raw `image` and `label` columns
        logging_steps=0.1,  # ten times per run
        save_strategy="no",
        disable_tqdm=True,
        log_level="warning",
        seed=seed,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset["train"].with_transform(transform),
        eval_dataset=dataset["test"].with_transform(transform),
        processing_class=processor,
        compute_metrics=classification_metrics("accuracy"),
    )
    trainer.remove_callback(PrinterCallback)  # the tour prints its own summary
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    trainer.save_model()
    return {
        **trainer.evaluate(),
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "train_seconds": train_seconds,
        "steps": trainer.state.global_step,
        "parameters": sum(p.numel() for p in model.parameters()),
        "num_train": len(dataset["train"]),
        "num_test": len(dataset["test"]),
    }


def tour_train_vision(args: argparse.Namespace) -> None:
    import tempfile

    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    from .data import build_digit_images

    _banner("Training a small digit classifier (Trainer, datasets, evaluate)")
    # The model is tiny: a second intra-op thread adds synchronisation, not speed (and stalls on a busy machine).
    import transformers

    threads, progress_bars = torch.get_num_threads(), transformers.utils.logging.is_progress_bar_enabled()
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            output_dir = args.output_dir or scratch
            report = train_digit_classifier(output_dir, epochs=args.train_epochs)
            print(f"trained {report['parameters'] / 1e6:.2f} M parameters from scratch on {report['num_train']} "
                  f"digits: {report['steps']} steps in {report['train_seconds']:.0f} s")  # fmt: skip
            print("training loss: " + " -> ".join(f"{loss:.2f}" for loss in report["losses"]))
            print(f"Trainer.evaluate on the {report['num_test']} held-out digits: "
                  f"accuracy {report['eval_accuracy']:.3f}")  # fmt: skip

            # Use it like any transformers classifier: Auto classes and the pipeline, from the saved folder.
            model = AutoModelForImageClassification.from_pretrained(output_dir)
            classifier = pipeline(
                "image-classification", model=model, image_processor=AutoImageProcessor.from_pretrained(output_dir),
                device="cpu",
            )  # fmt: skip
            held_out = build_digit_images(image_size=32)["test"]
            predictions = classifier(list(held_out["image"]), batch_size=64)
            names = held_out.features["label"].names
            true_labels = [names[label] for label in held_out["label"]]
            correct = [top[0]["label"] == label for top, label in zip(predictions, true_labels, strict=True)]
            accuracy = sum(correct) / len(correct)
            print(f"{type(model).__name__} via pipeline('image-classification'): accuracy {accuracy:.3f} on "
                  f"{len(correct)} held-out digits; first prediction {predictions[0][0]['label']!r} "
                  f"(score {predictions[0][0]['score']:.2f}), true {true_labels[0]!r}")  # fmt: skip
            if args.output_dir:
                print(f"saved to {args.output_dir}: pipeline('image-classification', model={args.output_dir!r})")
            # Trainer evaluated under bf16 autocast, the pipeline in float32: a borderline digit may flip, not more.
            if abs(accuracy - report["eval_accuracy"]) > 0.01:
                raise SystemExit("the pipeline and Trainer.evaluate disagree on the held-out accuracy")
    finally:
        torch.set_num_threads(threads)
        if progress_bars:
            transformers.utils.logging.enable_progress_bar()


TOUR_STEPS: dict[str, Callable[[argparse.Namespace], None]] = {
    "vision": tour_vision,
    "train-vision": tour_train_vision,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omni-encoders", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")

    tour = commands.add_parser("tour", help="run the end-to-end tour (default)")
    tour.add_argument("--steps", default=",".join(TOUR_STEPS), help=f"comma-separated subset of {list(TOUR_STEPS)}")
    tour.add_argument("--size", choices=["full", "small"], default="full", help="model size for the encoding steps")
    tour.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    tour.add_argument("--train-epochs", type=float, default=15, help="training budget of the train-* steps")
    tour.add_argument("--output-dir", help="keep the models of the train-* steps here (default: a temporary folder)")

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

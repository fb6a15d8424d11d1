# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Images: scikit-learn's handwritten digits as an image-classification dataset."""

from __future__ import annotations

import os

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

from ._cache import cached_build


DIGIT_CLASSES = tuple(str(digit) for digit in range(10))


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits: `images [N, 8, 8]` float in [0, 16] (16 = full ink), `labels [N]`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def build_digit_images(
    image_size: int = 32,
    test_size: float = 0.2,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """scikit-learn's handwritten digits (1,797 scans, 10 classes) for image classification.

    Each 8x8 scan becomes an RGB PIL image of `image_size` x `image_size` pixels (bilinear upscaling), dark ink on
    white paper. The split is stratified by class and seeded.

    Args:
        image_size: side of the square images in pixels (>= 8).
        test_size: fraction of the images in the `test` split, in (0, 1).
        seed: seed of the train/test split.
        cache_dir: where built datasets are kept (default `~/.cache/omni_encoders/datasets`); a second call with the
            same arguments loads the cached copy.

    Returns:
        `DatasetDict` with splits `train` and `test`, columns `image` (`Image`: RGB PIL image) and `label`
        (`ClassLabel` with names "0".."9").
    """
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8 (the scans are 8x8), got {image_size!r}.")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}.")

    def build(folder):
        import PIL.Image
        from sklearn.model_selection import train_test_split

        scans, labels = load_digit_images()
        pixels = np.round(255.0 - scans * (255.0 / 16.0)).astype(np.uint8)
        images = [
            PIL.Image.fromarray(scan).resize((image_size, image_size), PIL.Image.Resampling.BILINEAR).convert("RGB")
            for scan in pixels
        ]
        train_ids, test_ids = train_test_split(
            np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed
        )
        features = Features({"image": Image(), "label": ClassLabel(names=list(DIGIT_CLASSES))})
        return DatasetDict(
            {
                split: Dataset.from_dict(
                    {"image": [images[i] for i in ids], "label": labels[ids].tolist()}, features=features
                )
                for split, ids in (("train", train_ids), ("test", test_ids))
            }
        )

    config = {"image_size": image_size, "test_size": test_size, "seed": seed}
    return cached_build("digit_images", config, build, cache_dir)

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Image processor of the omni-encoders vision encoder: SigLIP's PIL-backed processor with input validation."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, PILImageResampling
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil


def _as_image_list(images) -> list:
    """Flatten the accepted layouts (one image, a batched array, lists of any of these, nested) into a list of single
    images."""
    if isinstance(images, (list, tuple)):
        return [image for item in images for image in _as_image_list(item)]
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def validate_image(image, index: int = 0):
    """Raise a `ValueError` that says what is wrong with `image` if it cannot be processed; return it, with a 2D
    grayscale array given an explicit channel axis."""
    if isinstance(image, str):
        return image  # a path or URL, loaded by transformers
    if isinstance(image, PIL.Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"Image {index} is empty (size {image.width}x{image.height}).")
        return image
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise ValueError(
            f"Image {index} has unsupported type {type(image).__name__}; expected a PIL image, a numpy array, a torch "
            "tensor or a path/URL."
        )
    if image.ndim == 2:  # grayscale (height, width)
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(
            f"Image {index} has shape {tuple(image.shape)}; expected (height, width), (height, width, channels) or "
            "(channels, height, width), or a batch of those."
        )
    if 0 in tuple(image.shape):
        raise ValueError(f"Image {index} is empty (shape {tuple(image.shape)}).")
    if image.shape[0] not in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Image {index} has shape {tuple(image.shape)}: neither the first nor the last axis is a channel axis of "
            "1 (grayscale), 3 (RGB) or 4 (RGBA) channels."
        )
    if isinstance(image, torch.Tensor):
        if image.dtype in (torch.bfloat16, torch.float16):  # no numpy dtype for bfloat16: PIL goes through numpy
            image = image.float()
        has_non_finite = image.is_floating_point() and not torch.isfinite(image).all()
    else:  # any strides (e.g. a BGR -> RGB view `image[..., ::-1]`), read-only arrays included
        has_non_finite = np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all()
    if has_non_finite:
        raise ValueError(f"Image {index} contains NaN or infinite values.")
    return image


class OmniVisionImageProcessor(SiglipImageProcessorPil):
    r"""
    Image processor for [`OmniVisionModel`]: resizes to `size` (bicubic; 384×384 by default, the resolution of the
    default SigLIP so400m-patch14-384 backbone: set it to the `image_size` of another backbone, the model accepts any
    size of at least one patch), rescales to [0, 1] and normalises with mean = std = 0.5 (SigLIP's statistics),
    converting grayscale and RGBA inputs to RGB.

    Accepts PIL images, numpy arrays and torch tensors (`(H, W)`, `(H, W, C)` or `(C, H, W)`, or a batch of them with a
    leading batch axis), paths/URLs, and lists of any of these. Returns `pixel_values [B, 3, H, W]`.

    It is transformers' PIL-backed SigLIP processor (no torchvision needed) with checks that turn unusable inputs
    (empty images, unknown layouts, NaN values, no images at all) into a clear `ValueError`.
    """

    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD
    size = {"height": 384, "width": 384}

    def preprocess(self, images, *args, **kwargs):
        images = _as_image_list(images)
        if len(images) == 0 or images[0] is None:
            raise ValueError("No images were given to the image processor.")
        images = [validate_image(image, index) for index, image in enumerate(images)]
        return super().preprocess(images, *args, **kwargs)


OmniVisionImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["OmniVisionImageProcessor"]

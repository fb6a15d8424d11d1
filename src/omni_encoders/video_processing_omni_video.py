# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Video processor of the omni-encoders video encoder: PyAV decoding, uniform or fps frame sampling, torch resizing
and SigLIP normalisation, with short videos padded and flagged in a `frame_mask`."""

from __future__ import annotations

import os
from collections.abc import Callable
from io import BytesIO

import numpy as np
import PIL.Image
import torch
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
from transformers.image_utils import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    get_image_size_for_max_height_width,
    infer_channel_dimension_format,
)
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata, make_batched_metadata


# PIL resampling filters -> `F.interpolate` modes (the others fall back to bicubic).
INTERPOLATION_MODES = {
    PILImageResampling.NEAREST: "nearest-exact",
    PILImageResampling.BILINEAR: "bilinear",
    PILImageResampling.BICUBIC: "bicubic",
}


def read_video_pyav(source: str, sample_indices_fn: Callable | None = None) -> tuple[np.ndarray, VideoMetadata]:
    """Decode a video file (mp4, webm, ... anything FFmpeg reads) or URL with PyAV.

    Args:
        source: a local path or an `http(s)://` URL.
        sample_indices_fn: `fn(metadata=VideoMetadata) -> indices` choosing the frames to keep; all frames when `None`.

    Returns:
        `(frames [T, H, W, 3] uint8 RGB, metadata)`. When the container over-states its frame count, the frames past
        the real end are simply missing (the processor pads them).

    Raises:
        ValueError: if the file is missing, unreadable, has no video stream or no frames.
    """
    try:
        import av
    except ImportError as error:
        raise ImportError("Decoding video files needs PyAV: `pip install av` (or `omni-encoders[video]`).") from error

    if source.startswith(("http://", "https://")):
        from huggingface_hub.utils import httpx

        file = BytesIO(httpx.get(source, follow_redirects=True).content)
    elif os.path.isfile(source):
        file = source
    else:
        raise ValueError(f"Video file {source!r} does not exist.")

    try:
        container = av.open(file)
    except av.error.FFmpegError as error:
        raise ValueError(f"Could not read video {source!r}: {error}") from error
    with container:
        if not container.streams.video:
            raise ValueError(f"{source!r} has no video stream.")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # Some containers (webm) store no frame count: count the packets, which does not decode anything.
        total_num_frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size > 0)
        if total_num_frames == 0:
            raise ValueError(f"Video {source!r} contains no frames.")
        fps = float(stream.average_rate) if stream.average_rate else None
        metadata = VideoMetadata(
            total_num_frames=total_num_frames,
            fps=fps,
            duration=total_num_frames / fps if fps else None,
            video_backend="pyav",
            height=stream.height,
            width=stream.width,
        )
        indices = np.arange(total_num_frames) if sample_indices_fn is None else sample_indices_fn(metadata=metadata)
        wanted = set(np.asarray(indices).tolist())
        last_wanted = max(wanted)
        decoded = {}
        container.seek(0)
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index > last_wanted:
                    break
                if index in wanted:
                    decoded[index] = frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as error:
            raise ValueError(f"Could not decode video {source!r}: {error}") from error
    if not decoded:
        raise ValueError(f"Video {source!r} contains no decodable frames.")
    kept = [index for index in np.asarray(indices).tolist() if index in decoded]
    metadata.frames_indices = kept
    return np.stack([decoded[index] for index in kept]), metadata


def _frame_array(frame, index: int) -> np.ndarray | torch.Tensor:
    """One frame (PIL image or 2D/3D array) as an array with a channel axis."""
    if isinstance(frame, PIL.Image.Image):
        if frame.mode not in ("RGB", "RGBA", "L"):
            frame = frame.convert("RGB")
        frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3:
        raise ValueError(f"Frame {index} has shape {tuple(frame.shape)}; expected (height, width[, channels]).")
    return frame


def validate_video(video, index: int = 0) -> np.ndarray | torch.Tensor:
    """Raise a `ValueError` that says what is wrong with the array video `video` `[T, H, W, C]` or `[T, C, H, W]`;
    return it."""
    if not isinstance(video, (np.ndarray, torch.Tensor)):
        raise ValueError(f"Video {index} has unsupported type {type(video).__name__}.")
    if video.ndim != 4:
        raise ValueError(
            f"Video {index} has shape {tuple(video.shape)}; expected (frames, height, width, channels) or "
            "(frames, channels, height, width)."
        )
    if 0 in tuple(video.shape):
        raise ValueError(f"Video {index} is empty (shape {tuple(video.shape)}).")
    if video.shape[1] not in (1, 3, 4) and video.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Video {index} has shape {tuple(video.shape)}: neither axis 1 nor the last axis is a channel axis of 1 "
            "(grayscale), 3 (RGB) or 4 (RGBA) channels."
        )
    values = video if isinstance(video, torch.Tensor) else torch.from_numpy(np.asarray(video))
    if values.dtype == torch.bool or values.is_complex():
        raise ValueError(f"Video {index} has dtype {values.dtype}; expected integer or float pixels (0-255).")
    if values.is_floating_point() and not torch.isfinite(values).all():
        raise ValueError(f"Video {index} contains NaN or infinite values.")
    return video


def make_video_list(videos) -> list:
    """Flatten the accepted input layouts into a list of videos, each a path/URL or a 4D array/tensor.

    Accepted: a path or URL; one video as a `[T, H, W, C]`/`[T, C, H, W]` array or tensor or as a list
    of frames (PIL images or 2D/3D arrays); a batch as a 5D array/tensor, a list of paths and 4D arrays, or a list of
    frame lists.
    A single 3D array or PIL image is a one-frame video.
    """
    if videos is None or (isinstance(videos, (list, tuple)) and len(videos) == 0):
        raise ValueError("No videos were given to the video processor.")
    if isinstance(videos, str):
        return [videos]
    if isinstance(videos, PIL.Image.Image):
        return [_frame_array(videos, 0)[None]]
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        if videos.ndim == 5:
            return [validate_video(video, index) for index, video in enumerate(videos)]
        if videos.ndim in (2, 3):
            return [validate_video(_frame_array(videos, 0)[None])]
        return [validate_video(videos)]
    if not isinstance(videos, (list, tuple)):
        raise ValueError(
            f"Unsupported video input of type {type(videos).__name__}; expected a path/URL, an array or tensor, a "
            "list of frames, or a list of those."
        )

    def is_frame(item) -> bool:
        is_array = isinstance(item, (np.ndarray, torch.Tensor))
        return isinstance(item, PIL.Image.Image) or (is_array and item.ndim in (2, 3))

    def is_video(item) -> bool:
        return isinstance(item, str) or (isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 4)

    if all(is_frame(item) for item in videos):
        return [_stack_frames(videos)]
    if all(is_video(item) for item in videos):
        return [video if isinstance(video, str) else validate_video(video, i) for i, video in enumerate(videos)]
    if all(isinstance(item, (list, tuple)) and item and all(is_frame(f) for f in item) for item in videos):
        return [_stack_frames(frames, index) for index, frames in enumerate(videos)]
    raise ValueError(
        "Could not read the videos: a batch must be paths/URLs and 4D arrays/tensors, or lists of frames, and one "
        f"video a list of frames; got items of types {sorted({type(item).__name__ for item in videos})}."
    )


def _with_frame_counts(videos: list, video_metadata):
    """`video_metadata` with the `total_num_frames` that its dicts leave out taken from the array videos' lengths (so
    that `{"fps": 30}` is enough for an array)."""
    entries = list(video_metadata) if isinstance(video_metadata, (list, tuple)) else [video_metadata]
    if len(entries) != len(videos):
        return video_metadata  # `make_batched_metadata` says what is wrong
    return [
        {"total_num_frames": None if isinstance(video, str) else len(video), **entry}
        if isinstance(entry, dict)
        else entry
        for video, entry in zip(videos, entries)
    ]


def _stack_frames(frames, index: int = 0) -> np.ndarray | torch.Tensor:
    """A list of frames -> one `[T, H, W, C]` (or `[T, C, H, W]`) video."""
    arrays = [_frame_array(frame, position) for position, frame in enumerate(frames)]
    if len({tuple(array.shape) for array in arrays}) > 1:
        raise ValueError(
            f"The frames of video {index} have different shapes {sorted({tuple(a.shape) for a in arrays})}; all "
            "frames of a video must have the same size."
        )
    if any(isinstance(array, torch.Tensor) for array in arrays):  # a mix of tensors and arrays stacks as a tensor
        stacked = torch.stack([torch.as_tensor(array) for array in arrays])
    else:
        stacked = np.stack(arrays)
    return validate_video(stacked, index)


class OmniVideoVideoProcessor(BaseVideoProcessor):
    r"""
    Video processor for [`OmniVideoModel`]: decodes video files with PyAV (mp4, webm and anything FFmpeg reads),
    samples `num_frames` frames uniformly (or `fps` frames per second), resizes them to the backbone's resolution
    (bicubic, antialiased), rescales to [0, 1] and normalises with mean = std = 0.5 (SigLIP's statistics).

    Returns `pixel_values_videos [B, T, 3, H, W]` and `frame_mask [B, T]`: videos with fewer frames than requested (or
    than the longest video of the batch) are padded with zero frames at the end and marked 0 in `frame_mask`.

    Accepts paths/URLs, `[T, H, W, C]`/`[T, C, H, W]` arrays or tensors (1, 3 or 4 channels), lists of frames (PIL
    images, arrays or tensors) and batches of any of these. Pixels are on the 0-255 scale, integer or float alike: both
    are rescaled by `rescale_factor` (1/255), so pass `do_rescale=False` for float frames already in [0, 1]. Grayscale
    and RGBA frames are converted to RGB (`do_convert_rgb`); with `do_convert_rgb=False` the frames must already have 3
    channels. Resizing uses `torch.nn.functional.interpolate`, so torchvision is not needed (and the result is the same
    whether it is installed or not).

    Args:
        num_frames (`int`, *optional*, defaults to 16):
            Frames to sample uniformly per video when `do_sample_frames`. A call's `num_frames` replaces the
            processor's `fps`; passing both `num_frames` and `fps` to one call is an error.
        fps (`float`, *optional*):
            Sample this many frames per second of video instead, taking precedence over the processor's `num_frames`
            (needs the video's frame rate: files have it, arrays need `video_metadata={"fps": ...}`). A call's `fps`
            replaces the processor's `num_frames`.
        do_sample_frames (`bool`, *optional*, defaults to `True`):
            Whether to sample frames; with `False` every frame is kept.
        size (`dict`, *optional*, defaults to `{"height": 384, "width": 384}`):
            Output frame size (`{"shortest_edge": s}` keeps the aspect ratio).
    """

    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD
    size = {"height": 384, "width": 384}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 16
    model_input_names = ["pixel_values_videos", "frame_mask"]

    def preprocess(self, videos, **kwargs) -> BatchFeature:
        """Decode, sample, resize and normalise `videos`, then pad them to a common number of frames.

        Returns a [`BatchFeature`] with `pixel_values_videos [B, T, 3, H, W]` and `frame_mask [B, T]` (1 = real
        frame), plus `video_metadata` with `return_metadata=True`. `T` is `num_frames` when sampling a fixed number of
        frames, else the longest video's frame count.
        """
        return_tensors = kwargs.pop("return_tensors", None)
        # A call's `num_frames` or `fps` replaces both sampling defaults of the processor (the call's argument wins
        # over the saved one, and the two are exclusive); without either, the processor's `fps` takes precedence
        # over its `num_frames`. `None` means "not given".
        num_frames, fps = kwargs.pop("num_frames", None), kwargs.pop("fps", None)
        if num_frames is None and fps is None:
            fps = getattr(self, "fps", None)
            num_frames = self.num_frames if fps is None else None
        kwargs.update(num_frames=num_frames, fps=fps)
        do_sample_frames = kwargs.get("do_sample_frames")
        do_sample_frames = self.do_sample_frames if do_sample_frames is None else do_sample_frames

        outputs = super().preprocess(videos, **kwargs)
        processed = outputs.pop("pixel_values_videos")
        target_frames = max(len(video) for video in processed)
        if do_sample_frames and num_frames is not None:
            target_frames = max(target_frames, num_frames)
        if len({tuple(video.shape[1:]) for video in processed}) > 1:
            sizes = sorted({tuple(video.shape[-2:]) for video in processed})
            do_resize = self.do_resize if kwargs.get("do_resize") is None else kwargs["do_resize"]
            if do_resize:
                hint = (
                    "resizing to a `shortest_edge`, `longest_edge` or maximum size keeps each video's aspect ratio: "
                    "use a fixed size={'height': ..., 'width': ...} (or a center crop) to batch them"
                )
            else:
                hint = "set `do_resize=True` with a fixed size={'height': ..., 'width': ...} to batch them"
            raise ValueError(f"The processed videos have different frame sizes {sizes}; {hint}.")

        pixel_values = pad_sequence(processed, batch_first=True)  # zero frames after each video's end
        pixel_values = F.pad(pixel_values, (0, 0, 0, 0, 0, 0, 0, target_frames - pixel_values.shape[1]))
        lengths = torch.tensor([len(video) for video in processed])
        frame_mask = (torch.arange(target_frames) < lengths[:, None]).long()
        data = {"pixel_values_videos": pixel_values, "frame_mask": frame_mask, **outputs}
        return BatchFeature(data=data, tensor_type=return_tensors, skip_tensor_conversion=["video_metadata"])

    def sample_frames(
        self, metadata: VideoMetadata, num_frames: int | None = None, fps: float | None = None, **kwargs
    ) -> np.ndarray:
        """Indices of `num_frames` frames spread uniformly over the video, or of `fps` frames per second. A video with
        fewer frames than asked for gives all its frames (the processor pads it).

        Raises:
            ValueError: if both `num_frames` and `fps` are given, `num_frames` is not a positive integer, `fps` is not
                positive, or `fps` is given for a video of unknown frame rate.
        """
        if fps is not None and num_frames is not None:
            raise ValueError("`num_frames` and `fps` are mutually exclusive; pass only one of them.")
        if num_frames is not None and (
            isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1
        ):
            raise ValueError(f"num_frames must be a positive integer (frames per video), got {num_frames!r}.")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive (frames to sample per second of video), got {fps!r}.")
        total_num_frames = metadata.total_num_frames
        if fps is not None:
            if not metadata.fps:
                raise ValueError(
                    "Sampling at a given fps needs the video's frame rate: pass `video_metadata={'fps': ...}` (one "
                    "dict per video for a batch) with array inputs, or sample a fixed `num_frames` instead."
                )
            num_frames = max(1, int(total_num_frames / metadata.fps * fps))
        if num_frames is None or num_frames >= total_num_frames:
            return np.arange(total_num_frames)
        return np.arange(num_frames) * total_num_frames // num_frames

    def _decode_and_sample_videos(self, videos, video_metadata=None, do_sample_frames=None, sample_indices_fn=None):
        videos = make_video_list(videos)
        if video_metadata is not None:
            video_metadata = make_batched_metadata(videos, _with_frame_counts(videos, video_metadata))
        sampled_videos, sampled_metadata = [], []
        for index, video in enumerate(videos):  # decoding and frame selection are per video
            if isinstance(video, str):
                video, metadata = read_video_pyav(video, sample_indices_fn if do_sample_frames else None)
            else:
                metadata = video_metadata[index] if video_metadata is not None else VideoMetadata(len(video))
                metadata.total_num_frames = len(video)
                indices = np.arange(len(video))
                if do_sample_frames:
                    indices = np.asarray(sample_indices_fn(metadata=metadata))
                    video = video[torch.from_numpy(indices) if isinstance(video, torch.Tensor) else indices]
                metadata.frames_indices = indices.tolist()
            sampled_videos.append(video)
            sampled_metadata.append(metadata)
        return sampled_videos, sampled_metadata

    def _prepare_input_videos(self, videos, do_convert_rgb=None, input_data_format=None, device=None):
        prepared = []
        for index, video in enumerate(videos):
            if isinstance(video, np.ndarray):
                video = torch.from_numpy(np.ascontiguousarray(video))
            data_format = input_data_format or infer_channel_dimension_format(video, num_channels=(1, 3, 4))
            if data_format == ChannelDimension.LAST:
                video = video.permute(0, 3, 1, 2)
            if do_convert_rgb:
                video = self.convert_to_rgb(video)
            if video.shape[1] != 3:
                raise ValueError(
                    f"Video {index} has {video.shape[1]} channel(s); the processor makes RGB frames of 3 channels. "
                    "Keep `do_convert_rgb=True` to convert grayscale (1 channel) and RGBA (4 channels) frames, or "
                    "pass 3-channel frames."
                )
            prepared.append(video.contiguous().to(device) if device is not None else video.contiguous())
        return prepared

    def convert_to_rgb(self, video: torch.Tensor) -> torch.Tensor:
        """`[..., C, H, W]` with 1 (grayscale), 3 or 4 (RGBA, blended onto white) channels -> 3 channels."""
        channels = video.shape[-3]
        if channels == 1:
            return torch.cat([video] * 3, dim=-3)
        if channels == 4:
            full = 255.0 if not video.is_floating_point() or video.max() > 1 else 1.0
            alpha = video[..., 3:, :, :].float() / full
            blended = (1 - alpha) * full + alpha * video[..., :3, :, :].float()
            return blended.round().to(video.dtype) if not video.is_floating_point() else blended.to(video.dtype)
        return video

    def resize(
        self, image: torch.Tensor, size: SizeDict, resample=None, antialias: bool = True, **kwargs
    ) -> torch.Tensor:
        """Resize `[..., C, H, W]` frames with `torch.nn.functional.interpolate` (antialiased bilinear/bicubic, or
        nearest); integer pixels stay on the 0-255 scale, as floats."""
        height, width = image.shape[-2:]
        if size.height and size.width:
            new_size = (size.height, size.width)
        elif size.shortest_edge and size.longest_edge:
            new_size = get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)
        elif size.shortest_edge:
            new_size = get_resize_output_image_size(
                image[(0,) * (image.dim() - 3)], size=size.shortest_edge, default_to_square=False,
                input_data_format=ChannelDimension.FIRST,
            )
        elif size.max_height and size.max_width:
            new_size = get_image_size_for_max_height_width((height, width), size.max_height, size.max_width)
        else:
            raise ValueError(
                f"size must have 'height' and 'width', 'shortest_edge' (and optionally 'longest_edge') or "
                f"'max_height' and 'max_width'; got {dict(size)}."
            )
        if tuple(new_size) == (height, width):
            return image
        mode = INTERPOLATION_MODES.get(PILImageResampling(resample) if resample is not None else None, "bicubic")
        frames = image.reshape(-1, *image.shape[-3:])
        is_integer = not frames.is_floating_point()
        resized = F.interpolate(
            frames.float(), size=tuple(new_size), mode=mode, antialias=antialias and mode != "nearest-exact",
            **({} if mode == "nearest-exact" else {"align_corners": False}),
        )
        if is_integer:
            resized = resized.round().clamp(0, 255)
        return resized.reshape(*image.shape[:-2], *resized.shape[-2:])

    def center_crop(self, image: torch.Tensor, size: SizeDict, **kwargs) -> torch.Tensor:
        """Crop the center `size.height x size.width` of `[..., C, H, W]` frames, zero-padding smaller frames."""
        if size.height is None or size.width is None:
            raise ValueError(f"crop_size must have 'height' and 'width', got {dict(size)}.")
        height, width = image.shape[-2:]
        pad_height, pad_width = max(size.height - height, 0), max(size.width - width, 0)
        if pad_height or pad_width:
            padding = (pad_width // 2, (pad_width + 1) // 2, pad_height // 2, (pad_height + 1) // 2)
            image = F.pad(image, padding)
            height, width = image.shape[-2:]
        top, left = int((height - size.height) / 2.0), int((width - size.width) / 2.0)
        return image[..., top : top + size.height, left : left + size.width]

    def normalize(self, image: torch.Tensor, mean, std, inplace: bool = False, **kwargs) -> torch.Tensor:
        """`(image - mean) / std` per channel of `[..., C, H, W]` frames."""
        mean = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        std = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
        return image.sub_(mean).div_(std) if inplace else (image - mean) / std


OmniVideoVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = ["OmniVideoVideoProcessor"]

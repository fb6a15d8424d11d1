# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Videos: a handwritten digit moving in one of four directions, written as H.264 mp4 files.

The dataset is built so that only the temporal order of the frames tells the classes apart: the frames of a video
moving left are exactly the frames of the video moving right in reverse order (same for up/down), and with the
default `motion="scan"` all four videos of a scene show the very same set of frames. A model that ignores frame
order cannot beat chance; `shuffle_frames=True` builds that control set.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from ._cache import cached_build
from .images import load_digit_images


# Label names. Opposite directions are time reversals of each other: right <-> left, down <-> up.
DIRECTIONS = ("right", "left", "down", "up")
MOTIONS = ("scan", "line")


def scene_positions(
    motion: str, num_frames: int, room: int, rng: np.random.Generator, scene_index: int
) -> dict[str, np.ndarray]:
    """Top-left corners `(x, y)` of the digit in each frame, `[num_frames, 2]` per direction, for one scene.

    `room` is the canvas side minus the digit side (the largest coordinate). With `motion="scan"` the digit visits
    a `sqrt(num_frames)` x `sqrt(num_frames)` grid of positions, row by row ("right": moving right along each row,
    rows top to bottom) or column by column ("down"); "left" and "up" are their reversals, so all four directions
    share one set of frames. With `motion="line"` the digit crosses the canvas along one straight line, horizontal
    (scenes with an even index: "right"/"left") or vertical (odd: "down"/"up"); the two directions are reversals of
    each other, but the set of frames shows the axis of motion.
    """
    margin = room // 4

    def span(count):
        start, stop = rng.integers(0, margin + 1), room - rng.integers(0, margin + 1)
        return np.round(np.linspace(start, stop, count)).astype(np.int64)

    if motion == "scan":
        side = math.isqrt(num_frames)
        xs, ys = span(side), span(side)
        rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        by_rows = np.stack([xs[cols.ravel()], ys[rows.ravel()]], axis=-1)  # row-major: moving right
        by_cols = np.stack([xs[cols.T.ravel()], ys[rows.T.ravel()]], axis=-1)  # column-major: moving down
        return {"right": by_rows, "left": by_rows[::-1], "down": by_cols, "up": by_cols[::-1]}

    along, offset = span(num_frames), np.full(num_frames, rng.integers(0, room + 1))
    if scene_index % 2 == 0:
        forward = np.stack([along, offset], axis=-1)
        return {"right": forward, "left": forward[::-1]}
    forward = np.stack([offset, along], axis=-1)
    return {"down": forward, "up": forward[::-1]}


def render_frames(digit: np.ndarray, positions: np.ndarray, frame_size: int) -> np.ndarray:
    """Frames `[T, frame_size, frame_size, 3]` uint8: black canvas, the `digit [d, d]` uint8 image pasted (white on
    black, grey replicated to RGB) with its top-left corner at `positions [T, 2]` (x, y)."""
    size = digit.shape[0]
    frames = np.zeros((len(positions), frame_size, frame_size, 3), dtype=np.uint8)
    for frame, (x, y) in zip(frames, positions):
        frame[y : y + size, x : x + size] = digit[..., None]
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 8, crf: int = 0) -> None:
    """Encode `frames [T, H, W, 3]` uint8 RGB as an H.264 (libx264, yuv420p) mp4 with PyAV.

    `crf=0` is lossless in YUV: grey frames such as the moving digits decode back within 1 level of 255.
    """
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of a video file with PyAV: `[T, H, W, 3]` uint8 RGB."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def build_moving_digit_videos(
    num_videos: int = 400,
    num_frames: int = 16,
    frame_size: int = 32,
    digit_size: int | None = None,
    fps: int = 8,
    motion: str = "scan",
    shuffle_frames: bool = False,
    test_size: float = 0.25,
    crf: int = 0,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """Videos of a handwritten digit (from scikit-learn's digits) moving right, left, down or up, as mp4 files.

    Videos come in scenes: one digit image and one set of positions, rendered once per direction. Within a scene,
    "left" is exactly "right" reversed in time and "up" is "down" reversed, so only the temporal order of the frames
    tells a video's class. With `motion="scan"` (default) the digit sweeps a grid of positions row by row or column
    by column (like reading), and all four videos of a scene share one set of frames: without temporal order the
    best possible accuracy is chance (0.25). With `motion="line"` the digit crosses the canvas on one straight line
    (the literal "moving digit"); each scene then gives one pair of opposite directions, and because the set of
    frames shows the axis of motion, a model blind to frame order can still reach 0.5.

    `shuffle_frames=True` builds the control set: the same scenes, each video's frames in a random order (a new
    permutation per video), labels unchanged.

    Files are H.264 mp4 (libx264, yuv420p, `crf=0` lossless by default) written with PyAV into the cache folder.
    The `video` column holds the file's absolute path as a string rather than a `datasets.Video` feature: in
    datasets 5.2 `Video` decodes only through torchcodec (which needs CUDA libraries in its PyPI build), not PyAV.
    Decode with the video processor, `transformers.video_utils.load_video(path, backend="pyav")` or `read_video`.

    Args:
        num_videos: total number of videos, a multiple of 4 (scan: 4 videos per scene; line: 2).
        num_frames: frames per video; a perfect square >= 4 for `motion="scan"` (e.g. 9, 16, 25), >= 2 for "line".
        frame_size: side of the square frames in pixels (even, >= 8).
        digit_size: side of the digit in pixels (default `frame_size // 2`).
        fps: frame rate written into the files.
        motion: "scan" or "line" (see above).
        shuffle_frames: build the frame-order control set.
        test_size: fraction of the scenes in the `test` split (all videos of a scene go to the same split).
        crf: libx264 constant rate factor, 0 (lossless) to 51.
        seed: seed of everything random (digits, positions, split, shuffles).
        cache_dir: where built datasets are kept (default `~/.cache/omni_encoders/datasets`).

    Returns:
        `DatasetDict` with splits `train` and `test` (rows in a seeded random order), columns `video` (`str`: path of
        the mp4 file), `label` (`ClassLabel` with names `DIRECTIONS` = right, left, down, up), `digit` (`int32`: the
        digit drawn, 0-9) and `scene` (`int32`: videos with the same scene show the same digit at the same
        positions).
    """
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}.")
    if motion == "scan" and (num_frames < 4 or math.isqrt(num_frames) ** 2 != num_frames):
        raise ValueError(
            f"motion='scan' sweeps a square grid of positions, so num_frames must be a perfect square >= 4 "
            f"(4, 9, 16, 25, ...), got {num_frames}."
        )
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}.")
    if frame_size < 8 or frame_size % 2:
        raise ValueError(f"frame_size must be even (yuv420p) and >= 8, got {frame_size}.")
    digit_size = frame_size // 2 if digit_size is None else digit_size
    videos_per_scene = 4 if motion == "scan" else 2
    room = frame_size - digit_size
    min_room = 2 * (math.isqrt(num_frames) - 1) if motion == "scan" else 1
    if digit_size < 4 or room < min_room:
        raise ValueError(
            f"digit_size must be >= 4 and leave the digit room to move: frame_size - digit_size >= {min_room} for "
            f"motion={motion!r} with {num_frames} frames; got frame_size={frame_size}, digit_size={digit_size}."
        )
    if num_videos <= 0 or num_videos % 4:
        raise ValueError(f"num_videos must be a positive multiple of 4 (balanced classes), got {num_videos}.")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}.")
    num_scenes = num_videos // videos_per_scene
    # Scenes are split per group so that both splits see every direction: scan scenes hold all four directions;
    # line scenes alternate horizontal (even index) and vertical (odd index).
    if motion == "scan":
        scene_groups = [np.arange(num_scenes)]
    else:
        scene_groups = [np.arange(0, num_scenes, 2), np.arange(1, num_scenes, 2)]
    if min(len(group) for group in scene_groups) < 2:
        raise ValueError(
            f"num_videos={num_videos} is too few for motion={motion!r}: both splits need every direction, so use "
            "num_videos >= 8."
        )
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}.")

    def build(folder: Path) -> DatasetDict:
        import PIL.Image

        scans, digit_labels = load_digit_images()
        scene_rng = np.random.default_rng([seed, 0])
        shuffle_rng = np.random.default_rng([seed, 1])
        video_dir = folder / "videos"
        video_dir.mkdir()

        test_scenes = set()
        for group in scene_groups:
            num_test = min(max(1, round(test_size * len(group))), len(group) - 1)
            test_scenes.update(scene_rng.permutation(group)[:num_test].tolist())
        rows = {"train": [], "test": []}
        for scene in range(num_scenes):
            index = int(scene_rng.integers(len(scans)))
            ink = np.round(scans[index] * (255.0 / 16.0)).astype(np.uint8)
            digit = np.asarray(
                PIL.Image.fromarray(ink).resize((digit_size, digit_size), PIL.Image.Resampling.BILINEAR)
            )
            for direction, positions in scene_positions(motion, num_frames, room, scene_rng, scene).items():
                frames = render_frames(digit, positions, frame_size)
                if shuffle_frames:
                    frames = frames[shuffle_rng.permutation(num_frames)]
                path = video_dir / f"video_{sum(map(len, rows.values())):05d}.mp4"
                write_video(path, frames, fps=fps, crf=crf)
                split = "test" if scene in test_scenes else "train"
                rows[split].append((str(path.resolve()), DIRECTIONS.index(direction), int(digit_labels[index]), scene))

        features = Features(
            {
                "video": Value("string"),
                "label": ClassLabel(names=list(DIRECTIONS)),
                "digit": Value("int32"),
                "scene": Value("int32"),
            }
        )
        splits = {}
        for split, split_rows in rows.items():
            order = scene_rng.permutation(len(split_rows))
            columns = list(zip(*(split_rows[i] for i in order)))
            splits[split] = Dataset.from_dict(dict(zip(features, map(list, columns))), features=features)
        return DatasetDict(splits)

    config = {
        "num_videos": num_videos,
        "num_frames": num_frames,
        "frame_size": frame_size,
        "digit_size": digit_size,
        "fps": fps,
        "motion": motion,
        "shuffle_frames": shuffle_frames,
        "test_size": test_size,
        "crf": crf,
        "seed": seed,
    }
    return cached_build("moving_digit_videos", config, build, cache_dir, is_valid=_video_files_exist)


def _video_files_exist(dataset: DatasetDict) -> bool:
    return all(os.path.isfile(path) for split in dataset.values() for path in split["video"])

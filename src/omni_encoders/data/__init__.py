# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Datasets made offline on this machine, for training and checking the models, as 🤗 datasets.

    from omni_encoders.data import build_digit_images, build_moving_digit_videos, build_spoken_digits

Every builder is deterministic (seeded), caches what it builds under `~/.cache/omni_encoders/datasets` (or
`$OMNI_ENCODERS_CACHE/datasets`, or its `cache_dir` argument) so that a second call with the same arguments loads it
instantly, and returns a `datasets.DatasetDict`. See the README section "Data and metrics".
"""

from ._cache import default_cache_dir
from .images import DIGIT_CLASSES, build_digit_images
from .speech import (
    DIGIT_WORDS,
    SAMPLING_RATE,
    build_spoken_digit_strings,
    build_spoken_digits,
    default_voices,
    digits_to_words,
    join_utterances,
    make_verification_trials,
    synthesize,
    word_end_times,
    words_to_digits,
)
from .videos import DIRECTIONS, build_moving_digit_videos, read_video, write_video


__all__ = [
    "DIGIT_CLASSES",
    "DIGIT_WORDS",
    "DIRECTIONS",
    "SAMPLING_RATE",
    "build_digit_images",
    "build_moving_digit_videos",
    "build_spoken_digit_strings",
    "build_spoken_digits",
    "default_cache_dir",
    "default_voices",
    "digits_to_words",
    "join_utterances",
    "make_verification_trials",
    "read_video",
    "synthesize",
    "word_end_times",
    "words_to_digits",
    "write_video",
]

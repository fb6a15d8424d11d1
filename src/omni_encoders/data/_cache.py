# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""On-disk cache of built datasets: one folder per (builder, arguments), built once, then memory-mapped."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import datasets
from datasets import DatasetDict, load_from_disk


# Bump when a builder's output changes for the same arguments, so that old cache folders are not reused.
CACHE_FORMAT_VERSION = 1

_COMPLETE_MARKER = "build_config.json"


def default_cache_dir() -> Path:
    """`$OMNI_ENCODERS_CACHE/datasets`, by default `~/.cache/omni_encoders/datasets`."""
    root = os.environ.get("OMNI_ENCODERS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "omni_encoders")
    return Path(root) / "datasets"


def cached_build(
    name: str,
    config: dict,
    build: Callable[[Path], DatasetDict],
    cache_dir: str | os.PathLike | None = None,
    is_valid: Callable[[DatasetDict], bool] | None = None,
) -> DatasetDict:
    """Return the dataset that `build(folder)` makes for `config`, building it only once.

    The folder is `cache_dir/<name>-<hash of config>`; `build` writes any media files it needs into it and returns
    the `DatasetDict`, which is then saved there. A file lock makes concurrent callers (e.g. `accelerate launch`
    processes) build once and share the result. A cached dataset that fails `is_valid` (e.g. its media files were
    deleted) is rebuilt.
    """
    from filelock import FileLock

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    full_config = {"builder": name, "cache_format_version": CACHE_FORMAT_VERSION, **config}
    key = hashlib.sha256(json.dumps(full_config, sort_keys=True).encode()).hexdigest()[:16]
    folder = root / f"{name}-{key}"

    with FileLock(str(folder) + ".lock"):
        if (folder / _COMPLETE_MARKER).is_file():
            dataset = load_from_disk(str(folder / "data"))
            if is_valid is None or is_valid(dataset):
                return dataset
        if folder.exists():  # an interrupted or invalid build
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        dataset = build(folder)
        with _quiet_progress_bars():
            dataset.save_to_disk(str(folder / "data"))
        # Written last: its presence marks a complete build.
        (folder / _COMPLETE_MARKER).write_text(json.dumps(full_config, indent=2, sort_keys=True))
    return load_from_disk(str(folder / "data"))


@contextmanager
def _quiet_progress_bars():
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()

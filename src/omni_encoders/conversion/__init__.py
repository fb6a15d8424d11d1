# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Checkpoint conversion into omni-encoders models (not needed at run time).

Each converter is a function and a command line, and writes a `save_pretrained` folder with a processor,
`conversion_report.json` and a model card:

- [`convert_vision_tower`] (`python -m omni_encoders.conversion.vision_tower`): a pretrained SigLIP, SigLIP 2 or CLIP
  vision tower into an `OmniVisionModel`, or into an `OmniVideoModel` as its per-frame backbone;
- [`convert_reference_checkpoint`] (`python -m omni_encoders.conversion.reference`): checkpoints of the spec's
  reference implementation into any of the four model types.

Both run on the mapping engine of [`mapping`]: rules over key names, a report of what was mapped, dropped and newly
initialised, and a clear error when a tensor does not fit the target config.
"""

import importlib


# Loaded on first use, so that `python -m omni_encoders.conversion.<converter>` runs each module once.
_EXPORTS = {
    "Component": "mapping",
    "ConversionReport": "mapping",
    "Rule": "mapping",
    "convert_state_dict": "mapping",
    "drop": "mapping",
    "load_state_dict": "mapping",
    "REFERENCE_LAYOUTS": "reference",
    "ReferenceLayout": "reference",
    "convert_reference_checkpoint": "reference",
    "TOWER_TARGETS": "vision_tower",
    "TowerTarget": "vision_tower",
    "convert_vision_tower": "vision_tower",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = sorted(_EXPORTS)

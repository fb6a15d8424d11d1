"""Helpers shared by the test modules: tiny configs and a Python without omni_encoders for remote-code checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

TINY_SIGLIP = {
    "model_type": "siglip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 28,
    "patch_size": 7,
}


def tiny_vision_config(**overrides):
    from omni_encoders import OmniVisionConfig

    kwargs = {"backbone_config": dict(TINY_SIGLIP), "num_attention_heads": 4, "num_tokens": 6, **overrides}
    return OmniVisionConfig(**kwargs)


# Installs an import hook that makes `omni_encoders` unimportable, as in an environment where it is not installed.
_BLOCK_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, sys
    class _BlockOmniEncoders(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "omni_encoders" or name.startswith("omni_encoders."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None
    sys.meta_path.insert(0, _BlockOmniEncoders())
    """
)


def run_without_package(script: str, tmp_path, timeout: int = 300) -> dict:
    """Run `script` in a fresh interpreter where `omni_encoders` cannot be imported; the script must print one JSON
    line last. Returns that JSON."""
    code = _BLOCK_PACKAGE + textwrap.dedent(script) + textwrap.dedent(
        """
        assert not any(m == "omni_encoders" or m.startswith("omni_encoders.") for m in sys.modules), "package leaked"
        """
    )
    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONPATH": "",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path
    )
    assert result.returncode == 0, f"remote-code subprocess failed:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()

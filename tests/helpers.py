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


TINY_VIDEO_BACKBONE = {
    "model_type": "siglip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "image_size": 28,
    "patch_size": 7,
}


def tiny_video_config(**overrides):
    """hidden 32, a 4x4 patch grid at 28 px, 2 video blocks of 4 heads, 4 experts (top-2), 3 tokens per frame."""
    kwargs = {
        "vision_config": {"backbone_config": dict(TINY_VIDEO_BACKBONE), "num_attention_heads": 4, "num_hidden_layers": 1},
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "moe_intermediate_size": 48,
        "compressor_intermediate_size": 48,
        "num_tokens_per_frame": 3,
        "num_frames": 4,
        "max_frames": 8,
        **overrides,
    }
    from omni_encoders import OmniVideoConfig

    return OmniVideoConfig(**kwargs)


def tiny_audio_config(**overrides):
    kwargs = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "kv_lora_rank": 8,
        "qk_rope_head_dim": 4,
        "intermediate_size": 64,
        "conv_kernel_size": 7,
        "tokenizer_channels": [8, 8, 16, 16, 32, 32],
        "tokenizer_norm_groups": 4,
        "hidden_dropout": 0.0,
        "num_codebooks": 3,
        "codebook_size": 16,
        "speaker_hidden_size": 16,
        "speaker_embedding_size": 12,
        "speaker_num_conv_layers": 2,
        "speaker_num_lstm_layers": 2,
        **overrides,
    }
    from omni_encoders import OmniAudioConfig

    return OmniAudioConfig(**kwargs)


def tiny_audio_decoder_config(**overrides):
    kwargs = {
        "hidden_size": 32,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "kv_lora_rank": 16,
        "qk_rope_head_dim": 4,
        "intermediate_size": 64,
        "ffn_kernel_size": 3,
        "hidden_dropout": 0.0,
        "variance_predictor_hidden_size": 16,
        "variance_predictor_dropout": 0.0,
        "alignment_size": 16,
        "postnet_layers": 2,
        "postnet_channels": 16,
        "num_speakers": 4,
        "speaker_embedding_size": 8,
        "n_mels": 20,
        "n_fft": 512,
        "vocoder_initial_channels": 32,
        "vocoder_resblock_kernel_sizes": [3],
        "vocoder_resblock_dilation_sizes": [[1]],
        "vocoder_segment_frames": 4,
        **overrides,
    }
    from omni_encoders import OmniAudioDecoderConfig

    return OmniAudioDecoderConfig(**kwargs)


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

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


# The omni-modal LLM: a word-level tokenizer (made with the `tokenizers` library) and a tiny Llama.
OMNI_WORDS = [
    "<pad>", "<unk>", "</s>", "<image>", "<video>", "<audio>", "User", "Assistant", ":", "?", "what", "digit", "is",
    "this", "which", "way", "does", "it", "move", "transcribe", "left", "right", "up", "down",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
]


def tiny_omni_tokenizer(padding_side: str = "left"):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(OMNI_WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="</s>", padding_side=padding_side,
        additional_special_tokens=["<image>", "<video>", "<audio>"],
    )


def tiny_text_config(**overrides):
    from transformers import LlamaConfig

    kwargs = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": len(OMNI_WORDS), "pad_token_id": 0, "eos_token_id": 2,
        "bos_token_id": None, "max_position_embeddings": 512, **overrides,
    }
    return LlamaConfig(**kwargs)


def tiny_omni_config(modalities=("image", "video", "audio", "speech"), **overrides):
    """A tiny Llama (hidden 32, 2 layers) with the tiny encoders of `modalities`; the audio encoder pools 4 frames
    into one token (62.5 tokens/s)."""
    from omni_encoders import OmniConfig

    kwargs = {
        "text_config": tiny_text_config(),
        "vision_config": tiny_vision_config() if "image" in modalities else None,
        "video_config": tiny_video_config() if "video" in modalities else None,
        "audio_config": tiny_audio_config(output_downsample_rate=4) if "audio" in modalities else None,
        "speech_decoder_config": tiny_audio_decoder_config() if "speech" in modalities else None,
        "image_token_id": 3 if "image" in modalities else None,
        "video_token_id": 4 if "video" in modalities else None,
        "audio_token_id": 5 if "audio" in modalities else None,
        **overrides,
    }
    return OmniConfig(**kwargs)

"""The machine-dependent choices: the default dtype and mixed precision, flex attention on CPUs whose compiled flex
kernels are wrong, and the C kernels' cache. Each branch runs on every machine, with the CPU probes monkeypatched."""

import pytest
import torch

from helpers import tiny_audio_config, tiny_vision_config
from omni_encoders import OmniAudioModel, OmniVisionModel, hardware, modeling_omni_common


@pytest.fixture
def cpu(monkeypatch):
    """Make this CPU look like another kind: `cpu(capability, amx=False, avx512_bf16=False)`."""

    def pretend(capability: str, amx: bool = False, avx512_bf16: bool = False) -> None:
        monkeypatch.setattr(hardware, "cpu_capability", lambda: capability)
        monkeypatch.setattr(modeling_omni_common, "cpu_capability", lambda: capability)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)

    return pretend


def test_auto_dtype_is_bfloat16_where_the_cpu_runs_it_natively(cpu):
    cpu("AVX512", amx=True)
    choice = hardware.resolve_dtype("auto")
    assert choice.dtype == torch.bfloat16 and choice.name == "bf16"
    assert "AMX" in choice.reason and choice.reason.startswith("auto: bfloat16")
    assert hardware.use_bf16_mixed_precision("cpu") and hardware.cpu_kind() == "AMX"
    cpu("AVX512", avx512_bf16=True)
    assert hardware.resolve_dtype("auto").dtype == torch.bfloat16 and hardware.cpu_kind() == "AVX512-BF16"


@pytest.mark.parametrize(
    "capability, amx, avx512_bf16",
    [("AVX2", False, False), ("AVX512", False, False), ("AVX2", True, True)],  # last: ATEN_CPU_CAPABILITY=avx2 on AMX
)
def test_auto_dtype_is_float32_without_native_bfloat16(cpu, capability, amx, avx512_bf16):
    cpu(capability, amx=amx, avx512_bf16=avx512_bf16)
    choice = hardware.resolve_dtype("auto")
    assert choice.dtype == torch.float32 and choice.name == "fp32"
    assert capability in choice.reason and "no native bfloat16" in choice.reason
    assert not hardware.use_bf16_mixed_precision("cpu")
    assert hardware.cpu_kind() == capability


def test_explicit_dtypes_are_kept_and_unknown_names_refused(cpu):
    cpu("AVX2")
    assert hardware.resolve_dtype("bf16").dtype == torch.bfloat16  # --dtype overrides the rule
    assert hardware.resolve_dtype(torch.float16).dtype == torch.float16
    assert hardware.resolve_dtype("fp32").reason == "given"
    with pytest.raises(ValueError, match="Unknown dtype 'float64'.*auto"):
        hardware.resolve_dtype("float64")


def test_describe_cpu_names_the_model_kind_and_threads(cpu):
    cpu("AVX2")
    line = hardware.describe_cpu()
    assert hardware.cpu_model_name() in line and "AVX2" in line and f"{torch.get_num_threads()} threads" in line


def test_flex_attention_is_refused_on_cpus_with_wrong_flex_kernels(cpu, monkeypatch):
    """PyTorch 2.13's compiled CPU flex kernels give NaN or wrong values with AVX2 only: building, loading or switching
    a model to flex attention there raises, saying what to use instead; sdpa still works."""
    cpu("AVX2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="flex_attention.*AVX2.*sdpa"):
        OmniVisionModel(tiny_vision_config(attn_implementation="flex_attention"))
    model = OmniVisionModel(tiny_vision_config(attn_implementation="sdpa")).eval()
    with pytest.raises(ValueError, match="flex_attention.*AVX2"):
        model.set_attn_implementation("flex_attention")
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 28, 28)).last_hidden_state).all()


def test_flex_attention_on_cpu_tensors_is_refused_at_call_time(cpu):
    """A model built where flex attention was allowed (e.g. on a machine with a GPU, for the GPU) still refuses CPU
    inputs on such a CPU: its attention layers check their inputs' device."""
    cpu("AVX512")
    model = OmniAudioModel(tiny_audio_config(attn_implementation="flex_attention")).eval()
    cpu("AVX2")
    with pytest.raises(ValueError, match="flex_attention.*AVX2"), torch.no_grad():
        model(torch.randn(1, 1600))


def test_flex_attention_is_allowed_with_avx512(cpu):
    cpu("AVX512")
    assert hardware.flex_attention_cpu_problem() is None
    modeling_omni_common.check_flex_attention_device(torch.device("cpu"))  # no error


def test_c_kernels_are_cached_per_cpu(cpu, monkeypatch, tmp_path):
    """A kernel cache shared by two machines (a network home) keeps one build per CPU kind."""
    monkeypatch.setenv("OMNI_ENCODERS_CACHE", str(tmp_path))
    source = "int omni_answer(void) { return 42; }\n"
    built = []
    for capability in ("AVX512", "AVX2"):
        cpu(capability)
        modeling_omni_common.load_c_kernel.cache_clear()
        library = modeling_omni_common.load_c_kernel("answer", source)
        if library is None:
            pytest.skip("no C compiler on this machine")
        assert library.omni_answer() == 42
        built.append(sorted(path.name for path in (tmp_path / "kernels").iterdir()))
    modeling_omni_common.load_c_kernel.cache_clear()
    assert len(built[0]) == 1 and len(built[1]) == 2

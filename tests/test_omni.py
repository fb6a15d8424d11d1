"""The omni-modal LLM: a tiny Llama fed by the tiny encoders, its processor, generation, speech out, training, loading."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from helpers import (
    max_abs_diff,
    run_without_package,
    tiny_audio_config,
    tiny_omni_config,
    tiny_omni_tokenizer,
    tiny_text_config,
    tiny_vision_config,
)
from transformers import AutoModelForImageTextToText, AutoModelForMultimodalLM, AutoProcessor, LlamaForCausalLM, pipeline

from omni_encoders import (
    OmniCollator,
    OmniConfig,
    OmniForConditionalGeneration,
    OmniProcessor,
    OmniVisionModel,
    audio_frame_lengths,
)


IMAGE_PROMPT = "User: <image> what digit is this ?</s>\nAssistant:"
VIDEO_PROMPT = "User: <video> which way does it move ?</s>\nAssistant:"
AUDIO_PROMPT = "User: <audio> transcribe</s>\nAssistant:"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return OmniForConditionalGeneration(tiny_omni_config()).eval()


@pytest.fixture(scope="module")
def processor(model):
    return OmniProcessor.from_config(model.config, tiny_omni_tokenizer())


@pytest.fixture(scope="module")
def media():
    rng = np.random.default_rng(0)
    return {
        "image": (rng.random((28, 28, 3)) * 255).astype(np.uint8),
        "video": (rng.random((4, 28, 28, 3)) * 255).astype(np.uint8),
        "short_video": (rng.random((2, 28, 28, 3)) * 255).astype(np.uint8),
        "audio": (0.1 * rng.standard_normal(3000)).astype(np.float32),
        "long_audio": (0.1 * rng.standard_normal(5000)).astype(np.float32),
    }


def mixed_inputs(processor, media, **kwargs):
    return processor(
        text=[IMAGE_PROMPT, VIDEO_PROMPT, AUDIO_PROMPT, AUDIO_PROMPT],
        images=[media["image"]],
        videos=[media["short_video"]],
        audio=[media["audio"], media["long_audio"]],
        sampling_rate=16000,
        padding=True,
        return_tensors="pt",
        **kwargs,
    )


# ------------------------------------------------------------------------------------------------------- config


def test_config_builds_the_text_model_it_names_and_only_the_encoders_given():
    config = tiny_omni_config(modalities=("audio",), text_config={**tiny_text_config().to_dict(), "model_type": "qwen2"})
    model = OmniForConditionalGeneration(config)
    assert type(model.language_model).__name__ == "Qwen2ForCausalLM"
    assert model.audio_model is not None and model.vision_model is None and model.speech_decoder is None
    assert config.modalities == ("text", "audio")
    assert OmniConfig().text_config.model_type == "llama"  # the default LM


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_token_id": None}, "set image_token_id"),
        ({"image_token_id": 10_000}, "outside the LM's vocabulary"),
        ({"video_token_id": 3}, "distinct ids"),
        ({"projector_num_layers": 0}, "projector_num_layers"),
        ({"projector_hidden_act": "nope"}, "Unknown projector_hidden_act"),
    ],
)
def test_config_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_omni_config(**kwargs)


def test_projector_depth_and_width_follow_the_config():
    model = OmniForConditionalGeneration(tiny_omni_config(modalities=("image",), projector_num_layers=3,
                                                          projector_hidden_size=48))
    shapes = [tuple(linear.weight.shape) for linear in model.image_projector.linears]
    assert shapes == [(48, 32), (48, 48), (32, 48)]  # vision width 32 -> 48 -> 48 -> LM width 32


# ---------------------------------------------------------------------------------------------------- processor


def test_placeholders_expand_to_the_tokens_each_input_gives(model, processor, media):
    inputs = mixed_inputs(processor, media)
    counts = [(inputs["input_ids"] == token_id).sum(1).tolist() for token_id in (3, 4, 5)]
    audio_tokens = [audio_frame_lengths(n, 64, 4) for n in (3000, 5000)]
    assert counts[0] == [6, 0, 0, 0]  # num_tokens TiTok tokens
    assert counts[1] == [0, 2 * 3, 0, 0]  # 2 real frames (of 4 sampled, padded) x 3 tokens per frame
    assert counts[2] == [0, 0, *audio_tokens]
    assert inputs["video_frame_mask"].tolist() == [[1, 1, 0, 0]]
    assert inputs["audio_attention_mask"].sum(1).tolist() == [3000, 5000]
    assert (inputs["attention_mask"][:, -1] == 1).all()  # left padding for generation
    features = model.get_audio_features(inputs["input_values"], inputs["audio_attention_mask"])
    assert [len(tokens) for tokens in features.pooler_output] == audio_tokens


def test_processor_errors_when_placeholders_and_inputs_disagree(processor, media):
    with pytest.raises(ValueError, match="tokens in the prompts should be the same as the number of images"):
        processor(text=[IMAGE_PROMPT], images=[media["image"], media["image"]], return_tensors="pt")
    with pytest.raises(ValueError, match="but no audio inputs were passed"):
        processor(text=[AUDIO_PROMPT], return_tensors="pt")


def test_processor_needs_the_placeholder_tokens_in_the_vocabulary(model):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "hi": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")
    with pytest.raises(ValueError, match="no '<image>' token"):
        OmniProcessor.from_config(model.config, tokenizer)


def test_chat_template_renders_every_content_type(processor):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "audio"},
                                     {"type": "text", "text": "what is this ?"}]},
        {"role": "assistant", "content": "seven"},
        {"role": "user", "content": "and this ?"},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "User: <image> <video> <audio> what is this ?</s>\nAssistant: seven</s>\nUser: and this ?</s>\nAssistant:"


def test_chat_template_with_media_tokenizes_and_generates(model, processor, media):
    messages = [{"role": "user", "content": [{"type": "image", "image": PIL.Image.fromarray(media["image"])},
                                             {"type": "text", "text": "what digit is this ?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert (inputs["input_ids"] == 3).sum() == 6 and inputs["pixel_values"].shape == (1, 3, 28, 28)
    alone = processor(text=[IMAGE_PROMPT], images=[media["image"]], return_tensors="pt")
    torch.testing.assert_close(inputs["pixel_values"], alone["pixel_values"])
    assert inputs["input_ids"].tolist() == alone["input_ids"].tolist()
    assert model.generate(**inputs, max_new_tokens=3, do_sample=False).shape == (1, inputs["input_ids"].shape[1] + 3)


# -------------------------------------------------------------------------------------------------------- model


def test_forward_shapes_and_the_media_tokens_reach_the_lm(model, processor, media):
    inputs = mixed_inputs(processor, media)
    with torch.no_grad():
        outputs = model(**inputs)
        text_only = model.language_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    assert outputs.logits.shape == (4, inputs["input_ids"].shape[1], 34)
    assert torch.isfinite(outputs.logits).all()
    # The media rows differ from feeding the placeholders' own embeddings; the image shows in row 0 only.
    assert max_abs_diff(outputs.logits, text_only.logits) > 1e-3
    image_features = model.get_image_features(inputs["pixel_values"])
    assert [tuple(t.shape) for t in image_features.pooler_output] == [(6, 32)]


def test_padding_never_becomes_lm_tokens(model, processor, media):
    """A padded video (2 real frames of 4) and a padded audio clip give the same answers' logits as alone, and their
    token counts leave out the padding."""
    batch = mixed_inputs(processor, media)
    with torch.no_grad():
        batched = model(**batch).logits[:, -1]
        for row, (prompt, kwargs) in enumerate([
            (VIDEO_PROMPT, {"videos": [media["short_video"]]}),
            (AUDIO_PROMPT, {"audio": [media["audio"]]}),
        ], start=1):
            alone = processor(text=[prompt], sampling_rate=16000, return_tensors="pt", **kwargs)
            torch.testing.assert_close(batched[row], model(**alone).logits[0, -1], atol=1e-4, rtol=1e-4)
    video = model.get_video_features(batch["pixel_values_videos"], batch["video_frame_mask"])
    assert video.token_mask.sum().item() == 6 and video.last_hidden_state.shape[1] == 12


def test_mixed_batch_generates_each_answer_as_alone(model, processor, media):
    batch = mixed_inputs(processor, media)
    generated = model.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1]:]
    singles = [
        processor(text=[IMAGE_PROMPT], images=[media["image"]], return_tensors="pt"),
        processor(text=[VIDEO_PROMPT], videos=[media["short_video"]], return_tensors="pt"),
        processor(text=[AUDIO_PROMPT], audio=[media["audio"]], sampling_rate=16000, return_tensors="pt"),
        processor(text=[AUDIO_PROMPT], audio=[media["long_audio"]], sampling_rate=16000, return_tensors="pt"),
    ]
    for row, single in enumerate(singles):
        alone = model.generate(**single, max_new_tokens=6, do_sample=False)[:, single["input_ids"].shape[1]:]
        assert generated[row].tolist() == alone[0].tolist(), row


def test_generation_with_the_cache_matches_without(model, processor, media):
    batch = mixed_inputs(processor, media)
    cached = model.generate(**batch, max_new_tokens=4, do_sample=False)
    uncached = model.generate(**batch, max_new_tokens=4, do_sample=False, use_cache=False)
    assert cached.tolist() == uncached.tolist()


def test_inputs_embeds_find_the_placeholders_by_their_embedding(model, processor, media):
    inputs = processor(text=[IMAGE_PROMPT], images=[media["image"]], return_tensors="pt")
    with torch.no_grad():
        by_ids = model(**inputs).logits
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        by_embeds = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                          pixel_values=inputs["pixel_values"]).logits
    torch.testing.assert_close(by_ids, by_embeds)


def test_model_errors_are_specific(model, processor, media):
    inputs = processor(text=[IMAGE_PROMPT], images=[media["image"]], return_tensors="pt")
    with pytest.raises(ValueError, match="6 <image> placeholder tokens but no image inputs"):
        model(input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match=r"hold 6 <image> placeholder tokens but the 2 image input\(s\) give 12 tokens"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"].repeat(2, 1, 1, 1))
    audio_only = OmniForConditionalGeneration(tiny_omni_config(modalities=("audio",)))
    with pytest.raises(ValueError, match="no image encoder"):
        audio_only(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
    with pytest.raises(TypeError, match="pixel_mask"):
        model(**inputs, pixel_mask=inputs["pixel_values"])


# ------------------------------------------------------------------------------------------------- speech output


def test_generate_returns_speech_of_the_length_the_durations_give(model, processor, media):
    batch = mixed_inputs(processor, media)
    out = model.generate(**batch, max_new_tokens=5, do_sample=False, return_audio=True,
                         speaker_ids=torch.tensor([0, 1, 2, 3]))
    text = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.sequences.tolist() == text.tolist()
    speech = out.speech_outputs
    hop = model.config.speech_decoder_config.hop_length
    assert out.waveform_lengths.tolist() == (speech.mel_lengths * hop).tolist()
    assert speech.mel_lengths.tolist() == speech.durations.sum(1).tolist()
    assert out.waveform.shape == (4, int(out.waveform_lengths.max()))
    assert out.waveform.abs().max() <= 1.0 and (out.waveform_lengths > 0).all()
    # the decoder read one state per answer token up to the end of the answer
    answer = out.sequences[:, batch["input_ids"].shape[1]:]
    stops = (answer == 2).long().cumsum(1) == 0
    assert ((speech.durations > 0).sum(1) <= stops.sum(1).clamp(min=1)).all()


def test_return_audio_needs_a_speech_decoder(media):
    model = OmniForConditionalGeneration(tiny_omni_config(modalities=("image",))).eval()
    processor = OmniProcessor.from_config(model.config, tiny_omni_tokenizer())
    inputs = processor(text=[IMAGE_PROMPT], images=[media["image"]], return_tensors="pt")
    with pytest.raises(ValueError, match="needs a speech decoder"):
        model.generate(**inputs, max_new_tokens=2, return_audio=True)


# ------------------------------------------------------------------------------------------------------ training


def training_examples(media):
    return [
        {"messages": [{"role": "user", "content": [{"type": "image", "image": media["image"]},
                                                   {"type": "text", "text": "what digit is this ?"}]},
                      {"role": "assistant", "content": "seven"}]},
        {"messages": [{"role": "user", "content": [{"type": "video", "video": media["video"]},
                                                   {"type": "text", "text": "which way does it move ?"}]},
                      {"role": "assistant", "content": "left"}]},
        {"messages": [{"role": "user", "content": [{"type": "audio", "audio": media["audio"]},
                                                   {"type": "text", "text": "transcribe"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "three one four"}]}]},
    ]


def test_collator_masks_the_prompt_out_of_the_labels(media):
    processor = OmniProcessor.from_config(tiny_omni_config(), tiny_omni_tokenizer(padding_side="left"))
    batch = OmniCollator(processor)(training_examples(media))
    tokenizer = processor.tokenizer
    answers = [tokenizer.decode(row[row != -100]) for row in batch["labels"]]
    assert answers == ["seven </s>", "left </s>", "three one four </s>"]
    for row, prompt in enumerate([IMAGE_PROMPT, VIDEO_PROMPT, AUDIO_PROMPT]):
        length = int(batch["attention_mask"][row].sum())
        assert batch["attention_mask"][row, :length].all()  # right padding for training
        prompt_ids = processor(text=[prompt], images=[media["image"]] if row == 0 else None,
                               videos=[media["video"]] if row == 1 else None,
                               audio=[media["audio"]] if row == 2 else None, sampling_rate=16000)["input_ids"][0]
        assert batch["input_ids"][row, : len(prompt_ids)].tolist() == prompt_ids
        assert (batch["labels"][row, : len(prompt_ids)] == -100).all()
    assert batch["pixel_values_videos"].shape[:2] == (1, 4) and batch["input_values"].shape == (1, 3000)


def transcribed_examples(media):
    """Two speech examples: one clip with its transcript, one without (no CTC target)."""
    return [
        {"messages": [{"role": "user", "content": [
            {"type": "audio", "audio": media["audio"], "transcript": "three one four"},
            {"type": "text", "text": "transcribe"}]},
            {"role": "assistant", "content": "three one four"}]},
        {"messages": [{"role": "user", "content": [{"type": "audio", "audio": media["long_audio"]},
                                                   {"type": "text", "text": "transcribe"}]},
                      {"role": "assistant", "content": "nine"}]},
    ]  # fmt: skip


def test_collator_turns_audio_transcripts_into_ctc_labels(media):
    processor = OmniProcessor.from_config(tiny_omni_config(modalities=("audio",)), tiny_omni_tokenizer())
    batch = OmniCollator(processor)(transcribed_examples(media))
    three_one_four = processor.tokenizer.convert_tokens_to_ids(["three", "one", "four"])
    assert batch["audio_ctc_labels"].tolist() == [three_one_four, [-100, -100, -100]]
    assert "audio_ctc_labels" not in OmniCollator(processor)(training_examples(media))  # no transcripts, no labels


def test_audio_ctc_loss_is_the_head_s_ctc_over_the_transcribed_clips(media):
    torch.manual_seed(0)
    config = tiny_omni_config(modalities=("audio",), audio_ctc_loss_weight=0.5)
    model = OmniForConditionalGeneration(config)
    processor = OmniProcessor.from_config(config, tiny_omni_tokenizer())
    batch = OmniCollator(processor)(transcribed_examples(media))
    outputs = model(**batch)
    without_ctc = model(**{name: value for name, value in batch.items() if name != "audio_ctc_labels"})
    torch.testing.assert_close(outputs.loss, without_ctc.loss + 0.5 * outputs.audio_ctc_loss)

    # the reference: CTC of the head over the first clip's valid frames alone, blank = the LM's padding token
    features = model.get_audio_features(batch["input_values"], batch["audio_attention_mask"])
    frames = int(features.token_mask[0].sum())
    log_probs = model.audio_ctc_head(features.last_hidden_state[:1, :frames]).log_softmax(-1)
    target = batch["audio_ctc_labels"][:1]
    expected = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1), target, torch.tensor([frames]), torch.tensor([3]), blank=0
    )  # reduction "mean" divides by the target length
    torch.testing.assert_close(outputs.audio_ctc_loss, expected)
    outputs.loss.backward()
    assert model.audio_ctc_head.weight.grad.abs().sum() > 0
    assert model.audio_model.waveform_tokenizer.conv_layers[0].conv.weight.grad.abs().sum() > 0
    with torch.no_grad():  # inference never needs the head
        assert model.generate(**processor(text=[AUDIO_PROMPT], audio=[media["audio"]], sampling_rate=16000,
                                          return_tensors="pt"), max_new_tokens=2).shape[1] > 0


def test_audio_ctc_settings_and_labels_are_checked(media):
    with pytest.raises(ValueError, match="needs an audio_config"):
        tiny_omni_config(modalities=("image",), audio_ctc_loss_weight=1.0)
    with pytest.raises(ValueError, match="set text_config.pad_token_id"):
        tiny_omni_config(modalities=("audio",), audio_ctc_loss_weight=1.0,
                         text_config=tiny_text_config(pad_token_id=None))
    with pytest.raises(ValueError, match="must be >= 0"):
        tiny_omni_config(modalities=("audio",), audio_ctc_loss_weight=-1.0)
    model = OmniForConditionalGeneration(tiny_omni_config(modalities=("audio",)))
    processor = OmniProcessor.from_config(model.config, tiny_omni_tokenizer())
    batch = OmniCollator(processor)(transcribed_examples(media))
    with pytest.raises(ValueError, match="trains no CTC head"):
        model(**batch)
    ctc_model = OmniForConditionalGeneration(tiny_omni_config(modalities=("audio",), audio_ctc_loss_weight=1.0))
    with pytest.raises(ValueError, match="one transcript row per clip"):
        ctc_model(**{**batch, "audio_ctc_labels": batch["audio_ctc_labels"][:1]})


def test_sample_loss_reduction_weighs_every_example_the_same(media):
    torch.manual_seed(0)
    model = OmniForConditionalGeneration(tiny_omni_config(modalities=("image", "audio"), loss_reduction="sample"))
    processor = OmniProcessor.from_config(model.config, tiny_omni_tokenizer())
    batch = OmniCollator(processor)([training_examples(media)[0], training_examples(media)[2]])  # 2 and 4 targets
    outputs = model(**batch)
    logits, labels = outputs.logits[:, :-1], batch["labels"][:, 1:]
    per_example = [
        torch.nn.functional.cross_entropy(logits[row][labels[row] != -100], labels[row][labels[row] != -100])
        for row in range(2)
    ]
    torch.testing.assert_close(outputs.loss, (per_example[0] + per_example[1]) / 2)
    model.config.loss_reduction = "token"  # transformers' mean over every target token of the batch
    token_mean = torch.nn.functional.cross_entropy(logits[labels != -100], labels[labels != -100])
    torch.testing.assert_close(model(**batch).loss, token_mean)
    with pytest.raises(ValueError, match='loss_reduction must be "token" or "sample"'):
        tiny_omni_config(loss_reduction="mean")


def test_trainer_lowers_the_loss(tmp_path, media):
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainingArguments

    class Examples(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return training_examples(media)[index]

    torch.manual_seed(0)
    model = OmniForConditionalGeneration(tiny_omni_config(modalities=("image", "video", "audio")))
    processor = OmniProcessor.from_config(model.config, tiny_omni_tokenizer())
    collator = OmniCollator(processor)
    batch = collator(training_examples(media))
    model.eval()
    with torch.no_grad():
        before = model(**batch).loss.item()
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=20, per_device_train_batch_size=3, learning_rate=1e-2,
        remove_unused_columns=False, report_to=[], save_strategy="no", use_cpu=True, logging_steps=100,
        dataloader_num_workers=0,
    )
    Trainer(model=model, args=args, train_dataset=Examples(), data_collator=collator).train()
    model.eval()
    with torch.no_grad():
        after = model(**batch).loss.item()
    assert after < 0.5 * before, (before, after)


# The LM's attention projections and every projector layer (the encoders' own q_proj/v_proj are left out).
LORA_TARGETS = r"language_model\..*\.(q_proj|v_proj)|.*_projector\.linears\.\d+"


def test_freezing_and_lora_on_the_lm_and_the_projectors(media):
    from peft import LoraConfig, get_peft_model

    model = OmniForConditionalGeneration(tiny_omni_config(modalities=("image",)))
    model.freeze("vision", "text")
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"image_projector"}
    with pytest.raises(ValueError, match="no audio part"):
        model.freeze("audio")
    with pytest.raises(ValueError, match="Unknown part"):
        model.freeze("eyes")

    model = OmniForConditionalGeneration(tiny_omni_config(modalities=("image",)))
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=LORA_TARGETS))
    trainable = [name for name, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert any("image_projector" in name for name in trainable) and any("q_proj" in name for name in trainable)
    assert not any("vision_model" in name for name in trainable)
    processor = OmniProcessor.from_config(model.config, tiny_omni_tokenizer())
    batch = OmniCollator(processor)(training_examples(media)[:1])
    lora(**batch).loss.backward()
    assert all(p.grad is not None for p in lora.parameters() if p.requires_grad)


def test_no_split_modules_are_the_blocks_fsdp_auto_wraps(model, monkeypatch):
    """accelerate's FSDP transformer auto-wrap policy (`--fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP`, from
    `_no_split_modules`) finds every class named: the blocks of each part, not the classes a part's model type declares
    without building them (SigLIP's text embeddings and pooling head), which made accelerate raise "Could not find
    the transformer layer class SiglipTextEmbeddings in the model"."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    blocks = {
        "LlamaDecoderLayer",  # the LM
        "SiglipVisionEmbeddings", "SiglipEncoderLayer", "OmniDualStreamBlock", "OmniTokenCompressor",  # image, video
        "OmniVideoBlock",
        "OmniAudioConformerBlock", "OmniAudioSpeakerEncoder",  # audio
        "OmniAudioDecoderFFTBlock",  # speech decoder
    }  # fmt: skip
    assert model._no_split_modules == blocks
    assert model.vision_model._no_split_modules == {
        "SiglipVisionEmbeddings", "SiglipEncoderLayer", "OmniDualStreamBlock", "OmniTokenCompressor"
    }
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # the plugin writes it; restored after the test
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="TRANSFORMER_BASED_WRAP")
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    units = [name for name, module in model.named_modules() if policy(module)]
    assert {type(model.get_submodule(name)).__name__ for name in units} == blocks
    assert [name for name in units if name.startswith("language_model.")] == [
        "language_model.model.layers.0", "language_model.model.layers.1"
    ]


# ------------------------------------------------------------------------------------------ saving and loading


def test_save_load_auto_classes_and_pipeline(tmp_path, model, processor, media):
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_omni.OmniConfig",
        "AutoModelForImageTextToText": "modeling_omni.OmniForConditionalGeneration",
        "AutoModelForMultimodalLM": "modeling_omni.OmniForConditionalGeneration",
    }
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(AutoModelForMultimodalLM.from_pretrained(tmp_path)) is OmniForConditionalGeneration
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded_processor) is OmniProcessor and loaded_processor.num_image_tokens == 6
    assert loaded_processor.audio_downsample_rate == 4 and loaded_processor.num_video_tokens_per_frame == 3
    inputs = mixed_inputs(loaded_processor, media)
    torch.testing.assert_close(inputs["input_ids"], mixed_inputs(processor, media)["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, atol=0, rtol=0)

    answer = pipeline("image-text-to-text", model=str(tmp_path))(
        text=[{"role": "user", "content": [{"type": "image", "image": PIL.Image.fromarray(media["image"])},
                                           {"type": "text", "text": "what digit is this ?"}]}],
        max_new_tokens=3,
    )
    single = processor(text=[IMAGE_PROMPT], images=[media["image"]], return_tensors="pt")
    expected = model.generate(**single, max_new_tokens=3, do_sample=False)[0, single["input_ids"].shape[1]:]
    assert answer[0]["generated_text"][-1] == {
        "role": "assistant", "content": " " + processor.decode(expected, skip_special_tokens=True)
    }  # the pipeline decodes the whole sequence and cuts the prompt: the space before the answer stays


def test_from_pretrained_parts_loads_each_part_and_trains_only_the_new(tmp_path):
    torch.manual_seed(1)
    text = LlamaForCausalLM(tiny_text_config())
    text.save_pretrained(tmp_path / "text")
    vision = OmniVisionModel(tiny_vision_config())
    vision.save_pretrained(tmp_path / "vision")
    from omni_encoders import OmniAudioForCTC

    asr = OmniAudioForCTC(tiny_audio_config())
    model = OmniForConditionalGeneration.from_pretrained_parts(
        tmp_path / "text", vision_model=tmp_path / "vision", audio_model=asr, image_token_id=3, audio_token_id=5,
        freeze=("text", "vision", "audio"),
    )
    for part, reference in ((model.language_model, text), (model.vision_model, vision), (model.audio_model, asr.model)):
        for (name, value), (_, expected) in zip(part.state_dict().items(), reference.state_dict().items()):
            assert torch.equal(value, expected), name
    assert model.video_model is None and model.config.audio_config.to_dict() == asr.config.to_dict()
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"image_projector", "audio_projector"}
    assert not any(p.is_meta for p in model.parameters())
    weights = model.image_projector.linears[0].weight
    assert 0.01 < weights.std().item() < 0.03  # initialised as the config says (std 0.02)


def test_remote_code_without_the_package(tmp_path, model, processor, media):
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    inputs = mixed_inputs(processor, media)
    np.save(tmp_path / "image.npy", media["image"])
    np.save(tmp_path / "audio.npy", media["audio"])
    with torch.no_grad():
        expected = model(**inputs).logits[:, -1]
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    result = run_without_package(
        f"""
        import json, sys, numpy as np, torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        image, audio = np.load({str(tmp_path / "image.npy")!r}), np.load({str(tmp_path / "audio.npy")!r})
        inputs = processor(text=[{IMAGE_PROMPT!r}, {AUDIO_PROMPT!r}], images=[image], audio=[audio], sampling_rate=16000,
                           padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits[:, -1]
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        print(json.dumps({{"model": type(model).__name__, "processor": type(processor).__name__,
                          "logits": logits.tolist(), "generated": generated.tolist()}}))
        """,
        tmp_path,
    )
    assert (result["model"], result["processor"]) == ("OmniForConditionalGeneration", "OmniProcessor")
    alone = processor(text=[IMAGE_PROMPT, AUDIO_PROMPT], images=[media["image"]], audio=[media["audio"]],
                      sampling_rate=16000, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**alone).logits[:, -1]
    assert max_abs_diff(torch.tensor(result["logits"]), expected) < 1e-5
    assert result["generated"] == model.generate(**alone, max_new_tokens=4, do_sample=False).tolist()
    del generated


# ------------------------------------------------------------------------------------- generation-based evaluation


def test_generate_answers_matches_generate_and_the_trainer_scores_them(tmp_path, model, processor, media):
    from transformers import TrainingArguments

    from omni_encoders.training import OmniGenerationTrainer, generate_answers

    examples = training_examples(media)
    conversations = [example["messages"][:-1] for example in examples]
    answers = generate_answers(model, processor, conversations, batch_size=2, max_new_tokens=3)
    prompts = [IMAGE_PROMPT, VIDEO_PROMPT, AUDIO_PROMPT]
    media_kwargs = [{"images": [media["image"]]}, {"videos": [media["video"]]}, {"audio": [media["audio"]]}]
    for answer, prompt, kwargs in zip(answers, prompts, media_kwargs, strict=True):
        single = processor(text=[prompt], sampling_rate=16000, return_tensors="pt", **kwargs)
        expected = model.generate(**single, max_new_tokens=3, do_sample=False)[0, single["input_ids"].shape[1]:]
        assert answer == processor.decode(expected, skip_special_tokens=True).strip()

    references = [example["messages"][-1]["content"] for example in examples]
    references = [r if isinstance(r, str) else r[0]["text"] for r in references]
    seen = {}

    def answer_metrics(task, predictions, gold):
        seen[task] = (predictions, gold)
        return {"matches": sum(p == g for p, g in zip(predictions, gold, strict=True))}

    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True)
    trainer = OmniGenerationTrainer(
        model=model, args=args, eval_dataset={"all": examples, "first": examples[:1]}, processing_class=processor,
        answer_metrics=answer_metrics, generation_kwargs={"max_new_tokens": 3},
    )  # fmt: skip
    metrics = trainer.evaluate()
    assert seen["all"] == (answers, references) and seen["first"] == (answers[:1], references[:1])
    assert metrics == {"eval_all_matches": sum(a == r for a, r in zip(answers, references)),
                       "eval_first_matches": int(answers[0] == references[0]), "epoch": 0}  # as Trainer.evaluate
    assert not model.training


def test_chat_examples_mix_tasks_with_repeats_and_the_word_tokenizer_round_trips():
    from datasets import Dataset

    from omni_encoders.training import ChatExamples, train_word_level_tokenizer

    def to_chat(row):
        return {"messages": [{"role": "user", "content": row["q"]}, {"role": "assistant", "content": row["a"]}]}

    numbers = Dataset.from_dict({"q": ["one ?", "two ?", "three ?", "four ?"], "a": ["1", "2", "3", "4"]})
    letters = Dataset.from_dict({"q": ["a ?", "b ?"], "a": ["x", "y"]})
    mixed = ChatExamples({"numbers": (numbers, to_chat), "letters": (letters, to_chat)}, {"numbers": 1.5, "letters": 2})
    assert len(mixed) == 6 + 4 and mixed.task_counts() == {"numbers": 6, "letters": 4}
    rows = [mixed[i]["messages"][0]["content"] for i in range(len(mixed))]
    assert sorted(rows[:4]) == ["four ?", "one ?", "three ?", "two ?"] and len(set(rows[4:6])) == 2  # 1 + a half
    assert rows[6:] == ["a ?", "b ?", "a ?", "b ?"]
    with pytest.raises(ValueError, match="repeats must be >= 0"):
        ChatExamples({"letters": (letters, to_chat)}, {"letters": -1})

    tokenizer = train_word_level_tokenizer(["User : what digit is this ?", "seven eight"])
    ids = tokenizer("User: <image> what digit is this ?</s>")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["User", ":", "<image>", "what", "digit", "is", "this", "?", "</s>"]
    assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids, skip_special_tokens=True) == "User : what digit is this ?"
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<pad>"


def test_task_grouped_sampler_gives_one_task_batches_covering_every_row():
    from datasets import Dataset

    from omni_encoders.training import ChatExamples, TaskGroupedSampler

    def to_chat(row):
        return {"messages": [{"role": "user", "content": row["q"]}, {"role": "assistant", "content": "a"}]}

    tasks = {name: (Dataset.from_dict({"q": [f"{name}{i}" for i in range(size)]}), to_chat)
             for name, size in (("image", 10), ("video", 7), ("speech", 4))}  # fmt: skip
    examples = ChatExamples(tasks)
    sampler = TaskGroupedSampler(examples, batch_size=4, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 4 * (3 + 2 + 1)  # each task's last batch topped up
    batches = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert all(len({examples.tasks[i] for i in batch}) == 1 for batch in batches)
    assert set(order) == set(range(len(examples)))  # every row, each epoch
    assert [examples.tasks[b[0]] for b in batches] != ["image"] * 3 + ["video"] * 2 + ["speech"]  # batches shuffled
    assert list(TaskGroupedSampler(examples, batch_size=4, seed=0)) == order  # seeded
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new order each epoch

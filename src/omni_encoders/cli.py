# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""`omni-encoders` command line: the end-to-end tour of the models on real data made or bundled on this machine.

    omni-encoders                  # the whole tour (same as `omni-encoders tour`)
    omni-encoders tour --steps vision
    omni-encoders tour --steps long-audio      # the audio encoder offline and as a stream, on 24 s of speech
    omni-encoders tour --steps train-vision --output-dir digits-classifier
    omni-encoders tour --steps train-omni      # a small omni-modal LLM: images, videos and speech in, text out
    omni-encoders encode-image photo.jpg --size full
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable

import torch

from .hardware import describe_cpu, resolve_dtype, use_bf16_mixed_precision


DTYPE_CHOICES = ["auto", "bf16", "fp32"]


def _banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 74 - len(title)), flush=True)


def sample_image():
    """A real photograph that ships with scikit-learn (a Chinese temple, 427x640)."""
    from sklearn.datasets import load_sample_image

    import PIL.Image

    return PIL.Image.fromarray(load_sample_image("china.jpg"))


def encode_image(image, size: str = "full", dtype: torch.dtype = torch.float32) -> dict:
    """Encode `image` with a randomly initialised vision encoder (`size="full"`: the spec's SigLIP so400m model) and
    return the output shapes and timings."""
    from . import OmniVisionConfig, OmniVisionImageProcessor, OmniVisionModel

    if size == "full":
        config = OmniVisionConfig()
    else:
        config = OmniVisionConfig(
            backbone_config={"model_type": "siglip_vision_model", "hidden_size": 192, "intermediate_size": 768,
                             "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 224, "patch_size": 16},
            num_attention_heads=4, num_tokens=64,
        )
    start = time.perf_counter()
    model = OmniVisionModel._from_config(config, dtype=dtype).eval()
    build_seconds = time.perf_counter() - start
    processor = OmniVisionImageProcessor(size={"height": config.image_size, "width": config.image_size})
    pixel_values = processor(image, return_tensors="pt").pixel_values.to(dtype)
    with torch.inference_mode():  # one call, timed as it comes (a warm-up would double the step on slow CPUs)
        start = time.perf_counter()
        outputs = model(pixel_values)
        forward_seconds = time.perf_counter() - start
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "pixel_values": tuple(pixel_values.shape),
        "tokens": tuple(outputs.last_hidden_state.shape),
        "patch_embeddings": tuple(outputs.patch_embeddings.shape),
        "pooled": tuple(outputs.pooler_output.shape),
        "build_seconds": build_seconds,
        "forward_seconds": forward_seconds,
        "finite": bool(torch.isfinite(outputs.last_hidden_state).all()),
    }


def tour_vision(args: argparse.Namespace) -> None:
    _banner(f"Vision encoder ({args.size} size, {args.dtype})")
    image = sample_image()
    print(f"image: scikit-learn sample 'china.jpg', {image.width}x{image.height} RGB")
    report = encode_image(image, size=args.size, dtype=args.torch_dtype)
    print(f"parameters: {report['parameters'] / 1e6:.1f} M (built in {report['build_seconds']:.1f} s)")
    print(f"pixel_values {report['pixel_values']} -> TiTok tokens {report['tokens']}, "
          f"patch embeddings {report['patch_embeddings']}, pooled {report['pooled']}")
    print(f"forward: {report['forward_seconds'] * 1000:.0f} ms, outputs finite: {report['finite']}")
    if not report["finite"]:
        raise SystemExit("vision encoder produced non-finite values")


def synthesize_speech(text: str, voice: str = "en-us", pitch: int = 50) -> tuple:
    """Speech made on this machine with espeak-ng: `(float32 waveform, sampling rate)` (22.05 kHz mono)."""
    import shutil
    import subprocess
    import tempfile

    import soundfile

    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed to synthesise speech: apt-get install espeak-ng (scripts/setup.sh does)")
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-w", path, text], check=True, capture_output=True)
        return soundfile.read(path, dtype="float32")


def audio_config(size: str = "full", **options):
    """The tour's audio encoder config: the spec's model (`size="full"`) or a small one, with `options` on top."""
    from . import OmniAudioConfig

    if size == "full":
        return OmniAudioConfig(**options)
    return OmniAudioConfig(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, kv_lora_rank=64, qk_rope_head_dim=32,
        intermediate_size=1024, tokenizer_channels=[32, 64, 64, 128, 128, 256], speaker_hidden_size=128,
        speaker_embedding_size=128, speaker_num_lstm_layers=2, **options,
    )  # fmt: skip


def encode_audio(waveforms: list, sampling_rate: int, size: str = "full", dtype: torch.dtype = torch.float32) -> dict:
    """Encode `waveforms` (the first for the encoder, all of them as speaker references) with a randomly initialised
    audio encoder with residual quantisation (`size="full"`: the spec's model) and return shapes and timings."""
    from . import OmniAudioFeatureExtractor, OmniAudioModel

    config = audio_config(size, use_quantizer=True)
    start = time.perf_counter()
    model = OmniAudioModel._from_config(config, dtype=dtype).eval()
    build_seconds = time.perf_counter() - start
    extractor = OmniAudioFeatureExtractor(samples_per_frame=config.tokenizer_samples_per_frame)
    start = time.perf_counter()
    inputs = extractor(waveforms[:1], sampling_rate=sampling_rate, return_tensors="pt")
    references = extractor(waveforms, sampling_rate=sampling_rate, return_speaker_features=True, return_tensors="pt")
    extract_seconds = time.perf_counter() - start
    with torch.inference_mode():
        model(inputs.input_values.to(dtype), inputs.attention_mask)  # warm-up
        start = time.perf_counter()
        outputs = model(inputs.input_values.to(dtype), inputs.attention_mask, use_cache=True)
        forward_seconds = time.perf_counter() - start
        speakers = model.get_speaker_embeddings(references.speaker_features, references.speaker_attention_mask)
    seconds = inputs.input_values.shape[1] / extractor.sampling_rate
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_values": tuple(inputs.input_values.shape),
        "frames": tuple(outputs.last_hidden_state.shape),
        "frames_per_second": outputs.last_hidden_state.shape[1] / seconds,
        "codes": tuple(outputs.audio_codes.shape),
        "cache_kib": outputs.cache.memory_bytes() / 1024,
        "speaker_features": tuple(references.speaker_features.shape),
        "speaker_embeddings": tuple(speakers.shape),
        "speaker_norms": [round(float(norm), 3) for norm in speakers.float().norm(dim=-1)],
        "build_seconds": build_seconds,
        "extract_seconds": extract_seconds,
        "forward_seconds": forward_seconds,
        "finite": bool(torch.isfinite(outputs.last_hidden_state).all() and torch.isfinite(speakers).all()),
    }


def tour_audio(args: argparse.Namespace) -> None:
    _banner(f"Audio encoder ({args.size} size, {args.dtype})")
    sentence = "The quick brown fox jumps over the lazy dog."
    speech, rate = synthesize_speech(sentence)
    other_voice, _ = synthesize_speech(sentence, voice="en-gb", pitch=80)
    print(f"speech: espeak-ng {sentence!r}, {len(speech) / rate:.1f} s at {rate} Hz (resampled to 16 kHz), and the "
          "same sentence in a second voice as a speaker reference")
    report = encode_audio([speech, other_voice], rate, size=args.size, dtype=args.torch_dtype)
    print(f"parameters: {report['parameters'] / 1e6:.1f} M (built in {report['build_seconds']:.1f} s)")
    print(f"input_values {report['input_values']} -> frames {report['frames']} ({report['frames_per_second']:.0f} "
          f"frames/s), RVQ codes {report['codes']}, latent K/V cache {report['cache_kib']:.0f} KiB")
    print(f"speaker features {report['speaker_features']} -> embeddings {report['speaker_embeddings']} "
          f"(L2 norms {report['speaker_norms']})")
    print(f"feature extraction: {report['extract_seconds'] * 1000:.0f} ms, forward: "
          f"{report['forward_seconds'] * 1000:.0f} ms, outputs finite: {report['finite']}")
    if not report["finite"]:
        raise SystemExit("audio encoder produced non-finite values")


# Read one after another by different voices, with a pause between them: about 20 s of speech for the long-audio step.
LONG_AUDIO_SPEECH = (
    ("The quick brown fox jumps over the lazy dog.", "en-us", 50),
    ("A language model hears twenty five audio tokens per second.", "en-gb", 80),
    ("Every chunk of one second attends to the two seconds before it.", "en-us", 30),
    ("The stream keeps only the latent keys and values of its left chunks.", "en-gb+f3", 50),
    ("So an hour of audio costs sixty times a minute, and no more.", "en-us", 70),
    ("Its frames come out at most a second after the sound that made them.", "en-gb", 40),
)


def encode_long_audio(
    waveform, sampling_rate: int, size: str = "full", dtype: torch.dtype = torch.float32, piece_ms: float = 100.0
) -> dict:
    """Encode `waveform` with a randomly initialised audio encoder in the streamable long-audio configuration (1 s
    attention chunks with 2 s of left context, causal convolution module and tokenizer norms, 25 frames/s out):
    once offline in one call, then as a stream of `piece_ms` pieces ([`OmniAudioModel.encode_stream`]). Returns shapes,
    timings, when the first frames came out and how far the stream is from the offline frames."""
    from . import OmniAudioFeatureExtractor, OmniAudioModel
    from .modeling_omni_audio import OmniAudioStreamState

    config = audio_config(
        size, attention_chunk_size=250, attention_left_chunks=2, conv_module_causal=True,
        tokenizer_norm_statistics="causal", output_downsample_rate=10,
    )  # fmt: skip
    model = OmniAudioModel._from_config(config, dtype=dtype).eval()
    # raw 16 kHz samples, as a stream gives them (a clip-level normalisation would need audio not yet heard)
    extractor = OmniAudioFeatureExtractor(samples_per_frame=config.tokenizer_samples_per_frame, do_normalize=False)
    audio = extractor(waveform, sampling_rate=sampling_rate, return_tensors="pt").input_values[0].to(dtype)
    seconds = audio.shape[0] / extractor.sampling_rate
    piece_samples = round(piece_ms * extractor.sampling_rate / 1000)
    consumed = 0

    def pieces():
        nonlocal consumed
        for piece in audio.split(piece_samples):
            consumed += piece.shape[0]
            yield piece

    with torch.inference_mode():
        model(audio[None, : 3 * extractor.sampling_rate])  # warm-up
        start = time.perf_counter()
        offline = model(audio[None]).last_hidden_state
        offline_seconds = time.perf_counter() - start
        state, streamed, first_frames_after, state_bytes = OmniAudioStreamState(), [], None, 0
        start = time.perf_counter()
        for frames in model.encode_stream(pieces(), state=state):
            first_frames_after = consumed if first_frames_after is None else first_frames_after
            streamed.append(frames)
            state_bytes = max(state_bytes, state.memory_bytes())
        stream_seconds = time.perf_counter() - start
    streamed = torch.cat(streamed, dim=1)
    difference = (streamed.float() - offline.float()).abs().max() / offline.float().abs().max()
    return {
        "seconds": seconds,
        "frames": tuple(offline.shape),
        "frames_per_second": offline.shape[1] / seconds,
        "chunk_seconds": config.attention_chunk_size * config.tokenizer_samples_per_frame / extractor.sampling_rate,
        "offline_seconds": offline_seconds,
        "stream_seconds": stream_seconds,
        "first_frames_after": first_frames_after / extractor.sampling_rate,
        "state_kib": state_bytes / 1024,
        "stream_frames": tuple(streamed.shape),
        "difference": float(difference),
        "finite": bool(torch.isfinite(offline).all() and torch.isfinite(streamed).all()),
    }


def tour_long_audio(args: argparse.Namespace) -> None:
    import numpy as np

    _banner(f"Audio encoder on long audio: chunked attention, streaming ({args.size} size, {args.dtype})")
    speech, rate = [], None
    for sentence, voice, pitch in LONG_AUDIO_SPEECH:
        waveform, rate = synthesize_speech(sentence, voice=voice, pitch=pitch)
        speech += [waveform, np.zeros(int(0.3 * rate), dtype=np.float32)]
    piece_ms = 100.0
    report = encode_long_audio(np.concatenate(speech), rate, size=args.size, dtype=args.torch_dtype, piece_ms=piece_ms)
    voices = len({voice for _, voice, _ in LONG_AUDIO_SPEECH})
    print(f"speech: {len(LONG_AUDIO_SPEECH)} espeak-ng sentences in {voices} voices, {report['seconds']:.1f} s; "
          f"encoder with {report['chunk_seconds']:g} s attention chunks (2 left), causal convolution and tokenizer "
          "norms, output pooled by 10")
    print(f"offline: frames {report['frames']} ({report['frames_per_second']:.0f} frames/s for a language model) in "
          f"{report['offline_seconds'] * 1000:.0f} ms (RTF {report['offline_seconds'] / report['seconds']:.3f})")
    print(f"stream of {piece_ms:g} ms pieces: first frames after {report['first_frames_after']:.2f} s of audio, "
          f"frames {report['stream_frames']} in {report['stream_seconds'] * 1000:.0f} ms (RTF "
          f"{report['stream_seconds'] / report['seconds']:.3f}), state at most {report['state_kib']:.0f} KiB; "
          f"max |stream - offline| / max |offline| = {report['difference']:.1e}, outputs finite: {report['finite']}")
    tolerance = 1e-4 if args.torch_dtype == torch.float32 else 5e-2
    if not report["finite"] or report["stream_frames"] != report["frames"] or report["difference"] > tolerance:
        raise SystemExit(f"the stream does not give the offline frames (tolerance {tolerance:g} in {args.dtype})")


def encode_videos(
    videos: list, size: str = "full", dtype: torch.dtype = torch.float32, num_frames: int | None = None,
    frame_size: int | None = None,
) -> dict:  # fmt: skip
    """Encode `videos` (files or frame arrays, one batch; clips shorter than `num_frames` are padded and masked) with a
    randomly initialised video encoder (`size="full"`: the spec's model on SigLIP so400m frames) and return the output
    shapes and timings. `num_frames` defaults to the config's (16 at full size), `frame_size` (the side the frames are
    resized to, a multiple of the patch size) to the config's image size (384 at full size)."""
    from . import OmniVideoConfig, OmniVideoModel, OmniVideoVideoProcessor

    if size == "full":
        config = OmniVideoConfig()
    else:
        config = OmniVideoConfig(
            vision_config={
                "backbone_config": {"model_type": "siglip_vision_model", "hidden_size": 192, "intermediate_size": 768,
                                    "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 224,
                                    "patch_size": 16},
                "num_attention_heads": 4, "num_hidden_layers": 1,
            },
            num_hidden_layers=2, num_attention_heads=4, num_tokens_per_frame=16, num_frames=8,
        )
    start = time.perf_counter()
    model = OmniVideoModel._from_config(config, dtype=dtype).eval()
    build_seconds = time.perf_counter() - start
    frame_size = frame_size or config.image_size
    processor = OmniVideoVideoProcessor(
        size={"height": frame_size, "width": frame_size}, num_frames=num_frames or config.num_frames
    )
    start = time.perf_counter()
    inputs = processor(videos, return_tensors="pt", return_metadata=True)
    process_seconds = time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        outputs = model(inputs.pixel_values_videos.to(dtype), frame_mask=inputs.frame_mask)
        forward_seconds = time.perf_counter() - start
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "sampled_frames": [metadata.frames_indices for metadata in inputs.video_metadata],
        "pixel_values_videos": tuple(inputs.pixel_values_videos.shape),
        "frame_mask": inputs.frame_mask.tolist(),
        "tokens": tuple(outputs.last_hidden_state.shape),
        "token_mask_sums": outputs.attention_mask.sum(1).tolist(),
        "pooled": tuple(outputs.pooler_output.shape),
        "aux_loss": outputs.aux_loss.item(),
        "build_seconds": build_seconds,
        "process_seconds": process_seconds,
        "forward_seconds": forward_seconds,
        "finite": all(bool(torch.isfinite(t).all()) for t in (outputs.last_hidden_state, outputs.pooler_output)),
    }


def tour_video(args: argparse.Namespace) -> None:
    import tempfile

    from .data import DIRECTIONS, build_moving_digit_videos, read_video

    _banner(f"Video encoder ({args.size} size, {args.dtype})")
    # At full size every frame goes through SigLIP so400m: 4 frames per clip of 224x224 (16x16 patches; any multiple
    # of 14 works, 384 is the default) keep the CPU tour short (the model takes up to 32 frames).
    num_frames, frame_size = (4, 224) if args.size == "full" else (8, None)
    with tempfile.TemporaryDirectory() as folder:
        videos = build_moving_digit_videos(num_videos=8, num_frames=16, frame_size=64, motion="line", cache_dir=folder)
        clip, other = videos["test"][0], videos["test"][1]
        short = read_video(other["video"])[:3]  # the first 3 frames of another clip, as a [T, H, W, 3] array
        print(f"videos: a digit moving {DIRECTIONS[clip['label']]} (16 frames of 64x64, H.264 mp4 from "
              f"omni_encoders.data) and the first 3 frames of one moving {DIRECTIONS[other['label']]} (an array); "
              f"sampling {num_frames} frames per clip" + (f" at {frame_size}x{frame_size}" if frame_size else ""))
        report = encode_videos(
            [clip["video"], short], size=args.size, dtype=args.torch_dtype, num_frames=num_frames,
            frame_size=frame_size,
        )
    print(f"parameters: {report['parameters'] / 1e6:.1f} M (built in {report['build_seconds']:.1f} s)")
    print(f"decoded, sampled and resized in {report['process_seconds'] * 1000:.0f} ms: "
          f"frames {report['sampled_frames']}")
    print(f"pixel_values_videos {report['pixel_values_videos']}, frame_mask {report['frame_mask']}")
    print(f"-> tokens {report['tokens']} (valid per video {report['token_mask_sums']}), pooled {report['pooled']}, "
          f"MoE aux loss {report['aux_loss']:.3f}")
    print(f"forward: {report['forward_seconds'] * 1000:.0f} ms, outputs finite: {report['finite']}")
    if not report["finite"]:
        raise SystemExit("video encoder produced non-finite values")
TTS_SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Speech synthesis runs on this laptop."]
TTS_VOICES = ["en-us", "en-gb+f3"]


def tour_tts(args: argparse.Namespace) -> None:
    from . import (
        OmniAudioDecoderConfig,
        OmniAudioDecoderFeatureExtractor,
        OmniAudioDecoderModel,
        OmniAudioDecoderProcessor,
        OmniAudioDecoderTokenizer,
    )

    _banner(f"Audio decoder: text to speech ({args.size} size, {args.dtype})")
    if args.size == "full":
        config = OmniAudioDecoderConfig()
    else:
        config = OmniAudioDecoderConfig(
            hidden_size=128, encoder_layers=2, decoder_layers=2, num_attention_heads=4, num_key_value_heads=2,
            kv_lora_rank=64, qk_rope_head_dim=16, intermediate_size=256, variance_predictor_hidden_size=64,
            postnet_channels=64, num_speakers=8, vocoder_initial_channels=128, vocoder_resblock_kernel_sizes=[3, 7],
            vocoder_resblock_dilation_sizes=[[1, 3], [1, 3]], hidden_dropout=0.0,
        )
    import soxr

    processor = OmniAudioDecoderProcessor(OmniAudioDecoderFeatureExtractor.from_model_config(config),
                                          OmniAudioDecoderTokenizer())
    speech = []
    for text, voice in zip(TTS_SENTENCES, TTS_VOICES):
        waveform, rate = synthesize_speech(text, voice=voice)
        speech.append(soxr.resample(waveform, rate, config.sampling_rate))
    lengths = ", ".join(f"{len(item) / config.sampling_rate:.2f} s" for item in speech)
    print(f"speech: espeak-ng voices {TTS_VOICES}: {lengths}")
    start = time.perf_counter()
    batch = processor(text=TTS_SENTENCES, audio=speech, sampling_rate=config.sampling_rate, return_tensors="pt")
    voiced = (batch["pitch_labels"] > 0).float().sum() / batch["labels_attention_mask"].sum()
    print(f"targets in {time.perf_counter() - start:.2f} s: labels {tuple(batch['labels'].shape)} (log-mel), "
          f"pitch_labels {tuple(batch['pitch_labels'].shape)} ({voiced:.0%} voiced frames, pyworld), "
          f"waveforms {tuple(batch['waveforms'].shape)}")
    batch["speaker_ids"] = torch.tensor([0, 1])

    start = time.perf_counter()
    model = OmniAudioDecoderModel(config)
    print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M "
          f"(vocoder {sum(p.numel() for p in model.vocoder.parameters()) / 1e6:.1f} M), "
          f"built in {time.perf_counter() - start:.1f} s")
    # Small: a few optimisation steps (the loss goes down). Full: one training forward (an optimiser for 377 M
    # parameters would need several GB more).
    steps = 5 if args.size == "small" else 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3) if args.size == "small" else None
    model.train()
    for step in range(steps):
        start = time.perf_counter()
        with torch.set_grad_enabled(optimizer is not None):
            outputs = model(**batch)
        if optimizer is not None:
            outputs.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        parts = ", ".join(
            f"{name} {outputs[f'{name}_loss'].item():.4f}"
            for name in ("mel", "duration", "pitch", "energy", "alignment", "vocoder")
        )
        what = f"train step {step + 1}/{steps}" if optimizer is not None else "training forward"
        print(f"{what} ({time.perf_counter() - start:.2f} s, fp32): loss {outputs.loss.item():.3f} = {parts}")
    durations = outputs.durations
    print(f"MAS durations (frames per character) of item 0: {durations[0, :12].tolist()}...; sums "
          f"{durations.sum(-1).tolist()} = mel frames {batch['labels_attention_mask'].sum(-1).tolist()}")

    model = model.to(args.torch_dtype).eval()
    model.vocoder.remove_weight_norm()
    text = "Hello from the omni encoders."
    inputs = processor(text=text, return_tensors="pt")
    with torch.inference_mode():
        model.generate(**inputs, speaker_ids=torch.tensor([1]))  # warm-up
        start = time.perf_counter()
        output = model.generate(**inputs, speaker_ids=torch.tensor([1]), speed=1.0)
        seconds = time.perf_counter() - start
        chunks = list(model.generate_stream(**inputs, speaker_ids=torch.tensor([1]), chunk_frames=16))
    waveform = output.waveform.float()
    streamed = torch.cat(chunks, dim=1).float()
    print(f"generate {text!r}: {inputs['input_ids'].shape[1]} characters -> mel {tuple(output.mel.shape)} -> "
          f"waveform {tuple(waveform.shape)} ({waveform.shape[1] // config.hop_length} frames x "
          f"{config.hop_length}) in {seconds * 1000:.0f} ms")
    print(f"streaming: {len(chunks)} chunks, max |stream - full| = {(streamed - waveform).abs().max():.2e}")

    # Zero-shot voice: the audio encoder's speaker encoder embeds the second clip (both models are untrained here).
    from . import OmniAudioConfig, OmniAudioFeatureExtractor, OmniAudioModel

    audio_config = OmniAudioConfig(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=2, kv_lora_rank=32, qk_rope_head_dim=16,
        intermediate_size=128, speaker_embedding_size=config.speaker_embedding_size,
    )
    audio_model = OmniAudioModel(audio_config).eval()
    references = OmniAudioFeatureExtractor()(
        [speech[1]], sampling_rate=config.sampling_rate, return_speaker_features=True, return_tensors="pt"
    )
    with torch.inference_mode():
        voice = audio_model.get_speaker_embeddings(references.speaker_features, references.speaker_attention_mask)
        cloned = model.generate(**inputs, speaker_embeddings=voice.to(model.dtype))
    print(f"zero-shot: speaker embedding {tuple(voice.shape)} of the {TTS_VOICES[1]!r} clip (OmniAudioModel) -> "
          f"waveform {tuple(cloned.waveform.shape)}")
    if not (torch.isfinite(waveform).all() and torch.isfinite(cloned.waveform).all()):
        raise SystemExit("the audio decoder produced non-finite audio")


def tour_training_arguments(output_dir: str, epochs: float, learning_rate: float, seed: int, bf16: bool):
    """The tour's `TrainingArguments`: AdamW with cosine decay after a 5 % warm-up, weight decay 0.05, batch 32, ten
    loss logs per run, no checkpoints, the raw dataset columns kept for the transform or collator."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=learning_rate,
        weight_decay=0.05,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,  # the transform or collator needs the raw columns (image/audio and label)
        logging_steps=0.1,  # ten times per run
        save_strategy="no",
        disable_tqdm=True,
        log_level="warning",
        seed=seed,
    )


def train_and_report(trainer) -> dict:
    """Train, save the model and its processor, evaluate; the tour prints its own summary from what this returns: the
    held-out metrics, the training losses logged, the training time, the steps and the parameter count."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    trainer.save_model()
    return {
        **trainer.evaluate(),
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "train_seconds": train_seconds,
        "steps": trainer.state.global_step,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
    }


def train_small_classifier(
    model, processing_class, train_dataset, eval_dataset, output_dir: str, epochs: float, learning_rate: float,
    seed: int, data_collator=None,
) -> dict:  # fmt: skip
    """The tour's training run: `Trainer` with AdamW, cosine decay, batch 32 and bf16 autocast where the hardware
    runs bfloat16 natively (`hardware.use_bf16_mixed_precision`), the raw dataset columns
    kept for the transform or collator; evaluates with accuracy and saves the model and its processor to `output_dir`.
    Returns the held-out metrics, the training losses logged (ten per run), the training time, the steps and the
    parameter count."""
    from transformers import Trainer

    from .training import classification_metrics

    args = tour_training_arguments(output_dir, epochs, learning_rate, seed, bf16=use_bf16_mixed_precision())
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=data_collator,
        processing_class=processing_class,
        compute_metrics=classification_metrics("accuracy"),
    )
    return train_and_report(trainer)


def train_digit_classifier(output_dir: str, epochs: float = 15, seed: int = 42) -> dict:
    """Train a small vision classifier from scratch on scikit-learn's digits with `Trainer`, evaluate it on the
    held-out digits and save it (model + image processor) to `output_dir`.

    The same pieces as `examples/image_classification.py`, at a shorter budget: the digits as a 🤗 dataset, processed
    on the fly (`with_transform`) by `OmniVisionImageProcessor`, accuracy from `omni_encoders.metrics`. Returns the
    held-out metrics, the training losses logged (ten per run) and the training time.
    """
    from transformers import set_seed

    from . import OmniVisionConfig, OmniVisionForImageClassification, OmniVisionImageProcessor
    from .data import build_digit_images
    from .training import ImageClassificationTransform

    dataset = build_digit_images(image_size=32)
    labels = dataset["train"].features["label"].names
    processor = OmniVisionImageProcessor(size={"height": 32, "width": 32})
    transform = ImageClassificationTransform(processor)
    set_seed(seed)
    model = OmniVisionForImageClassification(
        OmniVisionConfig(
            backbone_config={"model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 256,
                             "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
            num_hidden_layers=1, num_attention_heads=4, num_tokens=8, num_labels=len(labels),
            id2label=dict(enumerate(labels)), label2id={label: index for index, label in enumerate(labels)},
        )
    )  # fmt: skip
    report = train_small_classifier(
        model,
        processor,
        train_dataset=dataset["train"].with_transform(transform),
        eval_dataset=dataset["test"].with_transform(transform),
        output_dir=output_dir,
        epochs=epochs,
        learning_rate=3e-3,
        seed=seed,
    )
    return {**report, "num_train": len(dataset["train"]), "num_test": len(dataset["test"])}


@contextlib.contextmanager
def _one_thread_without_progress_bars():
    """The tour's training steps: their models are tiny, so a second intra-op thread adds synchronisation, not speed
    (and stalls on a busy machine); `Trainer`'s progress bars would drown the tour's output. Both are restored."""
    import transformers

    threads, progress_bars = torch.get_num_threads(), transformers.utils.logging.is_progress_bar_enabled()
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if progress_bars:
            transformers.utils.logging.enable_progress_bar()


def tour_train_vision(args: argparse.Namespace) -> None:
    import tempfile

    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    from .data import build_digit_images

    _banner("Training a small digit classifier (Trainer, datasets, evaluate)")
    with _one_thread_without_progress_bars(), tempfile.TemporaryDirectory() as scratch:
        output_dir = args.output_dir or scratch
        report = train_digit_classifier(output_dir, epochs=args.train_epochs)
        print(f"trained {report['parameters'] / 1e6:.2f} M parameters from scratch on {report['num_train']} "
              f"digits: {report['steps']} steps in {report['train_seconds']:.0f} s")  # fmt: skip
        print("training loss: " + " -> ".join(f"{loss:.2f}" for loss in report["losses"]))
        print(f"Trainer.evaluate on the {report['num_test']} held-out digits: "
              f"accuracy {report['eval_accuracy']:.3f}")  # fmt: skip

        # Use it like any transformers classifier: Auto classes and the pipeline, from the saved folder.
        model = AutoModelForImageClassification.from_pretrained(output_dir)
        classifier = pipeline(
            "image-classification", model=model, image_processor=AutoImageProcessor.from_pretrained(output_dir),
            device="cpu",
        )  # fmt: skip
        held_out = build_digit_images(image_size=32)["test"]
        predictions = classifier(list(held_out["image"]), batch_size=64)
        names = held_out.features["label"].names
        true_labels = [names[label] for label in held_out["label"]]
        correct = [top[0]["label"] == label for top, label in zip(predictions, true_labels, strict=True)]
        accuracy = sum(correct) / len(correct)
        print(f"{type(model).__name__} via pipeline('image-classification'): accuracy {accuracy:.3f} on "
              f"{len(correct)} held-out digits; first prediction {predictions[0][0]['label']!r} "
              f"(score {predictions[0][0]['score']:.2f}), true {true_labels[0]!r}: "
              f"{'correct' if correct[0] else 'a miss'}")  # fmt: skip
        if args.output_dir:
            print(f"saved to {args.output_dir}: pipeline('image-classification', model={args.output_dir!r})")
        # Trainer evaluated under bf16 autocast, the pipeline in float32: a borderline digit may flip, not more.
        if abs(accuracy - report["eval_accuracy"]) > 0.01:
            raise SystemExit("the pipeline and Trainer.evaluate disagree on the held-out accuracy")


def train_spoken_digit_classifier(output_dir: str, epochs: float = 30, seed: int = 42) -> dict:
    """Train a small audio classifier from scratch on spoken digits (espeak-ng and flite, 24 voices) with `Trainer`,
    evaluate it on the voices it never heard and save it (model + feature extractor) to `output_dir`.

    The pieces of `examples/audio_classification.py` at a much smaller budget (fewer voices and utterances, so expect a
    lower accuracy than the recipe's): the clips as a 🤗 dataset, padded per batch by `OmniAudioFeatureExtractor`
    (`AudioCollator`), accuracy from `omni_encoders.metrics`. Returns the held-out metrics, the training losses logged
    (ten per run), the training time and the held-out split.
    """
    from transformers import set_seed

    from . import OmniAudioConfig, OmniAudioFeatureExtractor, OmniAudioForAudioClassification
    from .data import build_spoken_digits
    from .training import AudioCollator

    dataset = build_spoken_digits(num_voices=24, repeats=2)
    labels = dataset["train"].features["label"].names
    set_seed(seed)
    model = OmniAudioForAudioClassification(
        OmniAudioConfig(
            tokenizer_channels=[16, 64, 64, 64, 64], tokenizer_kernel_sizes=[20, 8, 4, 4, 4],
            tokenizer_strides=[10, 4, 4, 2, 2], tokenizer_norm_groups=8,  # 640 samples (40 ms) per frame
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, kv_lora_rank=32,
            qk_rope_head_dim=8, intermediate_size=256, conv_kernel_size=15, hidden_dropout=0.1,
            use_speaker_encoder=False, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: index for index, label in enumerate(labels)},
        )
    )  # fmt: skip
    feature_extractor = OmniAudioFeatureExtractor(samples_per_frame=model.config.tokenizer_samples_per_frame)
    report = train_small_classifier(
        model,
        feature_extractor,
        train_dataset=dataset["train"],
        eval_dataset=dataset["test"],
        output_dir=output_dir,
        epochs=epochs,
        learning_rate=2e-3,
        seed=seed,
        data_collator=AudioCollator(feature_extractor, label_column="label"),
    )
    return {
        **report,
        "num_train": len(dataset["train"]),
        "num_train_voices": len(set(dataset["train"]["voice"])),
        "held_out": dataset["test"],
    }


def tour_train_audio(args: argparse.Namespace) -> None:
    import tempfile

    import soundfile
    from transformers import pipeline

    _banner("Training a small spoken-digit classifier (Trainer, datasets, evaluate)")
    with _one_thread_without_progress_bars(), tempfile.TemporaryDirectory() as scratch:
        output_dir = os.path.join(args.output_dir, "spoken_digits") if args.output_dir else scratch
        report = train_spoken_digit_classifier(output_dir, epochs=args.train_epochs * 2)
        held_out = report["held_out"]
        print(f"trained {report['parameters'] / 1e6:.2f} M parameters from scratch on {report['num_train']} "
              f"clips of {report['num_train_voices']} voices: {report['steps']} steps in "
              f"{report['train_seconds']:.0f} s")  # fmt: skip
        print("training loss: " + " -> ".join(f"{loss:.2f}" for loss in report["losses"]))
        print(f"Trainer.evaluate on {len(held_out)} clips of {len(set(held_out['voice']))} voices it never "
              f"heard: accuracy {report['eval_accuracy']:.3f} (chance 0.1)")  # fmt: skip

        # The saved folder serves the pipeline, like any transformers audio classifier; here on a wav file.
        classifier = pipeline("audio-classification", model=output_dir, device="cpu")
        clip = held_out[0]["audio"]
        wav_path = os.path.join(scratch, "held_out.wav")
        soundfile.write(wav_path, clip["array"], int(clip["sampling_rate"]))
        top = classifier(wav_path)[0]
        true_label = held_out.features["label"].names[held_out[0]["label"]]
        verdict = "correct" if top["label"] == true_label else (
            f"a miss (the classifier gets {report['eval_accuracy']:.0%} of these unseen voices' clips right)"
        )  # fmt: skip
        print(f"{type(classifier.model).__name__} via pipeline('audio-classification') on a wav file of "
              f"{held_out[0]['voice']!r}: {top['label']!r} (score {top['score']:.2f}), true {true_label!r}: {verdict}")
        if args.output_dir:
            print(f"saved to {output_dir}: pipeline('audio-classification', model={output_dir!r})")


OMNI_QUESTIONS = {"image": "what digit is this ?", "video": "which way does it move ?", "speech": "transcribe"}


def omni_chat(task: str, media, answer: str) -> dict:
    """A chat example of the tour's omni-modal LLM: the user's media and question, the assistant's answer (a spoken
    clip also carries its transcript, the target of the auxiliary CTC loss)."""
    item = {"type": "audio", "audio": media, "transcript": answer} if task == "speech" else {"type": task, task: media}
    return {"messages": [
        {"role": "user", "content": [item, {"type": "text", "text": OMNI_QUESTIONS[task]}]},
        {"role": "assistant", "content": answer},
    ]}  # fmt: skip


def train_omni_llm(output_dir: str, epochs: float = 7.5, learning_rate: float = 7e-4, seed: int = 42) -> dict:
    """Train a small omni-modal LLM from scratch with `Trainer`: a 2-layer Llama with a word-level tokenizer trained
    here, a small image encoder, video encoder and audio encoder, on digit images ("what digit is this ?" -> "seven"),
    moving-digit videos ("which way does it move ?" -> "left") and single spoken digits of 20 voices ("transcribe" ->
    "three"), one task per batch, with the audio encoder's auxiliary CTC loss; evaluate by generating the answers
    to held-out examples (spoken digits of 4 voices it never heard) and save model + processor to `output_dir`.

    The pieces of `examples/omni_llm.py` (which trains on spoken digit *strings* and reaches its targets in about
    11 minutes) at a budget of two minutes. Returns the held-out exact-match rates, the training losses logged,
    the training time, the steps, the parameter count and the held-out chats.
    """
    from transformers import LlamaConfig, set_seed

    from . import OmniAudioConfig, OmniCollator, OmniConfig, OmniForConditionalGeneration, OmniProcessor
    from . import OmniVideoConfig, OmniVisionConfig
    from .data import DIGIT_WORDS, DIRECTIONS, build_digit_images, build_moving_digit_videos, build_spoken_digits
    from .data import read_video
    from .training import ChatExamples, OmniGenerationTrainer, train_word_level_tokenizer

    images = build_digit_images(image_size=32)
    videos = build_moving_digit_videos(num_videos=400, num_frames=9, frame_size=32)
    speech = build_spoken_digits(num_voices=24, repeats=2)
    for split in speech.values():
        split.set_format("numpy", columns=["audio"], output_all_columns=True)
    frames = {split: [read_video(path) for path in videos[split]["video"]] for split in videos}  # decoded once

    def image_chat(row):
        return omni_chat("image", row["image"], DIGIT_WORDS[row["label"]])

    def speech_chat(row):
        return omni_chat("speech", row["audio"]["array"], DIGIT_WORDS[row["label"]])

    def video_source(split):
        def video_chat(index):
            return omni_chat("video", frames[split][index], DIRECTIONS[videos[split][index]["label"]])

        return range(len(frames[split])), video_chat

    train = {"image": (images["train"], image_chat), "video": video_source("train"),
             "speech": (speech["train"], speech_chat)}  # fmt: skip
    held_out = {"image": (images["test"], image_chat), "video": video_source("test"),
                "speech": (speech["test"], speech_chat)}  # fmt: skip
    tokenizer = train_word_level_tokenizer(
        ["User : Assistant :", *OMNI_QUESTIONS.values(), " ".join(DIGIT_WORDS), " ".join(DIRECTIONS)]
    )
    set_seed(seed)

    def siglip(layers: int) -> dict:
        return {"model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 256,
                "num_hidden_layers": layers, "num_attention_heads": 4, "image_size": 32, "patch_size": 8}  # fmt: skip

    config = OmniConfig(
        text_config=LlamaConfig(
            hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None, tie_word_embeddings=True, initializer_range=0.12, max_position_embeddings=256,
        ),
        vision_config=OmniVisionConfig(backbone_config=siglip(2), num_hidden_layers=1, num_attention_heads=4,
                                       num_tokens=8, initializer_range=0.08),
        video_config=OmniVideoConfig(
            vision_config={"backbone_config": siglip(1), "num_hidden_layers": 0, "num_attention_heads": 4},
            num_hidden_layers=2, num_attention_heads=4, moe_intermediate_size=128, compressor_intermediate_size=128,
            num_tokens_per_frame=1, num_frames=9, initializer_range=0.08,
        ),
        audio_config=OmniAudioConfig(
            tokenizer_channels=[16, 64, 64, 64, 64], tokenizer_kernel_sizes=[20, 8, 4, 4, 4],
            tokenizer_strides=[10, 4, 4, 2, 2], tokenizer_norm_groups=8,  # 640 samples (40 ms) per frame
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, kv_lora_rank=32,
            qk_rope_head_dim=8, intermediate_size=256, conv_kernel_size=15, hidden_dropout=0.0,
            output_downsample_rate=4, use_speaker_encoder=False,  # 6.25 tokens/s for the LM; no speaker vectors
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        audio_token_id=tokenizer.convert_tokens_to_ids("<audio>"),
        initializer_range=0.08, loss_reduction="sample", audio_ctc_loss_weight=1.0,
    )  # fmt: skip
    model = OmniForConditionalGeneration(config)
    processor = OmniProcessor.from_config(config, tokenizer)
    # at this size autocast's casts cost more than bf16 matmuls save (see examples/omni_llm.py): float32 everywhere
    args = tour_training_arguments(output_dir, epochs, learning_rate, seed, bf16=False)
    trainer = OmniGenerationTrainer(
        model=model,
        args=args,
        # the images are learnt first: the videos and clips get more of each epoch
        train_dataset=ChatExamples(train, {"image": 0.5, "video": 4.0, "speech": 3.0}, seed=seed),
        eval_dataset={task: ChatExamples({task: source}) for task, source in held_out.items()},
        data_collator=OmniCollator(processor),
        processing_class=processor,
        generation_kwargs={"max_new_tokens": 4},
        group_by_task=True,
    )
    return {
        **train_and_report(trainer),
        "held_out": trainer.eval_dataset,
        "num_train": trainer.train_dataset.task_counts(),
    }


def tour_train_omni(args: argparse.Namespace) -> None:
    import tempfile

    from transformers import pipeline

    from . import OmniForConditionalGeneration, OmniProcessor
    from .training import generate_answers

    _banner("Training a small omni-modal LLM (image, video and speech in; text out)")
    with _one_thread_without_progress_bars(), tempfile.TemporaryDirectory() as scratch:
        output_dir = os.path.join(args.output_dir, "omni_llm") if args.output_dir else scratch
        report = train_omni_llm(output_dir, epochs=args.train_epochs / 2)
        counts = ", ".join(f"{count} {task}" for task, count in report["num_train"].items())
        print(f"trained {report['parameters'] / 1e6:.2f} M parameters from scratch (LM + 3 encoders + projectors) on "
              f"{counts} chats: {report['steps']} steps in {report['train_seconds']:.0f} s")  # fmt: skip
        print("training loss: " + " -> ".join(f"{loss:.2f}" for loss in report["losses"]))
        held_out = report["held_out"]
        scores = ", ".join(
            f"{task} {report[f'eval_{task}_exact_match']:.3f} ({len(held_out[task])})" for task in held_out
        )
        print(f"generated answers on held-out chats (spoken digits of unseen voices), exact match: {scores}")

        # Load it back like any transformers model and ask it about one held-out example of each task.
        model = OmniForConditionalGeneration.from_pretrained(output_dir).eval()
        processor = OmniProcessor.from_pretrained(output_dir)
        examples = [held_out[task][0] for task in held_out]
        answers = generate_answers(model, processor, [example["messages"][:-1] for example in examples], max_new_tokens=4)
        for task, example, answer in zip(held_out, examples, answers, strict=True):
            truth = example["messages"][-1]["content"]
            print(f"  {task}: {OMNI_QUESTIONS[task]!r} -> {answer!r} (true {truth!r}: "
                  f"{'correct' if answer == truth else 'a miss'})")  # fmt: skip
        image_chat = held_out["image"][0]["messages"][:-1]
        reply = pipeline("image-text-to-text", model=output_dir, device="cpu", trust_remote_code=False)(
            text=image_chat, max_new_tokens=4
        )
        print(f"pipeline('image-text-to-text') on the held-out image: "
              f"{reply[0]['generated_text'][-1]['content'].strip()!r}")  # fmt: skip
        if args.output_dir:
            print(f"saved to {output_dir}: pipeline('image-text-to-text', model={output_dir!r})")


TOUR_STEPS: dict[str, Callable[[argparse.Namespace], None]] = {
    "vision": tour_vision,
    "video": tour_video,
    "audio": tour_audio,
    "long-audio": tour_long_audio,
    "tts": tour_tts,
    "train-vision": tour_train_vision,
    "train-audio": tour_train_audio,
    "train-omni": tour_train_omni,
}


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in ("tour", "encode-image", "-h", "--help"):
        argv = ["tour", *argv]  # the tour is the default command: `omni-encoders --size small` runs it
    parser = argparse.ArgumentParser(prog="omni-encoders", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")

    tour = commands.add_parser("tour", help="run the end-to-end tour (default)")
    tour.add_argument("--steps", default=",".join(TOUR_STEPS), help=f"comma-separated subset of {list(TOUR_STEPS)}")
    tour.add_argument("--size", choices=["full", "small"], default="full", help="model size for the encoding steps")
    tour.add_argument(
        "--dtype", choices=DTYPE_CHOICES, default="auto",
        help="dtype of the encoding steps; auto: bf16 where the CPU (AMX, AVX512-BF16) or GPU runs it natively, "
        "else fp32",
    )  # fmt: skip
    tour.add_argument(
        "--train-epochs", type=_positive_float, default=15,
        help="epochs of train-vision; train-audio runs twice as many on its smaller dataset, train-omni half as many",
    )  # fmt: skip
    tour.add_argument("--output-dir", help="keep the models of the train-* steps here (default: a temporary folder)")

    encode = commands.add_parser("encode-image", help="encode one image file and print the token shapes")
    encode.add_argument("path")
    encode.add_argument("--size", choices=["full", "small"], default="full")
    encode.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto")

    args = parser.parse_args(argv)
    choice = resolve_dtype(args.dtype)
    args.torch_dtype, args.dtype = choice.dtype, choice.name

    if args.command == "encode-image":
        import PIL.Image

        try:
            image = PIL.Image.open(args.path)
        except (OSError, PIL.UnidentifiedImageError) as error:
            encode.error(f"cannot read an image from {args.path!r}: {error}")
        print(encode_image(image, size=args.size, dtype=args.torch_dtype))
        return 0

    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    unknown = [step for step in steps if step not in TOUR_STEPS]
    if unknown or not steps:
        tour.error(f"unknown tour steps {unknown or [args.steps]}; choose from {list(TOUR_STEPS)}")
    print(f"CPU: {describe_cpu()}; torch {torch.__version__}; dtype {choice.name} ({choice.reason})")
    start = time.perf_counter()
    for step in steps:
        TOUR_STEPS[step](args)
    _banner(f"Tour finished in {time.perf_counter() - start:.0f} s ({choice.name}, {describe_cpu()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

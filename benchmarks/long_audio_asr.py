# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Long-file speech recognition with a trained CTC model: minutes of held-out speech in one wav file, transcribed by
transformers' chunked ASR pipeline and, for a model with chunked attention, by one forward call on the whole file;
the character error rate of the whole transcript, the time and the real-time factor.

    python benchmarks/long_audio_asr.py --model runs/speech_recognition_ctc --minutes 3
    python benchmarks/long_audio_asr.py --model runs/ctc_chunked --minutes 10 --chunk-length-s 10 30 --json asr.jsonl

The file: utterances of `omni_encoders.data.build_spoken_digit_strings` from `--split` (by default `test`, whose
voices the recipe never trains on), in a seeded random order (`--in-order`: the dataset's, voice after voice), each
followed by `--gap-s` of silence, until `--minutes` of audio; written as 16-bit PCM (`--wav` keeps it) and read back,
so that the models hear what the file holds. Pass the data options the model was trained with (the defaults are
`examples/speech_recognition_ctc.py`'s): the held-out split is only held out for the same voices, seed and fractions.

The reference is the utterances' transcripts joined in file order: the `digits` column without separators ("314" then
"27" gives "31427", which is what a CTC model trained on digits outputs for the file), or with `--text-column text`
the words joined by spaces.

Two ways of transcribing:

- `pipeline("automatic-speech-recognition", model=..., chunk_length_s=..., stride_length_s=...)` for each
  `--chunk-length-s`: the pipeline cuts the file into overlapping chunks, runs the model on each (`--batch-size` chunks
  per call) and joins the logits of the chunks' centres before decoding.
- One forward call on the whole file (`--one-forward`; `auto`: when the model's config has chunked attention, whose
  time and memory grow linearly with the audio), decoded greedily as the pipeline decodes.
- Streaming (`--stream`; `auto`: when the model's config can stream, see `OmniAudioModel.encode_stream`): the file's
  samples fed to `OmniAudioForCTC.stream_logits` in pieces of `--piece-ms`, as a live stream would give them (so
  without the feature extractor's normalisation over the whole clip), the logits decoded greedily as they come.

Each is timed after a warm-up call on a few seconds; the real-time factor (RTF) is the time over the audio duration.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import wave

import numpy as np
import torch
from transformers import pipeline

from harness import DTYPES, describe, load_average, rss_peak_mb, setup, write_json
from omni_encoders import metrics
from omni_encoders.data import build_spoken_digit_strings


SAMPLING_RATE = 16000


def build_long_file(args: argparse.Namespace) -> tuple[np.ndarray, str, int]:
    """The long waveform (float32, before writing), its reference transcript and the number of utterances in it."""
    dataset = build_spoken_digit_strings(
        num_voices=args.num_voices,
        utterances_per_voice=args.utterances_per_voice,
        test_voices=args.test_voices,
        seed=args.dataset_seed,
        cache_dir=args.dataset_cache_dir,
    )
    if args.split not in dataset:
        raise ValueError(f"--split {args.split}: the dataset has the splits {sorted(dataset)}.")
    split = dataset[args.split]
    order = np.arange(len(split)) if args.in_order else np.random.default_rng(args.seed).permutation(len(split))
    target = int(args.minutes * 60 * SAMPLING_RATE)
    gap = np.zeros(int(args.gap_s * SAMPLING_RATE), dtype=np.float32)
    pieces, transcripts, total = [], [], 0
    for index in order:
        row = split[int(index)]
        pieces += [np.asarray(row["audio"]["array"], dtype=np.float32), gap]
        transcripts.append(row[args.text_column])
        total += len(pieces[-2]) + len(gap)
        if total >= target:
            break
    else:
        available = total / SAMPLING_RATE / 60
        raise ValueError(
            f"--minutes {args.minutes:g}: the {args.split} split holds {available:.1f} minutes of speech (with the "
            "gaps); ask for less, or build a larger split (--utterances-per-voice)."
        )
    separator = "" if args.text_column == "digits" else " "
    return np.concatenate(pieces[:-1]), separator.join(transcripts), len(transcripts)


def write_wav(path: str, waveform: np.ndarray) -> None:
    """Mono 16-bit PCM at 16 kHz (values beyond [-1, 1] are clipped)."""
    pcm = np.round(np.clip(waveform, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(path, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLING_RATE)
        handle.writeframes(pcm.tobytes())


def read_wav(path: str) -> np.ndarray:
    with wave.open(path, "rb") as handle:
        if (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) != (1, 2, SAMPLING_RATE):
            raise ValueError(f"{path}: expected mono 16-bit PCM at {SAMPLING_RATE} Hz.")
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768


def timed(fn):
    """`fn()`'s result, wall time and process CPU time (all threads), in seconds."""
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - cpu_start


def transcribe_in_one_forward(asr, audio: np.ndarray) -> str:
    """The whole file through the model in one call, decoded as the pipeline decodes CTC (greedy, repeats merged,
    blanks dropped)."""
    model = asr.model
    features = asr.feature_extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    features = {key: value.to(model.device) for key, value in features.items()}
    features["input_values"] = features["input_values"].to(model.dtype)
    with torch.inference_mode():
        ids = model(**features).logits.argmax(-1)
    return asr.tokenizer.batch_decode(ids)[0]


def transcribe_stream(asr, audio: np.ndarray, piece_samples: int) -> str:
    """The file as a stream of `piece_samples`-sample pieces through `stream_logits`, decoded greedily as the
    logits come."""
    model = asr.model
    pieces = torch.from_numpy(audio).to(model.dtype).split(piece_samples)
    ids = [logits.argmax(-1) for logits in model.stream_logits(pieces)]
    return asr.tokenizer.batch_decode(torch.cat(ids, dim=1))[0]


def report(name: str, transcript: str, reference: str, seconds: float, wall: float, cpu: float, **extra) -> dict:
    cer = metrics.load("cer").compute(predictions=[transcript], references=[reference])["cer"]
    row = {
        "table": "long-file ASR", "name": name, "seconds": round(seconds, 2), "cer": round(cer, 5),
        "reference_chars": len(reference), "transcript_chars": len(transcript), "latency_ms": round(wall * 1000, 1),
        "cpu_ms": round(cpu * 1000, 1), "rtf": round(wall / seconds, 5), "rtf_cpu": round(cpu / seconds, 5), **extra,
    }  # fmt: skip
    print(
        f"{name}: CER {cer:.4f} ({len(transcript)} characters for {len(reference)}) in {wall:.2f} s wall, "
        f"{cpu:.2f} s CPU: RTF {row['rtf']:.4f} (CPU {row['rtf_cpu']:.4f})"
        + (f", RSS peak {extra['rss_peak_mb']:.0f} MiB" if "rss_peak_mb" in extra else ""),
        flush=True,
    )
    print(f"    transcript begins {transcript[:72]!r}\n    reference  begins {reference[:72]!r}")
    return row


def run(args: argparse.Namespace) -> list[dict]:
    setup(args)
    waveform, reference, utterances = build_long_file(args)
    with tempfile.TemporaryDirectory() as directory:
        path = args.wav or os.path.join(directory, "long.wav")
        write_wav(path, waveform)
        audio = read_wav(path)
    seconds = len(audio) / SAMPLING_RATE

    asr = pipeline("automatic-speech-recognition", model=args.model, device=args.device, dtype=DTYPES[args.dtype])
    config = asr.model.config
    args.attn = config._attn_implementation
    chunked = config.attention_chunk_size is not None
    attention = "full attention" if not chunked else (
        f"chunked attention: {config.attention_chunk_size}-frame chunks, {config.attention_left_chunks} left, "
        f"{config.attention_right_context} ahead"
    )  # fmt: skip
    frames_per_second = SAMPLING_RATE / config.inputs_to_logits_ratio
    print(
        f"# Long-file ASR: {args.model} ({type(asr.model).__name__}, {frames_per_second:g} frames/s, {attention}) on "
        f"{seconds / 60:.2f} min of the {args.split} split ({utterances} utterances, {args.gap_s:g} s gaps"
        f"{', kept in ' + path if args.wav else ''}) — {describe(args)}"
    )

    warmup = {"raw": audio[: 5 * SAMPLING_RATE].copy(), "sampling_rate": SAMPLING_RATE}
    asr(warmup, chunk_length_s=args.chunk_length_s[0], batch_size=args.batch_size)
    load_before = load_average()
    rows = []
    for chunk_length in args.chunk_length_s:
        stride = args.stride_length_s if args.stride_length_s is not None else chunk_length / 6
        inputs = {"raw": audio.copy(), "sampling_rate": SAMPLING_RATE}  # the pipeline consumes the dict
        output, wall, cpu = timed(lambda inputs=inputs, chunk_length=chunk_length, stride=stride: asr(
            inputs, chunk_length_s=chunk_length, stride_length_s=stride, batch_size=args.batch_size
        ))  # fmt: skip
        name = f"pipeline, {chunk_length:g} s chunks (stride {stride:.2f} s), batch {args.batch_size}"
        rows.append(report(name, output["text"], reference, seconds, wall, cpu, chunk_length_s=chunk_length,
                           stride_length_s=stride))  # fmt: skip

    if args.one_forward == "on" or (args.one_forward == "auto" and chunked):
        transcribe_in_one_forward(asr, audio[: 5 * SAMPLING_RATE])  # warm-up
        results = []

        def one_forward():
            results.append(timed(lambda: transcribe_in_one_forward(asr, audio)))

        rss_peak = float("nan")
        if args.device == "cpu":
            rss_peak = rss_peak_mb(one_forward)
        else:
            one_forward()
        transcript, wall, cpu = results[0]
        rows.append(report("one forward call on the whole file", transcript, reference, seconds, wall, cpu,
                           rss_peak_mb=rss_peak))  # fmt: skip
    elif args.one_forward == "auto":
        print(
            "(no one-forward transcription: the model has full attention, quadratic in the audio; --one-forward on "
            "runs it anyway)"
        )

    streamable = not asr.model.model.streaming_requirements_missing()
    if args.stream == "on" or (args.stream == "auto" and streamable):
        piece = int(args.piece_ms * SAMPLING_RATE / 1000)
        if asr.feature_extractor.do_normalize:
            print(
                "NOTE: the model's feature extractor normalises each clip by its own statistics, which a stream cannot "
                "know: the stream hears the raw samples, unlike the other paths (train with --normalize_audio false)."
            )
        transcribe_stream(asr, audio[: 5 * SAMPLING_RATE], piece)  # warm-up
        transcript, wall, cpu = timed(lambda: transcribe_stream(asr, audio, piece))
        rows.append(report(f"stream, {args.piece_ms:g} ms pieces", transcript, reference, seconds, wall, cpu,
                           piece_ms=args.piece_ms))  # fmt: skip
    for row in rows:
        row.update(model=args.model, minutes=round(seconds / 60, 3), utterances=utterances, split=args.split,
                   attention=attention, load=f"{load_before} -> {load_average()}")  # fmt: skip
    write_json(rows, args)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a folder or Hub id with an OmniAudioForCTC and its processor")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the long file")
    parser.add_argument("--gap-s", type=float, default=0.3, help="silence after each utterance, in seconds")
    parser.add_argument("--split", default="test", help="test (unseen voices) or test_seen_voices")
    parser.add_argument("--text-column", choices=["digits", "text"], default="digits", help="what the model outputs")
    parser.add_argument("--in-order", action="store_true", help="the split's order (voice after voice), no shuffle")
    parser.add_argument("--seed", type=int, default=0, help="seed of the utterance order")
    parser.add_argument("--wav", default=None, help="keep the long file at this path (default: a temporary file)")
    parser.add_argument(
        "--chunk-length-s", type=float, nargs="+", default=[10.0],
        help="the pipeline's chunk lengths to measure, in seconds",
    )  # fmt: skip
    parser.add_argument(
        "--stride-length-s", type=float, default=None,
        help="context on each side of a chunk, in seconds (default: the pipeline's, a sixth of the chunk)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=1, help="chunks per model call in the pipeline")
    parser.add_argument(
        "--one-forward", choices=["auto", "on", "off"], default="auto",
        help="also transcribe the file in one forward call (auto: when the model has chunked attention)",
    )  # fmt: skip
    parser.add_argument(
        "--stream", choices=["auto", "on", "off"], default="auto",
        help="also transcribe the file as a stream (auto: when the model's config can stream)",
    )  # fmt: skip
    parser.add_argument("--piece-ms", type=float, default=100.0, help="the stream's piece length, in milliseconds")
    data = parser.add_argument_group("data (pass what the model was trained on; defaults: the CTC recipe's)")
    data.add_argument("--utterances-per-voice", type=int, default=40)
    data.add_argument("--num-voices", type=int, default=None)
    data.add_argument("--test-voices", type=float, default=0.2)
    data.add_argument("--dataset-seed", type=int, default=0)
    data.add_argument("--dataset-cache-dir", default=None)
    parser.add_argument(
        "--dtype", choices=["auto", *DTYPES], default="auto",
        help="auto: bf16 where the device runs it natively (AMX, AVX512-BF16, GPU), else fp32",
    )  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, all cores)")
    parser.add_argument("--json", default=None, help="append the result rows to this JSON-lines file")
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    main()

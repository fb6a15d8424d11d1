# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Audio encoder vs. `Wav2Vec2ConformerModel` at matched size and audio length; long audio and streaming.

    python benchmarks/bench_audio.py                        # full size (1024 wide, 6 blocks), 10 s of audio, bf16
    python benchmarks/bench_audio.py --seconds 30
    python benchmarks/bench_audio.py --size small --scaling # + audio 1 s -> 2 min (see the README for 10 min)
    python benchmarks/bench_audio.py --samples-per-frame 320   # our tokenizer at wav2vec2's frame rate
    python benchmarks/bench_audio.py --seconds 600 --one-call --peers native  # 10 min: one call each (hours)
    python benchmarks/bench_audio.py --chunk-size 250 --left-chunks 2   # chunked attention (1 s chunks): linear time
    python benchmarks/bench_audio.py --part long --threads 2     # ours alone, chunked, 1 min and 10 min of audio
    python benchmarks/bench_audio.py --part stream --threads 2   # encode_stream: 60 s in 100 ms and 1 s pieces

`--part compare` (the default) measures our model and two peers, both with our width, depth, heads, FFN width and
depthwise kernel, rotary positions and `--attn`:

- `Wav2Vec2ConformerModel (native)`: wav2vec2's own feature encoder (7 convs of 512 channels, 320x downsampling,
  50 frames/s). For the same audio it runs its Conformer on 5x fewer frames than ours (250 frames/s).
- `Wav2Vec2ConformerModel (64x)`: its feature encoder configured like our tokenizer (channels 32..512, hidden;
  kernels 7,5,5,3,3,3; six stride-2 convs = 64x, 250 frames/s): the same token count as ours.

`--samples-per-frame 320` configures our tokenizer at wav2vec2's native frame rate instead (strides 5,4,2,2,2,2,
kernels 10,8,3,3,3,3; the spec's default is 64x): the same audio then gives ours and the native peer the same frame
count, and the matched-tokenizer peer is left out (it would be the native frame rate again).

`--part long` measures our model alone with chunked attention (`--chunk-size`, 250 frames = 1 s by default, and
`--left-chunks`) offline, on `--seconds` (default 60) and then each `--sweep` length (default 600) of audio, after a
warm-up on a few seconds: `--repeat` rounds (default 3) of one call per length, in order, and a last call on the
first length; the first round's calls also measure their peak memory (as `--one-call`). It prints the median times
and time(longest) / time(shortest), wall and CPU time, as the median over the rounds of the longest call's time over
the mean of the two shortest-length calls that bracket it (a shared host's speed drifts by tens of percent within
minutes), against the linear ratio (10 for 1 min -> 10 min), and the CPU time of the longest call: the long-audio
targets of issue 18 (10 minutes of audio in under 5 minutes of CPU time on 2 cores, time(10 min) / time(1 min) <=
11).

`--part stream` feeds `--seconds` (default 60) of audio to `OmniAudioModel.encode_stream` in pieces of each
`--piece-ms` (default: 100 ms and one attention chunk), as fast as the model takes them, with the streaming
options (`--chunk-size` 250 by default, `--left-chunks`, `conv_module_causal=True`,
`tokenizer_norm_statistics="causal"`). Per piece size it reports when the first frames come out (how much audio the
stream had consumed, within one chunk plus one piece, and the time from the start of the stream), the time from the
hand-over of the piece that completes a chunk to the chunk's frames (median, max), what a live stream would wait for
its first frames (the audio consumed plus that step), the real-time factor (encode time / audio duration, wall and
CPU) and the most memory the stream state held.

`--hidden-size` and `--layers` shrink the model of `--size` for a quick check of a command (a few seconds on a
laptop); their numbers say nothing about the full model.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from transformers import Wav2Vec2ConformerConfig, Wav2Vec2ConformerModel

from harness import (
    DTYPES, Case, add_common_arguments, compare, count_flops, describe, load_average, measure_one_call, rss_peak_mb,
    setup, sizes, write_json,
)  # fmt: skip
from omni_encoders import OmniAudioConfig, OmniAudioModel
from omni_encoders.modeling_omni_audio import OmniAudioStreamState


SAMPLING_RATE = 16000


# The tokenizer layouts of `--samples-per-frame`: (kernel sizes, strides), six convolutions each.
TOKENIZERS = {64: ((7, 5, 5, 3, 3, 3), (2, 2, 2, 2, 2, 2)), 320: ((10, 8, 3, 3, 3, 3), (5, 4, 2, 2, 2, 2))}

SMALL = {
    "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "kv_lora_rank": 64,
    "qk_rope_head_dim": 32, "intermediate_size": 1024,
}  # fmt: skip

# The chunk size of `--part long` and `--part stream` when `--chunk-size` is not given: 1 s at 250 frames/s.
DEFAULT_CHUNK_SIZE = 250
# `--seconds` when not given, and the default `--sweep` of `--part long` (1 min -> 10 min).
DEFAULT_SECONDS = {"compare": 10.0, "long": 60.0, "stream": 60.0}
# `--part compare` counts the FLOPs of each model (one more call) at lengths up to this (a peer's full attention at
# 10 min would take hours).
FLOP_COUNT_MAX_SECONDS = 120.0
DEFAULT_LONG_SWEEP = [600.0]


def width_options(hidden_size: int) -> dict:
    """The attention and feed-forward sizes that go with `--hidden-size`: heads of 128 as in the full model (at least
    one), 2 key/value heads where they divide the heads, a rotary part of half a head (at most 64), a K/V latent of a
    quarter of the width (at most 256) and a feed-forward of 4x the width."""
    heads = max(1, hidden_size // 128)
    head_dim = hidden_size // heads
    return {
        "hidden_size": hidden_size, "num_attention_heads": heads, "num_key_value_heads": math.gcd(heads, 2),
        "qk_rope_head_dim": min(64, head_dim // 4 * 2), "kv_lora_rank": min(256, max(8, hidden_size // 4)),
        "intermediate_size": 4 * hidden_size,
    }  # fmt: skip


def our_config(args: argparse.Namespace, **options) -> OmniAudioConfig:
    """Our model's config: `--size`, resized by `--hidden-size`/`--layers`, with `--samples-per-frame`'s tokenizer,
    `--chunk-size`'s chunked attention and `options` (e.g. the streaming ones)."""
    kernel_sizes, strides = TOKENIZERS[args.samples_per_frame]
    kwargs = {"tokenizer_kernel_sizes": kernel_sizes, "tokenizer_strides": strides, "attn_implementation": args.attn}
    if args.size == "small":
        kwargs.update(SMALL)
    if args.hidden_size is not None:
        kwargs.update(width_options(args.hidden_size))
    if args.layers is not None:
        kwargs["num_hidden_layers"] = args.layers
    if args.chunk_size is not None:
        kwargs.update(
            attention_chunk_size=args.chunk_size, attention_left_chunks=args.left_chunks,
            attention_right_context=args.right_context,
        )
    return OmniAudioConfig(**kwargs, **options)


def attention_label(config: OmniAudioConfig) -> str:
    if config.attention_chunk_size is None:
        return "full attention"
    seconds = config.attention_chunk_size * config.tokenizer_samples_per_frame / SAMPLING_RATE
    return (
        f"chunked attention: {config.attention_chunk_size}-frame chunks ({seconds:g} s), "
        f"{config.attention_left_chunks} left, {config.attention_right_context} ahead"
    )


def size_label(args: argparse.Namespace, config: OmniAudioConfig) -> str:
    resized = " resized" if args.hidden_size is not None or args.layers is not None else ""
    return f"{args.size} size{resized}: {config.hidden_size} wide, {config.num_hidden_layers} blocks"


def build_ours(args: argparse.Namespace, config: OmniAudioConfig) -> OmniAudioModel:
    return OmniAudioModel._from_config(config, dtype=DTYPES[args.dtype]).to(args.device).eval()


# ------------------------------------------------------------------------------------------- compare with the peers


def peer_configs(config: OmniAudioConfig) -> dict[str, Wav2Vec2ConformerConfig]:
    common = {
        "hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
        "hidden_act": "swish", "conv_depthwise_kernel_size": config.conv_kernel_size,
        "position_embeddings_type": "rotary", "feat_extract_norm": "layer", "conv_bias": True,
    }
    matched_encoder = {
        "conv_dim": list(config.tokenizer_channels), "conv_kernel": list(config.tokenizer_kernel_sizes),
        "conv_stride": list(config.tokenizer_strides),
    }
    peers = {"native": Wav2Vec2ConformerConfig(**common)}
    if config.inputs_to_logits_ratio != peers["native"].inputs_to_logits_ratio:
        peers[f"{config.inputs_to_logits_ratio}x"] = Wav2Vec2ConformerConfig(**common, **matched_encoder)
    return peers


def build(args: argparse.Namespace):
    dtype = DTYPES[args.dtype]
    config = our_config(args)
    ours = build_ours(args, config)
    configs = peer_configs(config)
    unknown = set(args.peers or ()) - configs.keys()
    if unknown:
        raise ValueError(f"--peers {' '.join(sorted(unknown))}: with this tokenizer the peers are {sorted(configs)}")
    peers = {}
    for name, peer_config in configs.items():
        if args.peers and name not in args.peers:
            continue
        peer_config._attn_implementation = args.attn
        peers[name] = Wav2Vec2ConformerModel._from_config(peer_config, dtype=dtype).to(args.device).eval()
    return config, ours, peers


def frames_of(model: Wav2Vec2ConformerModel, samples: int) -> int:
    return int(model._get_feat_extract_output_lengths(torch.tensor(samples)))


def run(args: argparse.Namespace) -> list[dict]:
    """`--part compare`: ours and the peers, interleaved, at `--seconds` (and the `--scaling` sweep)."""
    config, ours, peers = build(args)
    durations = sizes(args, args.seconds, [1, 10, 30, 60, 120])
    print(
        f"# Audio: OmniAudioModel ({config.inputs_to_logits_ratio}x tokenizer, {attention_label(config)}) vs "
        f"Wav2Vec2ConformerModel ({size_label(args, config)}, full attention) — {describe(args)}"
    )
    rows = []
    for seconds in durations:
        samples = int(seconds * SAMPLING_RATE)
        waveforms = torch.randn(args.batch_size, samples, dtype=DTYPES[args.dtype], device=args.device)
        audio_seconds = args.batch_size * seconds
        frames = samples // config.inputs_to_logits_ratio
        cases = [Case("OmniAudioModel", lambda waveforms=waveforms: ours(waveforms), audio_seconds, f"{frames} frames")]
        for name, peer in peers.items():
            cases.append(Case(
                f"Wav2Vec2ConformerModel ({name})", lambda peer=peer, waveforms=waveforms: peer(waveforms),
                audio_seconds, f"{frames_of(peer, samples)} frames",
            ))
        table = compare(f"{seconds:g} s of 16 kHz audio, batch {args.batch_size}", cases, args, unit="audio s/s")
        if seconds <= FLOP_COUNT_MAX_SECONDS:
            print_flops(table, cases, [ours, *peers.values()])
        rows += table
    return rows


def print_flops(table: list[dict], cases: list[Case], models: list[torch.nn.Module]) -> None:
    """Count the FLOPs of one call of each case (one more call each), add them to its row (`gflop`, `tflops`
    achieved, `flop_ratio` ours / peer) and print them: how much of a time ratio is the work itself and how much the
    speed at which it runs."""
    flops = [count_flops(case.fn, model) for case, model in zip(cases, models)]
    parts = []
    for row, case, count in zip(table, cases, flops):
        row["gflop"] = round(count / 1e9, 2)
        row["tflops"] = round(count / (row["latency_ms"] / 1000) / 1e12, 3)
        if count is not flops[0]:
            row["flop_ratio"] = round(flops[0] / count, 3)
        parts.append(f"{case.name}: {row['gflop']:.1f} GFLOP at {row['tflops']:.2f} TFLOP/s")
    ratios = ", ".join(f"{row['flop_ratio']:.2f}" for row in table[1:])
    print(f"FLOPs per call: {'; '.join(parts)} (FLOPs ours / peer: {ratios})")


# ----------------------------------------------------------------------------------------------------- long audio


def run_long(args: argparse.Namespace) -> list[dict]:
    """`--part long`: ours alone, chunked, one timed call per audio length; the time ratio longest / shortest."""
    config = our_config(args)
    ours = build_ours(args, config)
    durations = list(dict.fromkeys([args.seconds, *(args.sweep or DEFAULT_LONG_SWEEP)]))
    title = f"long audio, {attention_label(config)}, batch {args.batch_size}"
    print(f"# Long audio: OmniAudioModel ({size_label(args, config)}, {title}) — {describe(args)}")
    if config.attention_chunk_size is None:
        print("WARNING: full attention is quadratic in the audio: at 10 min a call takes hours.")
    dtype = DTYPES[args.dtype]
    if args.warmup > 0:  # kernel selection and first-touch costs, on a few chunks of audio
        chunk = config.attention_chunk_size or 250
        warmup = torch.randn(1, 3 * chunk * config.tokenizer_samples_per_frame, dtype=dtype, device=args.device)
        with torch.inference_mode():
            for _ in range(args.warmup):
                ours(warmup)

    load_before = load_average()
    inputs = {
        seconds: torch.randn(args.batch_size, int(seconds * SAMPLING_RATE), dtype=dtype, device=args.device)
        for seconds in durations
    }
    # Rounds: each times every length once, in order, and one more call on the first length closes the last round. The
    # first round's calls also measure the peak memory. A shared host's speed drifts by tens of percent within
    # minutes, so a longer length's call is compared with the mean of the first length's calls just before and just
    # after it (the calls that bracket it), and the median of the rounds' ratios counts.
    measurements = {}
    calls = [(round_index, seconds) for round_index in range(args.repeat) for seconds in durations]
    for round_index, seconds in [*calls, (args.repeat, durations[0])]:
        case = Case("OmniAudioModel", lambda waveforms=inputs[seconds]: ours(waveforms), 1.0)
        if round_index == 0:
            measurements[seconds] = measure_one_call(case, args)
            continue
        with torch.inference_mode():
            start, cpu_start = time.perf_counter(), time.process_time()
            case.fn()
            measurements[seconds].times_ms.append(round((time.perf_counter() - start) * 1000, 2))
            measurements[seconds].cpu_times_ms.append(round((time.process_time() - cpu_start) * 1000, 2))
        if seconds == durations[-1]:
            print(f"(round {round_index + 1} of {args.repeat} done)", flush=True)

    rows = []
    print(f"\n## {title}")
    print("| audio | frames | wall (s) | CPU time (s) | RTF (wall, CPU) | peak memory (MiB) | RSS peak (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    first = measurements[durations[0]]
    for seconds, measurement in measurements.items():
        frames = inputs[seconds].shape[1] // config.inputs_to_logits_ratio
        audio_seconds = args.batch_size * seconds
        wall_ms, cpu_ms = statistics.median(measurement.times_ms), statistics.median(measurement.cpu_times_ms)
        row = {
            "table": title, "name": "OmniAudioModel", "seconds": seconds, "frames": frames,
            "chunk_size": config.attention_chunk_size, "left_chunks": config.attention_left_chunks,
            "right_context": config.attention_right_context, "latency_ms": wall_ms, "cpu_ms": cpu_ms,
            "times_ms": measurement.times_ms, "cpu_times_ms": measurement.cpu_times_ms,
            "rtf": round(wall_ms / 1000 / audio_seconds, 4), "rtf_cpu": round(cpu_ms / 1000 / audio_seconds, 4),
            "peak_mb": measurement.peak_mb, "rss_peak_mb": measurement.rss_peak_mb, "calls": len(measurement.times_ms),
        }  # fmt: skip
        if rows:
            row["time_ratios_to_first"] = bracketed_ratios(measurement.times_ms, first.times_ms)
            row["time_ratio_to_first"] = statistics.median(row["time_ratios_to_first"])
            row["cpu_time_ratio_to_first"] = statistics.median(
                bracketed_ratios(measurement.cpu_times_ms, first.cpu_times_ms)
            )
        rows.append(row)
        print(
            f"| {seconds:g} s | {frames} | {wall_ms / 1000:.1f} | {cpu_ms / 1000:.1f} | {row['rtf']:.3f}, "
            f"{row['rtf_cpu']:.3f} | {measurement.peak_mb:.0f} | {measurement.rss_peak_mb:.0f} |"
        )
    print(f"(load before/after: {load_before} / {load_average()}; median of {args.repeat} round(s) of one call per "
          f"length after {args.warmup} warm-up call(s) on {3 * (config.attention_chunk_size or 250)} frames; per-call "
          "times in the JSON output)")  # fmt: skip
    for row in rows:
        row["load"] = f"{load_before} -> {load_average()}"
    if len(rows) > 1:
        first_row, last = rows[0], rows[-1]
        linear = last["seconds"] / first_row["seconds"]
        pairs = ", ".join(f"{ratio:.2f}" for ratio in last["time_ratios_to_first"])
        print(
            f"time({last['seconds']:g} s) / time({first_row['seconds']:g} s), median of the rounds' ratios to the "
            f"bracketing calls ({pairs}): "
            f"wall {last['time_ratio_to_first']:.2f}, CPU {last['cpu_time_ratio_to_first']:.2f} (linear: "
            f"{linear:.2f}; issue 18 target for 1 min -> 10 min: <= 11)"
        )
    last = rows[-1]
    cpu_s, wall_s = last["cpu_ms"] / 1000, last["latency_ms"] / 1000
    print(
        f"{last['seconds']:g} s of audio: CPU time {cpu_s:.1f} s, wall {wall_s:.1f} s on {torch.get_num_threads()} "
        f"thread(s), {args.dtype} (issue 18 target: 10 min of audio in under 300 s of CPU time on 2 cores)"
    )
    write_json(rows, args)
    return rows


def bracketed_ratios(times: list[float], reference_times: list[float]) -> list[float]:
    """Round `i`'s `times[i]` over the mean of `reference_times[i]` and `reference_times[i + 1]`, the reference calls
    made just before and just after it (`--part long`'s rounds)."""
    return [
        round(value / ((before + after) / 2), 3)
        for value, before, after in zip(times, reference_times, reference_times[1:])
    ]


# ------------------------------------------------------------------------------------------------------ streaming


def stream_once(model: OmniAudioModel, audio: torch.Tensor, piece_samples: int) -> dict:
    """Feed `audio [samples]` to `model.encode_stream` in pieces of `piece_samples`, as fast as it takes them, and
    time what comes out.

    Returns the wall and CPU time of the whole stream, the output frames, when the first frames came out (seconds of
    audio consumed, seconds from the start of the stream), the step latency of each attention chunk (from the hand-over
    of the piece that completed it to its frames; the frames the end of the stream flushes are left out) and the most
    bytes the stream state held.
    """
    state = OmniAudioStreamState()
    fed = {"samples": 0, "handed_over_at": 0.0, "ended": False}

    def pieces():
        for piece in audio.split(piece_samples):
            fed["samples"] += piece.shape[0]
            fed["handed_over_at"] = time.perf_counter()
            yield piece
        fed["ended"] = True

    first = None
    steps, frames, state_bytes = [], 0, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for output in model.encode_stream(pieces(), state=state):
        now = time.perf_counter()
        if first is None:
            first = {"audio_s": fed["samples"] / SAMPLING_RATE, "wall_s": now - start, "frames": output.shape[1]}
            first["step_s"] = now - fed["handed_over_at"]
        if not fed["ended"]:
            steps.append(now - fed["handed_over_at"])
        frames += output.shape[1]
        state_bytes = max(state_bytes, state.memory_bytes())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "wall_s": wall, "cpu_s": cpu, "frames": frames, "first": first, "steps_s": steps, "state_bytes": state_bytes,
    }  # fmt: skip


def run_stream(args: argparse.Namespace) -> list[dict]:
    """`--part stream`: `encode_stream` on `--seconds` of audio, for each piece size of `--piece-ms`."""
    if args.right_context:
        raise ValueError("--part stream: streaming has no look-ahead; leave --right-context at 0.")
    if args.batch_size != 1:
        print(f"NOTE: a stream is one clip: --batch-size {args.batch_size} is not used by --part stream.")
    config = our_config(args, conv_module_causal=True, tokenizer_norm_statistics="causal")
    ours = build_ours(args, config)
    samples_per_frame = config.tokenizer_samples_per_frame
    chunk_ms = config.attention_chunk_size * samples_per_frame * 1000 / SAMPLING_RATE
    piece_ms = list(dict.fromkeys(args.piece_ms or [100.0, chunk_ms]))
    title = f"streaming, {attention_label(config)}"
    print(
        f"# Streaming: OmniAudioModel.encode_stream ({size_label(args, config)}, {title}, causal convolution module, "
        f"causal tokenizer norms) — {describe(args)}"
    )
    dtype = DTYPES[args.dtype]
    if args.warmup > 0:  # kernel selection and first-touch costs: a few chunks, in the first piece size
        warmup = torch.randn(3 * config.attention_chunk_size * samples_per_frame, dtype=dtype)
        with torch.inference_mode():
            for _ in range(args.warmup):
                for _ in ours.encode_stream(warmup.split(int(piece_ms[0] * SAMPLING_RATE / 1000))):
                    pass

    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(int(args.seconds * SAMPLING_RATE), generator=generator).to(dtype)
    seconds = audio.shape[0] / SAMPLING_RATE
    expected_frames = math.ceil(audio.shape[0] // samples_per_frame / config.output_downsample_rate)
    load_before = load_average()
    rows = []
    for milliseconds in piece_ms:
        piece_samples = max(1, round(milliseconds * SAMPLING_RATE / 1000))
        measured = []

        def timed_stream(measured=measured, piece_samples=piece_samples):
            with torch.inference_mode():
                measured.append(stream_once(ours, audio, piece_samples))

        rss_peak = float("nan")
        if args.device == "cpu":
            rss_peak = rss_peak_mb(timed_stream)
        else:
            timed_stream()
        result = measured[0]
        if result["frames"] != expected_frames:
            raise RuntimeError(f"The stream gave {result['frames']} frames, the offline forward {expected_frames}.")
        first, steps = result["first"], result["steps_s"]
        row = {
            "table": title, "name": "OmniAudioModel.encode_stream", "seconds": seconds, "piece_ms": milliseconds,
            "chunk_size": config.attention_chunk_size, "chunk_ms": chunk_ms,
            "left_chunks": config.attention_left_chunks, "frames": result["frames"],
            "first_frames_audio_s": round(first["audio_s"], 4), "first_frames_wall_s": round(first["wall_s"], 4),
            "first_frames_step_ms": round(first["step_s"] * 1000, 2),
            "first_frames_live_s": round(first["audio_s"] + first["step_s"], 4),
            "chunk_step_ms_median": round(statistics.median(steps) * 1000, 2) if steps else float("nan"),
            "chunk_step_ms_max": round(max(steps) * 1000, 2) if steps else float("nan"),
            "latency_ms": round(result["wall_s"] * 1000, 2), "cpu_ms": round(result["cpu_s"] * 1000, 2),
            "rtf": round(result["wall_s"] / seconds, 4), "rtf_cpu": round(result["cpu_s"] / seconds, 4),
            "state_mb_max": round(result["state_bytes"] / 2**20, 3), "rss_peak_mb": rss_peak,
        }  # fmt: skip
        rows.append(row)
        print(
            f"{milliseconds:g} ms pieces: first frames ({first['frames']}) after {first['audio_s']:.3f} s of audio "
            f"(chunk {chunk_ms / 1000:g} s), {first['wall_s']:.3f} s from the start of the stream, "
            f"{row['first_frames_step_ms']:.0f} ms after the piece that completed the chunk (live: about "
            f"{row['first_frames_live_s']:.3f} s); each chunk {row['chunk_step_ms_median']:.0f} ms median / "
            f"{row['chunk_step_ms_max']:.0f} ms max after its last piece; {seconds:g} s streamed in "
            f"{result['wall_s']:.2f} s wall (RTF {row['rtf']:.3f}), {result['cpu_s']:.2f} s CPU "
            f"(RTF {row['rtf_cpu']:.3f}); state at most {row['state_mb_max']:.2f} MiB, RSS peak {rss_peak:.0f} MiB",
            flush=True,
        )
    print(
        f"({torch.get_num_threads()} thread(s), {args.dtype}; load before/after: {load_before} / {load_average()}; "
        "live = audio consumed + the step that encodes the first chunk, for a stream paced in real time whose "
        "earlier pieces were encoded before the next arrived, i.e. RTF < 1)"
    )
    for row in rows:
        row["load"] = f"{load_before} -> {load_average()}"
    write_json(rows, args)
    return rows


PARTS = {"compare": run, "long": run_long, "stream": run_stream}


def main(argv=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument(
        "--part", choices=list(PARTS), default="compare",
        help="compare: ours vs the peers; long: ours alone, chunked, 1 min -> 10 min; stream: encode_stream",
    )  # fmt: skip
    parser.add_argument(
        "--seconds", type=float, default=None,
        help="audio length (default: 10 for compare, 60 for long and stream)",
    )  # fmt: skip
    parser.add_argument(
        "--samples-per-frame", type=int, choices=sorted(TOKENIZERS), default=64,
        help="our tokenizer's downsampling: 64 (the spec's, 250 frames/s) or 320 (wav2vec2's, 50 frames/s)",
    )
    parser.add_argument(
        "--peers", nargs="+", choices=["native", "64x"], default=None,
        help="the peers to run (default: both; the 64x one only exists with --samples-per-frame 64)",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=None,
        help=f"our model with chunked attention over chunks of this many frames (default: full attention for "
        f"compare, {DEFAULT_CHUNK_SIZE} = 1 s for long and stream)",
    )
    parser.add_argument("--left-chunks", type=int, default=2, help="with --chunk-size: previous chunks visible")
    parser.add_argument("--right-context", type=int, default=0, help="with --chunk-size: look-ahead frames")
    parser.add_argument(
        "--piece-ms", type=float, nargs="+", default=None,
        help="--part stream: the piece sizes to stream in, in milliseconds (default: 100 and one chunk)",
    )
    parser.add_argument("--hidden-size", type=int, default=None, help="resize --size to this width (quick checks)")
    parser.add_argument("--layers", type=int, default=None, help="resize --size to this many blocks (quick checks)")
    parser.set_defaults(repeat=3)
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = DEFAULT_SECONDS[args.part]
    if args.part != "compare" and args.chunk_size is None:
        args.chunk_size = DEFAULT_CHUNK_SIZE
    setup(args)
    return PARTS[args.part](args)


if __name__ == "__main__":
    main()

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Speech: spoken digits and digit strings synthesised offline by espeak-ng and flite over many voices.

Every voice is one speaker: `"espeak-ng:<accent>+<variant>"` (an English accent with one of espeak-ng's voice
variants) or `"flite:<name>"` (one of flite's built-in voices). Each utterance gets its own speaking rate and pitch.
Audio is 16 kHz mono float32, resampled with soxr.
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

from ._cache import cached_build


SAMPLING_RATE = 16_000
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ENGINES = ("espeak-ng", "flite")
# English accents of espeak-ng; each variant speaks with one of them.
ESPEAK_ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)  # fmt: skip
# flite's built-in voices, less `kal` (the 8 kHz copy of kal16) and `awb_time` (it can only say the time).
FLITE_VOICES = ("awb", "kal16", "rms", "slt")
# espeak-ng variants left out of the defaults: whispers have no pitch, and "Mr serious" has a space in its name.
_EXCLUDED_VARIANTS = ("whisper", "whisperf", "Mr serious")

_INSTALL_HINT = (
    "install it with `apt-get update && apt-get install -y espeak-ng flite` (scripts/setup.sh does this) to "
    "synthesise the speech datasets"
)


def require_engine(engine: str) -> str:
    """Path of the `engine` executable ("espeak-ng" or "flite"); raises `RuntimeError` with the install command if it
    is missing."""
    if engine not in ENGINES:
        raise ValueError(f"Unknown speech engine {engine!r}; expected one of {ENGINES}.")
    path = shutil.which(engine)
    if path is None:
        raise RuntimeError(f"`{engine}` was not found on PATH: {_INSTALL_HINT}.")
    return path


@cache
def engine_version(engine: str) -> str:
    """The engine's version line (part of the cache key: another version makes other audio)."""
    # flite prints its version and exits with status 1.
    result = subprocess.run([require_engine(engine), "--version"], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    lines = [line.strip() for line in output.splitlines() if "version" in line.lower() or "text-to-speech" in line]
    return lines[0] if lines else output.strip()


@cache
def espeak_variants() -> tuple[str, ...]:
    """Names of the voice variants installed with espeak-ng (e.g. "f3", "klatt", "Alex"), sorted."""
    version = engine_version("espeak-ng")
    match = re.search(r"Data at:\s*(\S+)", version)
    if match is None:
        raise RuntimeError(f"Could not find espeak-ng's data folder in its version line {version!r}.")
    variant_dir = os.path.join(match.group(1), "voices", "!v")
    return tuple(sorted(name for name in os.listdir(variant_dir) if name not in _EXCLUDED_VARIANTS))


@cache
def flite_voices() -> tuple[str, ...]:
    """Names of the voices compiled into flite (`flite -lv`)."""
    output = subprocess.run([require_engine("flite"), "-lv"], capture_output=True, text=True, check=True).stdout
    return tuple(output.split(":", 1)[-1].split())


def default_voices() -> list[str]:
    """Every default speaker: each espeak-ng variant (in an English accent, assigned in turn) and flite's voices."""
    espeak = [f"espeak-ng:{ESPEAK_ACCENTS[i % len(ESPEAK_ACCENTS)]}+{v}" for i, v in enumerate(espeak_variants())]
    return espeak + [f"flite:{name}" for name in FLITE_VOICES if name in flite_voices()]


def parse_voice(voice: str) -> tuple[str, str]:
    """Split a voice id `"engine:name"` into `(engine, name)`, checking that the engine has that voice."""
    engine, sep, name = voice.partition(":")
    if not sep or engine not in ENGINES or not name:
        raise ValueError(
            f"A voice is 'espeak-ng:<voice>' or 'flite:<voice>', e.g. 'espeak-ng:en-us+f3', got {voice!r}."
        )
    require_engine(engine)
    if engine == "flite" and name not in flite_voices():
        # flite silently falls back to its default voice on an unknown name.
        raise ValueError(f"flite has no voice {name!r}; it has {list(flite_voices())}.")
    return engine, name


def synthesize(voice: str, text: str, speed: float = 1.0, pitch: float = 1.0) -> np.ndarray:
    """Speak `text` with `voice` (`"engine:name"`) and return 16 kHz mono float32 audio `[samples]`, with leading and
    trailing silence trimmed to 50 ms.

    `speed` scales the speaking rate (espeak-ng `-s 175 * speed` words per minute; flite
    `duration_stretch = 1 / speed`). `pitch` scales the voice's pitch (flite `f0_shift`; espeak-ng's 0-99 pitch
    setting, 50 by default, moved by about 67 steps per octave).
    """
    import soundfile
    import soxr

    engine, name = parse_voice(voice)
    if not text.strip():
        raise ValueError("Cannot synthesise empty text.")
    if speed <= 0 or pitch <= 0:
        raise ValueError(f"speed and pitch must be positive factors, got speed={speed}, pitch={pitch}.")
    if engine == "espeak-ng":
        espeak_pitch = min(99, max(0, round(50 + 67 * math.log2(pitch))))
        command = ["espeak-ng", "-v", name, "-s", str(round(175 * speed)), "-p", str(espeak_pitch), "--stdout", text]
    else:
        command = ["flite", "-voice", name, "--setf", f"duration_stretch={1 / speed:.4f}",
                   "--setf", f"f0_shift={pitch:.4f}", "-t", text, "-o", "/dev/stdout"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"{' '.join(command)!r} failed: {result.stderr.decode(errors='replace').strip()}")
    audio, sampling_rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sampling_rate != SAMPLING_RATE:
        audio = soxr.resample(audio, sampling_rate, SAMPLING_RATE, quality="HQ")
    return trim_silence(audio.astype(np.float32), SAMPLING_RATE)


def trim_silence(audio: np.ndarray, sampling_rate: int, margin: float = 0.05, threshold: float = 0.01) -> np.ndarray:
    """Cut leading and trailing samples quieter than `threshold` x the peak, keeping `margin` seconds around."""
    start, end = _loud_span(audio, sampling_rate, margin, threshold)
    return audio[start:end]


def _loud_span(audio: np.ndarray, sampling_rate: int, margin: float, threshold: float) -> tuple[int, int]:
    """`(start, end)` samples that `trim_silence` keeps."""
    loud = np.flatnonzero(np.abs(audio) > threshold * np.abs(audio).max(initial=0.0))
    if loud.size == 0:
        return 0, len(audio)
    keep = int(margin * sampling_rate)
    return max(0, loud[0] - keep), loud[-1] + 1 + keep


@cache
def _flite_word_phones(name: str, word: str) -> int:
    """How many phones flite voice `name` says for `word` alone (pauses not counted)."""
    command = [require_engine("flite"), "-voice", name, "-ps", "-t", word, "-o", "none"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return sum(phone != "pau" for phone in output.split())


def word_end_times(voice: str, text: str, speed: float = 1.0, pitch: float = 1.0) -> np.ndarray:
    """When each word of `text` ends, in seconds from the start of the audio `synthesize(voice, text, speed, pitch)`
    returns: the ends of the words' last phones in flite's own segment timings (`flite -psdur`), shifted by the
    silence `synthesize` trims. A reference for checking learned alignments, e.g. the durations a text-to-speech
    model finds for the words of held-out utterances.

    Only for flite voices (espeak-ng does not report timings) and texts whose words flite says with the phones it
    says for each word alone, such as the digit words of `build_spoken_digit_strings`.

    Returns:
        `np.ndarray [words]` of float64 seconds.
    """
    engine, name = parse_voice(voice)
    if engine != "flite":
        raise ValueError(f"Word timings come from flite's segment durations; {voice!r} is not a flite voice.")
    import soundfile
    import soxr

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "speech.wav")
        command = ["flite", "-voice", name, "--setf", f"duration_stretch={1 / speed:.4f}",
                   "--setf", f"f0_shift={pitch:.4f}", "-psdur", "-t", text, "-o", path]  # fmt: skip
        segments = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
        audio, sampling_rate = soundfile.read(path, dtype="float32", always_2d=True)
    # The same audio as `synthesize`, to find the silence it trims.
    audio = audio.mean(axis=1)
    if sampling_rate != SAMPLING_RATE:
        audio = soxr.resample(audio, sampling_rate, SAMPLING_RATE, quality="HQ")
    start, _ = _loud_span(audio.astype(np.float32), SAMPLING_RATE, 0.05, 0.01)
    phone_ends = [float(end) for phone, end in (s.rsplit(":", 1) for s in segments) if phone != "pau"]
    last_phones = np.cumsum([_flite_word_phones(name, word) for word in text.split()]) - 1
    if len(last_phones) == 0 or last_phones[-1] != len(phone_ends) - 1:
        raise ValueError(
            f"flite said {len(phone_ends)} phones for {text!r}, not the phones of its words said alone; cannot tell "
            "where the words end."
        )
    return np.asarray(phone_ends)[last_phones] - start / SAMPLING_RATE


def digits_to_words(digits: str) -> str:
    """Digits to the words spoken: "314" -> "three one four"."""
    if not digits or not digits.isdigit():
        raise ValueError(f"Expected a non-empty string of digits 0-9, got {digits!r}.")
    return " ".join(DIGIT_WORDS[int(d)] for d in digits)


def words_to_digits(text: str) -> str:
    """Spoken words to digits: "three one four" -> "314" (the inverse of `digits_to_words`)."""
    try:
        return "".join(str(DIGIT_WORDS.index(word)) for word in text.split())
    except ValueError:
        raise ValueError(f"Expected digit words {DIGIT_WORDS} separated by spaces, got {text!r}.") from None


@dataclass(frozen=True)
class _Utterance:
    voice: str
    digits: str
    speed: float
    pitch: float


def _choose_voices(voices: Sequence[str] | None, num_voices: int | None, rng: np.random.Generator) -> list[str]:
    if voices is None:
        voices = default_voices()
        if num_voices is not None:
            if not 1 <= num_voices <= len(voices):
                raise ValueError(f"num_voices must be in [1, {len(voices)}] (the default voices), got {num_voices}.")
            # Up to half flite voices, so that even a handful of voices holds both engines.
            flite = [v for v in voices if v.startswith("flite:")]
            espeak = [v for v in voices if v.startswith("espeak-ng:")]
            num_flite = min(len(flite), num_voices // 2)
            voices = list(rng.permutation(flite)[:num_flite]) + list(rng.permutation(espeak)[: num_voices - num_flite])
    elif num_voices is not None:
        raise ValueError("Pass either `voices` or `num_voices`, not both.")
    voices = [str(v) for v in voices]
    if len(set(voices)) != len(voices) or not voices:
        raise ValueError(f"voices must be a non-empty list without repeats, got {voices}.")
    for voice in voices:
        parse_voice(voice)
    return voices


def _split_voices(voices: list[str], test_voices: float, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Hold out about `test_voices` of each engine's voices (at least one where an engine has two or more)."""
    train, test = [], []
    for engine in ENGINES:
        mine = [v for v in voices if v.startswith(engine + ":")]
        num_test = 0
        if test_voices > 0 and len(mine) >= 2:
            num_test = min(max(1, round(test_voices * len(mine))), len(mine) - 1)
        order = rng.permutation(len(mine))
        test += [mine[i] for i in order[:num_test]]
        train += [mine[i] for i in order[num_test:]]
    return sorted(train), sorted(test)


def _build_speech_dataset(
    name: str,
    plan_texts,
    with_label: bool,
    voices: Sequence[str] | None,
    num_voices: int | None,
    test_voices: float,
    test_utterances: float,
    speed_range: tuple[float, float],
    pitch_range: tuple[float, float],
    seed: int,
    cache_dir,
    num_workers: int | None,
    extra_config: dict,
) -> DatasetDict:
    for arg, value in (("test_voices", test_voices), ("test_utterances", test_utterances)):
        if not 0 <= value < 1:
            raise ValueError(f"{arg} must be a fraction in [0, 1), got {value!r}.")
    for arg, (low, high) in (("speed_range", speed_range), ("pitch_range", pitch_range)):
        if not 0 < low <= high:
            raise ValueError(f"{arg} must be (low, high) with 0 < low <= high, got {(low, high)!r}.")
    rng = np.random.default_rng(seed)
    voices = _choose_voices(voices, num_voices, rng)
    train_voices, held_out_voices = _split_voices(voices, test_voices, rng)
    engines = sorted({voice.split(":", 1)[0] for voice in voices})
    config = {
        "voices": voices,
        "test_voices": test_voices,
        "test_utterances": test_utterances,
        "speed_range": list(speed_range),
        "pitch_range": list(pitch_range),
        "seed": seed,
        "engine_versions": {engine: engine_version(engine) for engine in engines},
        **extra_config,
    }

    def build(folder):
        # Plan every utterance first (all randomness here, in a fixed order), then synthesise in parallel.
        splits = {"train": [], "test": [], "test_seen_voices": []}
        for voice in voices:
            texts = plan_texts(rng)
            utterances = [
                _Utterance(voice, digits, float(rng.uniform(*speed_range)), float(rng.uniform(*pitch_range)))
                for digits in texts
            ]
            if voice in held_out_voices:
                splits["test"] += utterances
                continue
            num_held_out = 0
            if test_utterances > 0 and len(utterances) >= 2:
                num_held_out = min(max(1, round(test_utterances * len(utterances))), len(utterances) - 1)
            order = rng.permutation(len(utterances))
            splits["test_seen_voices"] += [utterances[i] for i in sorted(order[:num_held_out])]
            splits["train"] += [utterances[i] for i in sorted(order[num_held_out:])]

        # Threads suffice: the synthesis itself runs in the engines' subprocesses.
        with ThreadPoolExecutor(max_workers=num_workers or os.cpu_count() or 1) as pool:
            audio = iter(
                pool.map(
                    lambda u: synthesize(u.voice, digits_to_words(u.digits), u.speed, u.pitch),
                    [u for split in splits.values() for u in split],
                )
            )

        columns = {
            "audio": {"array": List(Value("float32")), "sampling_rate": Value("int32")},
            "text": Value("string"),
            "digits": Value("string"),
        }
        if with_label:
            columns["label"] = ClassLabel(names=list(DIGIT_WORDS))
        columns |= {
            # Training voices get the ids 0 .. len(train_voices) - 1.
            "speaker_id": ClassLabel(names=train_voices + held_out_voices),
            "engine": Value("string"),
            "voice": Value("string"),
            "speed": Value("float32"),
            "pitch": Value("float32"),
        }
        features = Features(columns)
        result = {}
        for split, utterances in splits.items():
            if not utterances:  # e.g. `test` with test_voices=0 (datasets cannot reload an empty saved split)
                continue
            data = {
                "audio": [{"array": next(audio), "sampling_rate": SAMPLING_RATE} for _ in utterances],
                "text": [digits_to_words(u.digits) for u in utterances],
                "digits": [u.digits for u in utterances],
                "speaker_id": [features["speaker_id"].str2int(u.voice) for u in utterances],
                "engine": [u.voice.split(":", 1)[0] for u in utterances],
                "voice": [u.voice.split(":", 1)[1] for u in utterances],
                "speed": [u.speed for u in utterances],
                "pitch": [u.pitch for u in utterances],
            }
            if with_label:
                data["label"] = [int(u.digits) for u in utterances]
            dataset = Dataset.from_dict({key: data[key] for key in features}, features=features)
            dataset.set_format("numpy", columns=["audio"], output_all_columns=True)
            result[split] = dataset
        return DatasetDict(result)

    return cached_build(name, config, build, cache_dir)


def build_spoken_digits(
    num_voices: int | None = None,
    repeats: int = 2,
    *,
    voices: Sequence[str] | None = None,
    test_voices: float = 0.2,
    test_utterances: float = 0.2,
    speed_range: tuple[float, float] = (0.85, 1.15),
    pitch_range: tuple[float, float] = (0.9, 1.1),
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
) -> DatasetDict:
    """Spoken digits "zero" .. "nine", each said `repeats` times by every voice, for audio classification.

    Args:
        num_voices: how many of `default_voices()` to use (seeded choice, up to half of them flite's); `None`: all.
        repeats: utterances of each digit per voice, each with its own speed and pitch.
        voices: explicit voice ids instead (`"espeak-ng:en-us+f3"`, `"flite:slt"`, ...).
        test_voices: fraction of each engine's voices held out as the `test` split (speaker-independent testing;
            at least one voice of an engine that has two or more, none for 0).
        test_utterances: fraction of each training voice's utterances held out as `test_seen_voices`.
        speed_range, pitch_range: per-utterance speaking-rate and pitch factors, drawn uniformly.
        seed: seed of every random choice (voices, split, speeds, pitches).
        cache_dir: where built datasets are kept (default `~/.cache/omni_encoders/datasets`).
        num_workers: parallel synthesis processes (default: the number of CPUs).

    Returns:
        `DatasetDict` with splits
            `train`: the training voices' utterances;
            `test`: every utterance of the held-out voices (no speaker in common with `train`);
            `test_seen_voices`: held-out utterances of the training voices (e.g. speaker verification).
        A split that would be empty (`test` with `test_voices=0`, `test_seen_voices` with `test_utterances=0`) is left
        out.
        Columns: `audio` (`{"array": float32 [samples], "sampling_rate": 16000}`, returned as numpy), `text` (the
        word said, "seven"), `digits` ("7"), `label` (`ClassLabel` with names "zero".."nine"), `speaker_id`
        (`ClassLabel` over the voice ids, training voices first: ids `< len(train voices)` are training speakers),
        `engine` ("espeak-ng" or "flite"), `voice` (the engine's voice name), `speed` and `pitch` (the factors used).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")

    def plan_texts(rng):
        return [str(digit) for _ in range(repeats) for digit in range(10)]

    return _build_speech_dataset(
        "spoken_digits", plan_texts, True, voices, num_voices, test_voices, test_utterances, speed_range,
        pitch_range, seed, cache_dir, num_workers, {"repeats": repeats},
    )  # fmt: skip


def build_spoken_digit_strings(
    num_voices: int | None = None,
    utterances_per_voice: int = 20,
    min_digits: int = 3,
    max_digits: int = 6,
    *,
    voices: Sequence[str] | None = None,
    test_voices: float = 0.2,
    test_utterances: float = 0.2,
    speed_range: tuple[float, float] = (0.85, 1.15),
    pitch_range: tuple[float, float] = (0.9, 1.1),
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
) -> DatasetDict:
    """Random digit strings read out digit by digit ("3 1 4" is said "three one four"), for CTC speech recognition,
    speaker embeddings and text-to-speech.

    Every voice says `utterances_per_voice` strings of `min_digits` to `max_digits` uniformly random digits. The
    transcript is given both ways: `digits` ("314", a 10-symbol vocabulary: the natural CTC target, scored with CER)
    and `text` ("three one four", the words spoken: the input text for TTS). `words_to_digits`/`digits_to_words`
    convert. For a one-voice TTS set pass e.g. `voices=["flite:slt"], test_voices=0`.

    Arguments, splits and the other columns are those of `build_spoken_digits`, without `label` (and `repeats`).
    """
    if utterances_per_voice < 1:
        raise ValueError(f"utterances_per_voice must be >= 1, got {utterances_per_voice}.")
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"Need 1 <= min_digits <= max_digits, got min_digits={min_digits}, max_digits={max_digits}.")

    def plan_texts(rng):
        lengths = rng.integers(min_digits, max_digits + 1, size=utterances_per_voice)
        return ["".join(map(str, rng.integers(0, 10, size=length))) for length in lengths]

    extra = {"utterances_per_voice": utterances_per_voice, "min_digits": min_digits, "max_digits": max_digits}
    return _build_speech_dataset(
        "spoken_digit_strings", plan_texts, False, voices, num_voices, test_voices, test_utterances, speed_range,
        pitch_range, seed, cache_dir, num_workers, extra,
    )  # fmt: skip


def join_utterances(dataset: Dataset, utterances_per_clip: int, gap_s: float = 0.3, seed: int = 0) -> Dataset:
    """Clips like a long recording: the utterances of a `build_spoken_digits`/`build_spoken_digit_strings` split, in a
    seeded random order, joined `utterances_per_clip` at a time (the last clip may hold fewer), with `gap_s` seconds
    of silence between two utterances.

    Returns a `Dataset` with the columns `audio` (`{"array", "sampling_rate"}`), `digits` (the digit strings joined
    without separator, what a CTC model over digits outputs for the clip) and `text` (the words joined by spaces).
    """
    if utterances_per_clip < 1:
        raise ValueError(f"utterances_per_clip must be >= 1, got {utterances_per_clip}.")
    if gap_s < 0:
        raise ValueError(f"gap_s must be >= 0 seconds, got {gap_s}.")
    order = np.random.default_rng(seed).permutation(len(dataset))
    gap = np.zeros(round(gap_s * SAMPLING_RATE), dtype=np.float32)
    columns = dataset.select_columns(["audio", "digits", "text"]).with_format("numpy")[:]  # one read of the split
    audio, digits, text = [], [], []
    for start in range(0, len(order), utterances_per_clip):
        group = order[start : start + utterances_per_clip]
        pieces = [piece for index in group for piece in (gap, columns["audio"][index]["array"])][1:]
        audio.append({"array": np.concatenate(pieces).astype(np.float32), "sampling_rate": SAMPLING_RATE})
        digits.append("".join(columns["digits"][group]))
        text.append(" ".join(columns["text"][group]))
    features = Features(
        {"audio": {"array": List(Value("float32")), "sampling_rate": Value("int32")}, "digits": Value("string"),
         "text": Value("string")}
    )  # fmt: skip
    joined = Dataset.from_dict({"audio": audio, "digits": digits, "text": text}, features=features)
    joined.set_format("numpy", columns=["audio"], output_all_columns=True)
    return joined


def make_verification_trials(speaker_ids: Sequence[int], num_trials: int = 2000, seed: int = 0) -> Dataset:
    """Speaker-verification trials over the utterances of a dataset split: pairs of distinct utterances, half of them
    by the same speaker (label 1, "target") and half by different speakers (label 0), drawn with a seed.

    Score each pair (e.g. cosine similarity of the two speaker embeddings) and pass scores and labels to the `eer`
    metric. `speaker_ids` is the split's speaker column, e.g. `dataset["test_seen_voices"]["speaker_id"]`.

    Returns:
        `Dataset` with columns `enrollment` and `test` (`int64` row indices into the split) and `label` (`int64`).
    """
    speaker_ids = np.asarray(speaker_ids)
    rows_of = {speaker: np.flatnonzero(speaker_ids == speaker) for speaker in np.unique(speaker_ids)}
    repeated = [speaker for speaker, rows in rows_of.items() if len(rows) >= 2]
    if len(rows_of) < 2 or not repeated:
        raise ValueError(
            "Verification trials need at least two speakers and one speaker with two or more utterances; got "
            f"{len(rows_of)} speakers, {len(repeated)} of them with two or more utterances."
        )
    if num_trials < 2:
        raise ValueError(f"num_trials must be >= 2, got {num_trials}.")
    rng = np.random.default_rng(seed)
    num_targets = num_trials // 2
    pairs = []
    for speaker in rng.choice(repeated, size=num_targets):
        pairs.append((*rng.choice(rows_of[speaker], size=2, replace=False), 1))
    speakers = np.array(list(rows_of))
    for first, second in (rng.choice(speakers, size=2, replace=False) for _ in range(num_trials - num_targets)):
        pairs.append((rng.choice(rows_of[first]), rng.choice(rows_of[second]), 0))
    enrollment, test, label = (np.array(column, dtype=np.int64) for column in zip(*pairs))
    order = rng.permutation(len(pairs))
    return Dataset.from_dict({"enrollment": enrollment[order], "test": test[order], "label": label[order]})

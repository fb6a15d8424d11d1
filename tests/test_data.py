"""Dataset builders: features, splits and labels at tiny sizes, caching, and the properties the experiments rely on
(video classes differ only in frame order; synthesised speech is real speech; test voices are unseen speakers)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from datasets import ClassLabel, DatasetDict, Image, Value

from omni_encoders.data import (
    DIGIT_WORDS,
    DIRECTIONS,
    SAMPLING_RATE,
    build_digit_images,
    build_moving_digit_videos,
    build_spoken_digit_strings,
    build_spoken_digits,
    digits_to_words,
    make_verification_trials,
    read_video,
    synthesize,
    word_end_times,
    words_to_digits,
)


TINY_VIDEOS = {"num_videos": 8, "num_frames": 9, "frame_size": 16, "digit_size": 8}
TINY_SPEECH = {"num_voices": 4, "test_voices": 0.2, "test_utterances": 0.25}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("omni_data_cache")


@pytest.fixture(scope="module")
def videos(cache_dir):
    return build_moving_digit_videos(**TINY_VIDEOS, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def spoken_digits(cache_dir):
    return build_spoken_digits(repeats=1, **TINY_SPEECH, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def digit_strings(cache_dir):
    return build_spoken_digit_strings(utterances_per_voice=4, min_digits=3, max_digits=5, **TINY_SPEECH,
                                      cache_dir=cache_dir)  # fmt: skip


# Images ---------------------------------------------------------------------------------------------------------


def test_digit_images_features_splits_and_labels(cache_dir):
    dataset = build_digit_images(image_size=16, cache_dir=cache_dir)
    assert isinstance(dataset, DatasetDict) and set(dataset) == {"train", "test"}
    assert len(dataset["train"]) + len(dataset["test"]) == 1797
    assert abs(len(dataset["test"]) / 1797 - 0.2) < 0.01
    features = dataset["train"].features
    assert isinstance(features["image"], Image)
    assert isinstance(features["label"], ClassLabel) and features["label"].names == [str(d) for d in range(10)]
    for split in dataset.values():
        assert sorted(set(split["label"])) == list(range(10))  # stratified: every class in both splits
    image = dataset["test"][0]["image"]
    assert isinstance(image, PIL.Image.Image) and image.mode == "RGB" and image.size == (16, 16)
    pixels = np.asarray(image)
    assert pixels.min() < 60 and pixels.max() > 240  # dark ink on white paper


def test_builders_are_deterministic_and_cached(cache_dir, tmp_path, monkeypatch):
    first = build_digit_images(image_size=16, cache_dir=cache_dir)
    rebuilt = build_digit_images(image_size=16, cache_dir=tmp_path)  # a fresh build elsewhere
    assert first["test"]["label"] == rebuilt["test"]["label"]
    assert np.array_equal(np.asarray(first["test"][5]["image"]), np.asarray(rebuilt["test"][5]["image"]))
    assert build_digit_images(image_size=16, seed=1, cache_dir=tmp_path)["test"]["label"] != first["test"]["label"]

    # The second call with the same arguments must not build anything.
    from omni_encoders.data import images

    def fail():
        raise AssertionError("the cached dataset was rebuilt")

    monkeypatch.setattr(images, "load_digit_images", fail)
    start = time.perf_counter()
    cached = build_digit_images(image_size=16, cache_dir=cache_dir)
    assert time.perf_counter() - start < 2.0
    assert cached["train"]["label"] == first["train"]["label"]


def test_image_builder_rejects_bad_arguments(cache_dir):
    with pytest.raises(ValueError, match="image_size"):
        build_digit_images(image_size=4, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="test_size"):
        build_digit_images(test_size=1.5, cache_dir=cache_dir)


# Videos ---------------------------------------------------------------------------------------------------------


def _frames_by_direction(dataset, scene):
    rows = [row for split in dataset.values() for row in split if row["scene"] == scene]
    return {DIRECTIONS[row["label"]]: read_video(row["video"]).astype(np.int16) for row in rows}


def _max_diff(a, b):
    return int(np.abs(a - b).max())


def test_videos_features_splits_and_labels(videos):
    assert set(videos) == {"train", "test"}
    features = videos["train"].features
    assert features["video"] == Value("string")
    assert isinstance(features["label"], ClassLabel) and features["label"].names == list(DIRECTIONS)
    assert features["digit"] == Value("int32") and features["scene"] == Value("int32")
    for split in videos.values():
        assert np.bincount(split["label"], minlength=4).tolist() == [len(split) // 4] * 4  # balanced
    assert not set(videos["train"]["scene"]) & set(videos["test"]["scene"])  # scenes do not straddle the splits
    frames = read_video(videos["train"][0]["video"])
    assert frames.shape == (9, 16, 16, 3) and frames.dtype == np.uint8
    assert frames.max() > 200  # the digit is visible


def test_video_directions_are_time_reversals_of_each_other(videos):
    scene = videos["test"][0]["scene"]
    frames = _frames_by_direction(videos, scene)
    assert set(frames) == set(DIRECTIONS)
    # Lossless luma: the same frame decodes within one grey level whichever video it is in.
    assert _max_diff(frames["right"], frames["left"][::-1]) <= 2
    assert _max_diff(frames["down"], frames["up"][::-1]) <= 2
    # ... while the videos themselves do differ (the digit is elsewhere in most frames).
    assert _max_diff(frames["right"], frames["left"]) > 100
    assert _max_diff(frames["right"], frames["down"]) > 100
    # motion="scan": all four directions show the same set of frames.
    for frame in frames["down"]:
        assert min(_max_diff(frame, other) for other in frames["right"]) <= 2

    # "right" moves the digit's centre of mass right within a row; "down" moves it down within a column.
    def centre(video):
        weights = video.mean(-1)
        ys, xs = np.indices(weights.shape[1:])
        return (weights * xs).sum((1, 2)) / weights.sum((1, 2)), (weights * ys).sum((1, 2)) / weights.sum((1, 2))

    x, y = centre(frames["right"])
    assert (np.diff(x)[:2] > 0).all() and np.allclose(np.diff(y)[:2], 0, atol=0.5)
    x, y = centre(frames["down"])
    assert (np.diff(y)[:2] > 0).all() and np.allclose(np.diff(x)[:2], 0, atol=0.5)


def test_shuffled_frames_control_has_the_same_frames_in_another_order(videos, cache_dir):
    shuffled = build_moving_digit_videos(**TINY_VIDEOS, shuffle_frames=True, cache_dir=cache_dir)
    assert shuffled["train"]["label"] == videos["train"]["label"]
    assert shuffled["train"]["scene"] == videos["train"]["scene"]
    reordered = 0
    for ordered_row, shuffled_row in zip(videos["train"], shuffled["train"]):
        ordered = read_video(ordered_row["video"]).astype(np.int16)
        mixed = read_video(shuffled_row["video"]).astype(np.int16)
        # Each shuffled frame is one of the ordered frames (a permutation, up to one grey level of codec error).
        match = [min(range(len(ordered)), key=lambda i: np.abs(ordered[i] - frame).max()) for frame in mixed]
        assert sorted(match) == list(range(len(ordered)))
        assert _max_diff(mixed, ordered[match]) <= 2
        reordered += match != list(range(len(ordered)))
    assert reordered == len(videos["train"])


def test_line_motion_pairs_opposite_directions(cache_dir):
    videos = build_moving_digit_videos(**TINY_VIDEOS, motion="line", cache_dir=cache_dir)
    for split in videos.values():
        assert sorted(set(split["label"])) == [0, 1, 2, 3]
    scene = videos["train"][0]["scene"]
    frames = _frames_by_direction(videos, scene)
    assert set(frames) in ({"right", "left"}, {"down", "up"})
    first, second = frames.values()
    assert _max_diff(first, second[::-1]) <= 2 and _max_diff(first, second) > 100


def test_video_builder_rejects_bad_arguments(cache_dir):
    with pytest.raises(ValueError, match="perfect square"):
        build_moving_digit_videos(num_frames=10, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="multiple of 4"):
        build_moving_digit_videos(num_videos=10, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="too few"):
        build_moving_digit_videos(num_videos=4, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="even"):
        build_moving_digit_videos(frame_size=15, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="motion"):
        build_moving_digit_videos(motion="zoom", cache_dir=cache_dir)


def test_deleted_video_files_trigger_a_rebuild(tmp_path):
    videos = build_moving_digit_videos(**TINY_VIDEOS, cache_dir=tmp_path)
    path = videos["test"][0]["video"]
    shutil.rmtree(Path(path).parent)
    rebuilt = build_moving_digit_videos(**TINY_VIDEOS, cache_dir=tmp_path)
    assert rebuilt["test"][0]["video"] == path and read_video(path).shape[0] == 9


# Speech ---------------------------------------------------------------------------------------------------------


def test_speech_engines_are_installed():
    for tool in ("espeak-ng", "flite"):
        assert shutil.which(tool), (
            f"`{tool}` is missing: the speech datasets are synthesised with it. Install it with "
            "`apt-get update && apt-get install -y espeak-ng flite` (scripts/setup.sh does)."
        )


def test_missing_engine_is_a_clear_error(monkeypatch):
    from omni_encoders.data import speech

    monkeypatch.setattr(speech.shutil, "which", lambda tool: None)
    with pytest.raises(RuntimeError, match="apt-get install -y espeak-ng flite"):
        synthesize("flite:slt", "one")


def _pitch(audio: np.ndarray) -> float:
    """Median f0 in Hz over the voiced 40 ms frames of `audio` (autocorrelation), 0 if under 30% of its loud frames
    are periodic."""
    size = int(0.04 * SAMPLING_RATE)
    low, high = SAMPLING_RATE // 500, SAMPLING_RATE // 50
    loudness = np.sqrt(np.mean(audio**2))
    voiced, loud = [], 0
    for start in range(0, len(audio) - size, size // 2):
        frame = audio[start : start + size] - audio[start : start + size].mean()
        if np.sqrt(np.mean(frame**2)) < 0.3 * loudness:
            continue
        loud += 1
        correlation = np.correlate(frame, frame, mode="full")[size - 1 :]
        lag = low + int(np.argmax(correlation[low:high]))
        if correlation[lag] > 0.3 * correlation[0]:
            voiced.append(SAMPLING_RATE / lag)
    return float(np.median(voiced)) if len(voiced) >= 0.3 * loud else 0.0


def _check_speech(example, min_seconds, max_seconds):
    audio = example["audio"]
    assert int(audio["sampling_rate"]) == SAMPLING_RATE
    array = audio["array"]
    assert isinstance(array, np.ndarray) and array.dtype == np.float32 and array.ndim == 1
    assert min_seconds <= len(array) / SAMPLING_RATE <= max_seconds, (example["text"], len(array))
    assert np.sqrt(np.mean(array**2)) > 0.01 and np.abs(array).max() <= 1.0
    assert 50 <= _pitch(array) <= 450, example  # voiced: a periodic source at a speaking pitch


def test_spoken_digits_features_and_real_speech(spoken_digits):
    assert set(spoken_digits) == {"train", "test", "test_seen_voices"}
    features = spoken_digits["train"].features
    assert features["audio"] == {"array": features["audio"]["array"], "sampling_rate": Value("int32")}
    assert features["audio"]["array"].feature == Value("float32")
    assert isinstance(features["label"], ClassLabel) and features["label"].names == list(DIGIT_WORDS)
    assert isinstance(features["speaker_id"], ClassLabel)
    for column in ("text", "digits", "engine", "voice"):
        assert features[column] == Value("string")
    for split in spoken_digits.values():
        for example in split:
            assert example["text"] == DIGIT_WORDS[example["label"]] and example["digits"] == str(example["label"])
            assert features["speaker_id"].int2str(example["speaker_id"]) == f"{example['engine']}:{example['voice']}"
            assert 0.85 <= example["speed"] <= 1.15 and 0.9 <= example["pitch"] <= 1.1
            _check_speech(example, 0.15, 1.5)
    # Every voice says every digit once (repeats=1), whatever split its utterances went to.
    total = sum(len(split) for split in spoken_digits.values())
    assert total == 4 * 10


def test_speaker_independent_split_has_unseen_voices(spoken_digits):
    train, test, seen = (set(spoken_digits[split]["speaker_id"]) for split in ("train", "test", "test_seen_voices"))
    assert train and test and not train & test
    assert seen and seen <= train  # held-out utterances of the training voices
    assert max(train) < len(train) <= min(test)  # training voices come first in the speaker ClassLabel
    for split in ("train", "test"):
        assert set(spoken_digits[split]["engine"]) == {"espeak-ng", "flite"}


def test_digit_strings_transcripts_and_durations(digit_strings):
    features = digit_strings["train"].features
    assert "label" not in features and features["digits"] == Value("string")
    for split in digit_strings.values():
        for example in split:
            digits = example["digits"]
            assert 3 <= len(digits) <= 5 and digits.isdigit()
            assert example["text"] == digits_to_words(digits) and words_to_digits(example["text"]) == digits
            _check_speech(example, 0.2 * len(digits), 0.9 * len(digits))


def test_speech_is_deterministic(digit_strings, tmp_path):
    rebuilt = build_spoken_digit_strings(utterances_per_voice=4, min_digits=3, max_digits=5, **TINY_SPEECH,
                                         cache_dir=tmp_path, num_workers=1)  # fmt: skip
    assert rebuilt["test"]["digits"] == digit_strings["test"]["digits"]
    assert np.array_equal(rebuilt["test"][0]["audio"]["array"], digit_strings["test"][0]["audio"]["array"])


def test_voices_pitch_and_speed_change_the_audio():
    base = synthesize("flite:slt", "seven")
    assert len(synthesize("flite:slt", "seven", speed=0.7)) > 1.2 * len(base)
    assert _pitch(synthesize("flite:slt", "seven", pitch=1.3)) > 1.15 * _pitch(base)
    low = _pitch(synthesize("espeak-ng:en-us+m3", "seven", pitch=0.8))
    assert _pitch(synthesize("espeak-ng:en-us+m3", "seven", pitch=1.25)) > 1.2 * low


def test_speech_rejects_bad_voices_and_arguments(cache_dir):
    with pytest.raises(ValueError, match="no voice"):
        synthesize("flite:nosuchvoice", "one")  # flite itself would silently use its default voice
    with pytest.raises(ValueError, match="espeak-ng:<voice>"):
        synthesize("festival:kal", "one")
    with pytest.raises(RuntimeError, match="does not exist"):
        synthesize("espeak-ng:xx-nosuch", "one")
    with pytest.raises(ValueError, match="num_voices"):
        build_spoken_digits(num_voices=10_000, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="either"):
        build_spoken_digits(num_voices=2, voices=["flite:slt"], cache_dir=cache_dir)
    with pytest.raises(ValueError, match="min_digits"):
        build_spoken_digit_strings(min_digits=5, max_digits=3, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="digits"):
        digits_to_words("3a")


def test_one_voice_dataset_for_tts(cache_dir):
    dataset = build_spoken_digit_strings(voices=["flite:slt"], utterances_per_voice=4, test_voices=0,
                                         cache_dir=cache_dir)  # fmt: skip
    assert set(dataset) == {"train", "test_seen_voices"}  # no held-out voice, so no `test` split
    assert len(dataset["train"]) == 3 and len(dataset["test_seen_voices"]) == 1
    assert set(dataset["train"]["voice"]) == {"slt"}


def test_flite_word_timings_match_the_synthesised_audio():
    text = "seven one eight"
    audio = synthesize("flite:slt", text)
    ends = word_end_times("flite:slt", text)
    assert ends.shape == (3,) and np.all(np.diff(ends) > 0.15)  # each digit word takes well over 150 ms
    # The last word ends where `synthesize` stops keeping sound (its 50 ms margin after the last loud sample).
    assert 0 < len(audio) / SAMPLING_RATE - ends[-1] < 0.2
    slow = word_end_times("flite:slt", text, speed=0.8)
    assert np.allclose(slow / ends, 1.25, atol=0.08)  # flite's duration_stretch = 1 / speed
    with pytest.raises(ValueError, match="not a flite voice"):
        word_end_times("espeak-ng:en-us+m3", text)


def test_verification_trials(spoken_digits):
    speakers = spoken_digits["train"]["speaker_id"]
    trials = make_verification_trials(speakers, num_trials=40, seed=0)
    assert trials.column_names == ["enrollment", "test", "label"]
    labels = np.asarray(trials["label"])
    assert labels.sum() == 20
    for enrollment, test, label in zip(trials["enrollment"], trials["test"], labels):
        assert enrollment != test
        assert (speakers[enrollment] == speakers[test]) == bool(label)
    assert make_verification_trials(speakers, num_trials=40, seed=0)["test"] == trials["test"]
    with pytest.raises(ValueError, match="two speakers"):
        make_verification_trials([0, 0, 0])


def test_join_utterances_makes_long_clips_with_gaps_and_joined_transcripts():
    from datasets import Dataset

    from omni_encoders.data import join_utterances

    rows = [np.full(100 * (i + 1), i + 1, dtype=np.float32) for i in range(5)]  # utterance i: 100 (i + 1) samples
    dataset = Dataset.from_dict({
        "audio": [{"array": row, "sampling_rate": 16000} for row in rows],
        "digits": [str(i + 1) for i in range(5)], "text": ["one", "two", "three", "four", "five"],
    })  # fmt: skip
    joined = join_utterances(dataset, utterances_per_clip=2, gap_s=0.01, seed=3)
    assert len(joined) == 3  # 2 + 2 + 1
    assert "".join(sorted("".join(joined["digits"]))) == "12345"
    for clip in joined:
        audio, digits = clip["audio"]["array"], clip["digits"]
        expected = [np.zeros(160, np.float32)] * (2 * len(digits) - 1)
        expected[::2] = [rows[int(digit) - 1] for digit in digits]
        np.testing.assert_array_equal(audio, np.concatenate(expected))  # utterance, 10 ms of silence, utterance
        assert clip["text"].split() == [dataset["text"][int(digit) - 1] for digit in digits]
    assert joined["digits"] == join_utterances(dataset, 2, 0.01, seed=3)["digits"]  # seeded
    with pytest.raises(ValueError, match="utterances_per_clip must be >= 1"):
        join_utterances(dataset, 0)

"""Metric modules shipped with the package: they load through `evaluate` from local files without any network access
and compute the hand-checked values."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import evaluate
import numpy as np
import pytest

from omni_encoders import metrics


def _levenshtein(reference, hypothesis) -> int:
    """Edit distance (substitutions, deletions, insertions all cost 1), an independent reference for WER/CER."""
    row = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("name", metrics.METRICS)
def test_metrics_load_from_package_files_without_network(name, no_network):
    module = metrics.load(name)
    assert isinstance(module, evaluate.EvaluationModule)
    assert os.path.isfile(metrics.metric_path(name))
    assert metrics.metric_path(name).startswith(os.path.dirname(metrics.__file__))


def test_metrics_load_offline_in_a_fresh_process_even_without_hf_hub_offline(tmp_path):
    # HF_HUB_OFFLINE unset and the network made unreachable: `evaluate.load(<script path>)` must take evaluate's
    # local-script branch only, with a cold modules cache.
    script = textwrap.dedent(
        f"""
        import json, socket
        def refuse(*args, **kwargs):
            raise OSError("network access attempted")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import evaluate
        print(json.dumps({{
            "cer": evaluate.load({metrics.metric_path("cer")!r}).compute(predictions=["3 1 4"], references=["3 1 5"]),
            "eer": evaluate.load({metrics.metric_path("eer")!r}).compute(predictions=[0.9, 0.1], references=[1, 0]),
        }}))
        """
    )
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    env["HF_HOME"] = str(tmp_path / "hf_home")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values == {"cer": {"cer": 0.2}, "eer": {"eer": 0.0, "threshold": 0.9}}


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown metric 'bleu'"):
        metrics.load("bleu")


def test_accuracy():
    accuracy = metrics.load("accuracy")
    assert accuracy.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2]) == {"accuracy": 0.75}
    assert accuracy.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2], normalize=False) == {"accuracy": 3.0}
    weighted = accuracy.compute(predictions=[0, 1], references=[0, 0], sample_weight=[3.0, 1.0])
    assert weighted == {"accuracy": 0.75}
    # Batches accumulate as with any evaluate metric.
    accuracy.add_batch(predictions=[1, 1], references=[1, 0])
    accuracy.add_batch(predictions=[2], references=[2])
    assert accuracy.compute()["accuracy"] == pytest.approx(2 / 3)


def test_word_error_rate():
    wer = metrics.load("wer")
    # "three one four" -> "three one": 1 deletion; "four" -> "four five": 1 insertion; 4 reference words.
    assert wer.compute(predictions=["three one", "four five"], references=["three one four", "four"]) == {"wer": 0.5}
    assert wer.compute(predictions=["nine nine"], references=["one two"]) == {"wer": 1.0}
    assert wer.compute(predictions=["a"], references=["a"]) == {"wer": 0.0}


def test_character_error_rate():
    cer = metrics.load("cer")
    # "3145" -> "314": 1 deletion; "15" -> "1": 1 deletion; 6 reference characters.
    assert cer.compute(predictions=["314", "1"], references=["3145", "15"]) == {"cer": pytest.approx(1 / 3)}
    # Spaces count as characters: one substitution in five characters.
    assert cer.compute(predictions=["3 1 4"], references=["3 1 5"]) == {"cer": 0.2}
    assert cer.compute(predictions=["", "12"], references=["7", "12"]) == {"cer": pytest.approx(1 / 3)}
    # Against an independent edit distance on random digit strings: corpus CER = total edits / total characters.
    rng = np.random.default_rng(0)
    references = ["".join(map(str, rng.integers(0, 10, rng.integers(3, 7)))) for _ in range(30)]
    predictions = ["".join(map(str, rng.integers(0, 10, rng.integers(2, 8)))) for _ in range(30)]
    expected = sum(_levenshtein(r, p) for r, p in zip(references, predictions)) / sum(map(len, references))
    assert cer.compute(predictions=predictions, references=references)["cer"] == pytest.approx(expected)


def test_error_rates_reject_empty_references():
    with pytest.raises(ValueError, match="every reference is empty"):
        metrics.load("cer").compute(predictions=["1"], references=[""])
    with pytest.raises(ValueError, match="every reference is empty"):
        metrics.load("wer").compute(predictions=["one"], references=[" "])


def test_equal_error_rate_hand_computed():
    eer = metrics.load("eer")
    # Targets score 0.9, 0.8, 0.3; non-targets 0.7, 0.2, 0.1. Accepting >= 0.7 rejects 1/3 of the targets (0.3) and
    # accepts 1/3 of the non-targets (0.7): FAR = FRR = 1/3.
    result = eer.compute(predictions=[0.9, 0.8, 0.3, 0.7, 0.2, 0.1], references=[1, 1, 1, 0, 0, 0])
    assert result == {"eer": pytest.approx(1 / 3), "threshold": 0.7}
    # A crossing between operating points: (FAR, FRR) goes (0, 1/3) at 0.8, (1/4, 1/3) at 0.7, (1/2, 1/3) at 0.6;
    # FAR = FRR = 1/3 on the segment from 0.7 to 0.6.
    result = eer.compute(predictions=[0.9, 0.8, 0.3, 0.7, 0.6, 0.2, 0.1], references=[1, 1, 1, 0, 0, 0, 0])
    assert result == {"eer": pytest.approx(1 / 3), "threshold": 0.6}
    assert eer.compute(predictions=[4, 3, 2, 1], references=[1, 1, 0, 0])["eer"] == 0.0  # separated
    assert eer.compute(predictions=[1, 2, 3, 4], references=[1, 1, 0, 0])["eer"] == 1.0  # inverted
    assert eer.compute(predictions=[5, 5, 5, 5], references=[1, 0, 1, 0])["eer"] == 0.5  # uninformative ties


def test_equal_error_rate_matches_the_roc_curve():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(labels * 1.5, 1.0)
    false_positive, true_positive, _ = roc_curve(labels, scores, drop_intermediate=False)
    false_negative = 1 - true_positive
    i = int(np.argmax(false_positive >= false_negative))
    gap_before, gap_after = false_positive[i - 1] - false_negative[i - 1], false_positive[i] - false_negative[i]
    fraction = -gap_before / (gap_after - gap_before)
    expected = false_positive[i - 1] + fraction * (false_positive[i] - false_positive[i - 1])
    result = metrics.load("eer").compute(predictions=scores, references=labels)
    assert result["eer"] == pytest.approx(expected, abs=1e-12)
    assert 0.2 < result["eer"] < 0.3  # two unit Gaussians 1.5 apart: EER = Phi(-0.75) = 0.227


def test_equal_error_rate_rejects_bad_trials():
    eer = metrics.load("eer")
    with pytest.raises(ValueError, match="both target"):
        eer.compute(predictions=[0.1, 0.2], references=[1, 1])
    with pytest.raises(ValueError, match="0 \\(non-target\\) or 1"):
        eer.compute(predictions=[0.1, 0.2], references=[1, 2])
    with pytest.raises(ValueError, match="finite"):
        eer.compute(predictions=[float("nan"), 0.2], references=[1, 0])


def test_metrics_combine_for_trainer_compute_metrics():
    combined = evaluate.combine([metrics.load("wer"), metrics.load("cer")])
    assert combined.compute(predictions=["one two"], references=["one three"]) == {
        "wer": 0.5,
        "cer": pytest.approx(_levenshtein("one three", "one two") / len("one three")),
    }

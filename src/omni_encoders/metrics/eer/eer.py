# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Equal error rate (EER) of a verification system, from trial scores and same/different labels."""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Equal error rate (EER) of a verification system, e.g. speaker verification: each trial compares two recordings and
gets a score (higher = more likely the same speaker) and a label (1 = same speaker, "target"; 0 = different speakers,
"non-target"). A trial is accepted when its score >= a threshold t, and
    false acceptance rate FAR(t) = fraction of non-target trials accepted,
    false rejection rate  FRR(t) = fraction of target trials rejected.
Sweeping t over the scores traces the detection error trade-off curve, the points (FAR, FRR) joined by straight lines
(the same curve as the ROC, FRR = 1 - TPR), from (0, 1) (accept nothing) to (1, 0) (accept everything). The EER is
the error rate where this curve crosses FAR = FRR. Ties in the scores are one operating point. 0 is perfect
separation, 0.5 is chance, 1 is perfectly inverted scores.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): one finite score per trial, higher meaning "same speaker" (e.g. the cosine
        similarity of two speaker embeddings).
    references (`list` of `int`): 1 for a target (same speaker) trial, 0 for a non-target trial; both kinds needed.
Returns:
    `dict` with
        `eer` (`float`): the equal error rate, in [0, 1];
        `threshold` (`float`): the score threshold of the first operating point at which FAR >= FRR (accept when
            score >= threshold); the EER lies between that point and the one before it.
Example:
    >>> eer = omni_encoders.metrics.load("eer")
    >>> eer.compute(predictions=[0.9, 0.8, 0.3, 0.7, 0.2, 0.1], references=[1, 1, 1, 0, 0, 0])
    {'eer': 0.3333333333333333, 'threshold': 0.7}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://en.wikipedia.org/wiki/Biometrics#Performance"],
        )

    def _compute(self, predictions, references):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references)
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"eer references must be 0 (non-target) or 1 (target), got values {np.unique(labels)}.")
        if not np.isfinite(scores).all():
            raise ValueError("eer scores must all be finite.")
        num_targets = int(labels.sum())
        num_nontargets = labels.size - num_targets
        if num_targets == 0 or num_nontargets == 0:
            raise ValueError(
                f"eer needs both target (1) and non-target (0) trials, got {num_targets} targets and "
                f"{num_nontargets} non-targets."
            )

        # Operating points from the strictest threshold down: after accepting every trial scoring >= s.
        order = np.argsort(-scores, kind="stable")
        scores, labels = scores[order], labels[order]
        last_of_each_score = np.flatnonzero(np.diff(scores) != 0).tolist() + [scores.size - 1]
        accepted_targets = np.concatenate([[0], np.cumsum(labels)[last_of_each_score]])
        accepted_nontargets = np.concatenate([[0], np.cumsum(1 - labels)[last_of_each_score]])
        thresholds = np.concatenate([[np.inf], scores[last_of_each_score]])
        far = accepted_nontargets / num_nontargets

        # (FAR - FRR) * num_targets * num_nontargets, in exact integers: it rises from -N_t N_n to N_t N_n, and the EER
        # is where the segment joining two consecutive operating points crosses zero.
        gap = accepted_nontargets * num_targets - (num_targets - accepted_targets) * num_nontargets
        i = int(np.argmax(gap >= 0))
        fraction = -gap[i - 1] / (gap[i] - gap[i - 1])
        eer = far[i - 1] + fraction * (far[i] - far[i - 1])
        return {"eer": float(eer), "threshold": float(thresholds[i])}

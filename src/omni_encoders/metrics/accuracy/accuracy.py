# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Accuracy: the (optionally weighted) fraction of predictions equal to their reference."""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Accuracy is the proportion of correct predictions among all predictions:
    accuracy = (number of predictions equal to their reference) / (number of predictions)
With `sample_weight`, each example counts with its weight.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): reference class ids.
    normalize (`bool`, defaults to `True`): return the fraction correct; if `False`, the (weighted) number correct.
    sample_weight (`list` of `float`, *optional*): one non-negative weight per example.
Returns:
    `dict` with `accuracy` (`float`): in [0, 1] when `normalize=True`.
Example:
    >>> accuracy = omni_encoders.metrics.load("accuracy")
    >>> accuracy.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 0.75}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.size == 0:
            raise ValueError("accuracy needs at least one prediction, got none.")
        correct = (predictions == references).astype(np.float64)
        if sample_weight is None:
            weights = np.ones_like(correct)
        else:
            weights = np.asarray(sample_weight, dtype=np.float64)
            if weights.shape != correct.shape or (weights < 0).any():
                raise ValueError(
                    f"sample_weight must hold one non-negative weight per example ({correct.shape[0]}), "
                    f"got shape {weights.shape}."
                )
        total = float((correct * weights).sum())
        if not normalize:
            return {"accuracy": total}
        if weights.sum() == 0:
            raise ValueError("accuracy is undefined when all sample weights are zero.")
        return {"accuracy": total / float(weights.sum())}

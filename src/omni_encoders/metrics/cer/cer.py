# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Character error rate over a corpus, computed with jiwer."""

import datasets
import evaluate
import jiwer


_DESCRIPTION = """
Character error rate (CER) over the whole corpus: the minimum number of character substitutions S, deletions D and
insertions I that turn the predictions into the references, divided by the number of reference characters
N = S + D + C (C: correct characters), summed over all examples:
    CER = (S + D + I) / N
Every character counts, spaces inside a string included; surrounding whitespace is stripped. CER can exceed 1 when
there are many insertions.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): transcriptions to score.
    references (`list` of `str`): reference transcriptions; at least one must be non-empty.
Returns:
    `dict` with `cer` (`float`).
Example:
    >>> cer = omni_encoders.metrics.load("cer")
    >>> cer.compute(predictions=["314", "1"], references=["3145", "15"])
    {'cer': 0.3333333333333333}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://en.wikipedia.org/wiki/Word_error_rate"],
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("cer needs at least one prediction, got none.")
        counts = jiwer.process_characters(list(references), list(predictions))
        num_reference_chars = counts.substitutions + counts.deletions + counts.hits
        if num_reference_chars == 0:
            raise ValueError("cer is undefined when every reference is empty (no reference characters).")
        errors = counts.substitutions + counts.deletions + counts.insertions
        return {"cer": errors / num_reference_chars}

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Word error rate over a corpus, computed with jiwer."""

import datasets
import evaluate
import jiwer


_DESCRIPTION = """
Word error rate (WER) over the whole corpus: the minimum number of word substitutions S, deletions D and insertions I
that turn the predictions into the references, divided by the number of reference words N = S + D + C (C: correct
words), summed over all examples (so long utterances weigh more than short ones, as in jiwer and evaluate's `wer`):
    WER = (S + D + I) / N
Words are split on whitespace; surrounding whitespace is stripped. WER can exceed 1 when there are many insertions.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): transcriptions to score.
    references (`list` of `str`): reference transcriptions; at least one must contain a word.
Returns:
    `dict` with `wer` (`float`).
Example:
    >>> wer = omni_encoders.metrics.load("wer")
    >>> wer.compute(predictions=["three one", "four five"], references=["three one four", "four"])
    {'wer': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WER(evaluate.Metric):
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
            raise ValueError("wer needs at least one prediction, got none.")
        counts = jiwer.process_words(list(references), list(predictions))
        num_reference_words = counts.substitutions + counts.deletions + counts.hits
        if num_reference_words == 0:
            raise ValueError("wer is undefined when every reference is empty (no reference words to count errors on).")
        errors = counts.substitutions + counts.deletions + counts.insertions
        return {"wer": errors / num_reference_words}

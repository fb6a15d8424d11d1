# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Metric modules for 🤗 evaluate that ship with the package.

`evaluate.load("cer")` fetches the metric script from the Hugging Face Hub, which is unreachable offline. The modules
here are ordinary evaluate metric scripts inside the package, loaded from their absolute file path, so evaluate takes
its local-script branch and never touches the network:

    from omni_encoders import metrics

    cer = metrics.load("cer")
    cer.compute(predictions=["3 1 4"], references=["3 1 5"])  # {"cer": 0.2}

Every module returns a dict (`{"accuracy": ...}`, `{"wer": ...}`, `{"cer": ...}`, `{"eer": ..., "threshold": ...}`),
so `compute(...)` can be returned as is from a `Trainer`'s `compute_metrics` and modules combine with
`evaluate.combine`.
"""

from __future__ import annotations

from pathlib import Path


METRICS = ("accuracy", "cer", "eer", "wer")


def metric_path(name: str) -> str:
    """Absolute path of the evaluate script of metric `name` (one of `METRICS`).

    Pass it to `evaluate.load` yourself if you need evaluate's other arguments; a path to an existing `.py` file is
    always loaded locally (a relative directory name that does not exist would be looked up on the Hub instead).
    """
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}; the package ships {list(METRICS)}.")
    path = Path(__file__).resolve().parent / name / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"The script of metric {name!r} is missing from the installed package: {path}")
    return str(path)


def load(name: str, **kwargs):
    """Load metric `name` (one of `METRICS`) with `evaluate.load`, from the script inside this package.

    Keyword arguments go to `evaluate.load` (e.g. `experiment_id`, `num_process`/`process_id` for distributed
    evaluation, `keep_in_memory`). Returns an `evaluate.EvaluationModule`.
    """
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["METRICS", "load", "metric_path"]

# Copyright 2026 The omni-encoders developers. Licensed under the Apache License, Version 2.0.
"""Run every benchmark suite with the same options, one after the other, in one process.

    python benchmarks/run_all.py --threads 1 --json results.jsonl            # the README's tables
    python benchmarks/run_all.py --scaling                                   # + every scaling sweep
    python benchmarks/run_all.py --suites vision audio --dtype fp32
    python benchmarks/run_all.py --threads 2 --dtypes fp32 bf16 --json results.jsonl  # every suite in both dtypes

The common options (`--dtype`, `--device`, `--batch-size`, `--attn`, `--repeat`, `--warmup`, `--threads`,
`--scaling`, `--json`) are passed to every suite; each suite keeps its own size default (video: small width, see
`bench_video.py`) unless `--size` is given. Suite-specific options: run the suite's own script.
"""

from __future__ import annotations

import argparse
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_audio  # noqa: E402
import bench_audio_decoder  # noqa: E402
import bench_video  # noqa: E402
import bench_vision  # noqa: E402
from harness import add_common_arguments  # noqa: E402


SUITES = {
    "vision": bench_vision.main,
    "video": bench_video.main,
    "audio": bench_audio.main,
    "audio_decoder": bench_audio_decoder.main,
}


def main(argv=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--suites", nargs="+", choices=list(SUITES), default=list(SUITES))
    parser.add_argument(
        "--dtypes", nargs="+", choices=["auto", "fp32", "bf16", "fp16"], default=None,
        help="run every suite once per dtype (replaces --dtype)",
    )  # fmt: skip
    parser.set_defaults(size=None, repeat=None, warmup=None)
    args, _ = parser.parse_known_args(argv)
    forwarded = [arg for arg in (argv if argv is not None else sys.argv[1:])]
    # Drop `--suites ...` and `--dtypes ...` from what the suites see.
    for option in ("--suites", "--dtypes"):
        if option in forwarded:
            start = forwarded.index(option)
            end = start + 1
            while end < len(forwarded) and not forwarded[end].startswith("--"):
                end += 1
            forwarded = forwarded[:start] + forwarded[end:]
    rows = []
    for dtype in args.dtypes or [None]:
        for name in args.suites:
            print(f"\n{'=' * 30} {name}{f' ({dtype})' if dtype else ''} {'=' * 30}", flush=True)
            rows += SUITES[name](forwarded + (["--dtype", dtype] if dtype else [])) or []
    return rows


if __name__ == "__main__":
    main()

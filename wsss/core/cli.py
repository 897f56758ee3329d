"""CLI plumbing shared by `python -m icd` and `python -m deeplab`: JSON artifacts, the GPU option, running a verb.

A rule's knobs arrive as one JSON object (`--options`); user errors print one clear line, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from wsss.core.devices import assign_local_gpus
from wsss.core.errors import ICDError
from wsss.core.files import write_text


def write_json(path: str | Path, payload: dict) -> None:
    """Write a step's JSON record atomically, keys sorted so reruns give identical bytes."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> dict:
    """A JSON artifact a step reads (dataset report, thresholds, evaluations)."""
    return json.loads(Path(path).read_text())


def add_gpus(verb: argparse.ArgumentParser) -> None:
    """The GPU count a step claims on a local node (its rule's `resources: gpu`); see wsss.core.devices."""
    verb.add_argument(
        "--gpus",
        type=int,
        help="claim this many free GPUs unless CUDA_VISIBLE_DEVICES is set "
        "(0: CPU only); without it, use whatever devices are visible",
    )


def run_verb(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse, log to stderr, claim the verb's GPUs (`--gpus`), run it; a user error is one line and exit 2.

    Shared by every `python -m <package>` CLI of the pipeline.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "gpus", None) is not None:
            assign_local_gpus(args.gpus)
        args.run(args)
    except ICDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

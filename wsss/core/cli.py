"""CLI plumbing shared by `python -m icd` and `python -m deeplab`: verbs declared beside their handlers,
JSON artifacts, the GPU option, running a verb.

A verb is declared in decorators on top of the function that runs it, so its arguments are read together
with what it does (click's style; the arguments reach add_argument, and --help, in the order written):

    verbs = Verbs(prog="icd", description="...")

    @verbs.verb("train-icd", help="train the ICD network")  # the verb: its name (its rule's) and --help line
    @DATASET                                                # an argument several verbs share
    @arg("--weights", required=True, help="pretrained backbone weights")  # add_argument's parameters
    @options('JSON object {"model": ..., "icd": ...}')      # --options: the step's knobs, as JSON
    @GPUS
    def _train_icd(args: argparse.Namespace) -> None:       # runs with the parsed namespace
        from icd.train import train_icd                     # heavy imports inside: the parser stays light
        ...

`arguments(arg(...), ...)` bundles several into one reusable decorator (icd's `@SHARDED`);
`verbs.build_parser()` makes one argparse sub-command per verb, in declaration order, whose parsed
namespace's `run` is the handler; `run_verb` parses and runs it. A rule's knobs arrive as one JSON object
(`--options`); user errors print one clear line, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss.core.allocator import retain_freed_memory
from wsss.core.devices import assign_local_gpus
from wsss.core.errors import ICDError
from wsss.core.files import write_text

Handler = Callable[[argparse.Namespace], None]


def write_json(path: str | Path, payload: dict) -> None:
    """Write a step's JSON record atomically, keys sorted so reruns give identical bytes."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> dict:
    """A JSON artifact a step reads (dataset report, thresholds, evaluations)."""
    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class Arguments:
    """`add_argument` calls (flags, keyword arguments) of a verb; as a decorator, they go to its handler."""

    calls: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]

    def __call__(self, run: Handler) -> Handler:
        # Decorators apply bottom-up: putting these before those already attached keeps the written order.
        run.verb_arguments = self.calls + getattr(run, "verb_arguments", ())  # type: ignore[attr-defined]
        return run


def arg(*flags: str, **settings: Any) -> Arguments:
    """One argument of a verb, with the parameters of `argparse.ArgumentParser.add_argument`."""
    return Arguments(((flags, settings),))


def arguments(*parts: Arguments) -> Arguments:
    """Several arguments as one decorator, for a set that several verbs take."""
    return Arguments(tuple(call for part in parts for call in part.calls))


def options(help: str) -> Arguments:
    """The step's knobs as one JSON object (`--options`, the config section it uses); `help` says which."""
    return arg("--options", required=True, help=help)


# Arguments verbs of both CLIs take.
DATASET = arg("--dataset", required=True, help="the validated dataset report (dataset.json)")
GPUS = arg(  # the GPU count a step claims on a local node (its rule's `resources: gpu`); see wsss.core.devices
    "--gpus",
    type=int,
    help="claim this many free GPUs unless CUDA_VISIBLE_DEVICES is set "
    "(0: CPU only); without it, use whatever devices are visible",
)


class Verbs:
    """The verbs of one `python -m <package>` CLI, in the order they are declared."""

    def __init__(self, prog: str, description: str) -> None:
        self.prog = prog
        self.description = description
        self.declared: list[tuple[str, str, Handler]] = []

    def verb(self, name: str, *, help: str) -> Callable[[Handler], Handler]:
        """Decorator: the function below runs verb `name`; its `@arg`/`@arguments` decorators are its arguments."""

        def declare(run: Handler) -> Handler:
            self.declared.append((name, help, run))
            return run

        return declare

    def build_parser(self) -> argparse.ArgumentParser:
        """One sub-command per declared verb; the parsed namespace's `run` is the verb's handler."""
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        subparsers = parser.add_subparsers(dest="verb", required=True)
        for name, help_text, run in self.declared:
            command = subparsers.add_parser(name, help=help_text)
            for flags, settings in getattr(run, "verb_arguments", ()):
                command.add_argument(*flags, **settings)
            command.set_defaults(run=run)
        return parser


def run_verb(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse, log to stderr, claim the verb's GPUs (`--gpus`), run it; a user error is one line and exit 2.

    Shared by every `python -m <package>` CLI of the pipeline. Freed memory stays in the process
    (wsss.core.allocator: every step reuses its buffers instead of faulting fresh pages in).
    """
    args = parser.parse_args(argv)
    retain_freed_memory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "gpus", None) is not None:
            assign_local_gpus(args.gpus)
        args.run(args)
    except ICDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

"""`python -m deeplab <verb>`: the segmentation stage's steps, as the Snakemake rules call them.

Like `python -m icd`: knobs arrive as one JSON object (`--options`), user errors print one line
and exit 2, GPU steps claim their GPUs (`--gpus`, see wsss.core.devices) before CUDA starts.

Each verb is declared in decorators right on top of its handler, so its arguments are read together with
what it does: `@verbs.verb(name, help=...)`, then one `@arg(...)` (add_argument's parameters) per argument,
in --help order; `@options(help)` is `--options`, and DATASET and GPUS are arguments several verbs share
(see wsss.core.cli). A verb's name is that of the Snakemake rule running it; `deeplab --help` lists the
verbs in the order they are declared here.
"""

from __future__ import annotations

import argparse
import json
import logging

from wsss.core.cli import DATASET, GPUS, Verbs, arg, options, read_json, run_verb, write_json
from wsss.core.errors import ICDError

log = logging.getLogger("deeplab")

verbs = Verbs(prog="deeplab", description=__doc__.splitlines()[0])


@verbs.verb("pretrain-resnet101", help="train the ResNet101 stand-in for ImageNet weights on image-level labels")
@DATASET
@options('JSON object: the resnet_pretrain section, "width", "seed" and "normalisation"')
@arg("--out", required=True, help="torchvision-format resnet101 state dict (.pth)")
@arg("--metrics", required=True, help="JSON: settings, per-interval loss and accuracy, time")
@GPUS
def _pretrain(args: argparse.Namespace) -> None:
    from deeplab.classifier import train_classifier

    metrics = train_classifier(args.out, dataset=read_json(args.dataset), **json.loads(args.options))
    write_json(args.metrics, metrics)
    log.info("final loss %.4f, rank accuracy %.3f", metrics["final_loss"], metrics["final_rank_accuracy"])


@verbs.verb("train-deeplab", help="train DeepLab on seeds (resumes from OUT_DIR/checkpoint.pt)")
@DATASET
@arg("--labels-root", help="folder of <id>.png seeds; omit to train on the ground-truth masks")
@arg("--weights", help="backbone weights (ImageNet or the synthetic stand-in); omit for random init")
@arg("--backbone", required=True, choices=["vgg16", "resnet101"])
@options('JSON object {"deeplab": ..., "model": ..., "normalisation": <of the weights>, "seed": ...}')
@arg("--out-dir", required=True, help="folder for checkpoint.pt, model.pt, history.json")
@GPUS
def _train(args: argparse.Namespace) -> None:
    from deeplab.train import train_deeplab

    result = train_deeplab(
        args.out_dir,
        dataset=read_json(args.dataset),
        labels_root=args.labels_root,
        weights=args.weights,
        backbone=args.backbone,
        **json.loads(args.options),
    )
    log.info("final loss %.4f", result["history"][-1]["loss"])


@verbs.verb("predict-deeplab", help="full-resolution predictions of one split")
@arg("--dataset", required=True)
@arg("--model", required=True, help="model.pt written by `deeplab train-deeplab`")
@arg("--split", required=True, help="a role (eval, test, train) or a split name")
@options('JSON object {"scales", "flip", "crf": {...} or null}')
@arg("--out-dir", required=True, help="raw/ and crf/, the server layout (--server-tar) or <id>.png (--as-seeds)")
@arg(
    "--test-out-dir",
    help="then predict the test split too, in the VOC server's layout, into this folder: the eval and test "
    "predictions of one model in one process (the workflow's predict_deeplab), not two",
)
@arg("--server-tar", help="write the VOC server layout and pack it into this tar (--test-out-dir's when given)")
@arg(
    "--as-seeds",
    action="store_true",
    help="write only the final prediction (after the CRF when it runs) as <id>.png, a seed folder for "
    "`train-deeplab --labels-root`: the training split's labels for a further round",
)
@GPUS
def _predict(args: argparse.Namespace) -> None:
    from deeplab.infer import EVALUATION_LAYOUT, pack_for_server, predict_split

    server_layout = args.server_tar is not None and args.test_out_dir is None  # --split's own predictions
    if args.as_seeds and server_layout:
        raise ICDError("--as-seeds and --server-tar are two layouts of the predictions: give one of them.")
    dataset, options = read_json(args.dataset), json.loads(args.options)
    layout = "server" if server_layout else "seeds" if args.as_seeds else EVALUATION_LAYOUT
    predict_split(args.model, dataset, args.split, args.out_dir, layout=layout, **options)
    if args.test_out_dir is not None:
        predict_split(args.model, dataset, "test", args.test_out_dir, layout="server", **options)
    if args.server_tar is not None:
        server_dir = args.out_dir if server_layout else args.test_out_dir
        log.info("packed %d predictions into %s", pack_for_server(server_dir, args.server_tar), args.server_tar)


@verbs.verb("evaluate-deeplab", help="mIoU and per-class IoU of eval-split predictions")
@arg("--dataset", required=True)
@arg("--predictions", required=True, help="folder holding raw/ (and crf/)")
@arg("--backbone", required=True)
@arg("--seeds", required=True, help="the run: its seed set (gt: ground truth), `<seeds>_round<r>` in round r >= 2")
@arg("--multiscale", action="store_true", help="the predictions averaged several scales or flips")
@arg("--out", required=True, help="JSON record")
def _evaluate(args: argparse.Namespace) -> None:
    from deeplab.evaluate import evaluate_predictions

    dataset = read_json(args.dataset)
    results = evaluate_predictions(dataset, args.predictions)
    write_json(
        args.out,
        {
            "dataset": dataset["source"],
            "backbone": args.backbone,
            "seeds": args.seeds,
            "split": dataset["roles"]["eval"],
            "multiscale": args.multiscale,
            "results": results,
        },
    )
    log.info("mIoU: %s", {name: round(result["miou"], 4) for name, result in results.items()})


@verbs.verb("segmentation-table", help="segmentation.csv, per-class IoU and the Table 7/8 markdown")
@arg("--evaluations", nargs="+", required=True, help="JSON records of `deeplab evaluate-deeplab`")
@arg("--out", required=True, help="segmentation.csv")
@arg("--per-class", required=True, help="CSV of per-class IoU")
@arg("--markdown", required=True, help="Tables 7/8 beside the paper's numbers")
def _table(args: argparse.Namespace) -> None:
    from deeplab.report import write_segmentation_tables

    write_segmentation_tables([read_json(path) for path in args.evaluations], args.out, args.markdown, args.per_class)


@verbs.verb("segmentation-figure", help="Fig. 6 style: images, predictions of several models, ground truth")
@arg("--dataset", required=True)
@arg("--predictions", nargs="+", required=True, help="prediction folders (<id>.png)")
@arg("--titles", nargs="+", required=True, help="a column title per prediction folder")
@arg("--out", required=True, help="PNG")
def _figure(args: argparse.Namespace) -> None:
    from deeplab.report import prediction_figure

    if len(args.titles) != len(args.predictions):
        raise ICDError(
            f"--titles has {len(args.titles)} entries but --predictions {len(args.predictions)}: give one "
            "title per prediction folder."
        )
    prediction_figure(args.out, read_json(args.dataset), dict(zip(args.titles, args.predictions, strict=True)))


def build_parser() -> argparse.ArgumentParser:
    return verbs.build_parser()


def main(argv: list[str] | None = None) -> int:
    return run_verb(build_parser(), argv)

"""`python -m deeplab <verb>`: the segmentation stage's steps, as the Snakemake rules call them.

Like `python -m icd`: knobs arrive as one JSON object (`--options`), user errors print one line
and exit 2, GPU steps claim their GPUs (`--gpus`, see wsss.core.devices) before CUDA starts.
"""

from __future__ import annotations

import argparse
import json
import logging

from wsss.core.cli import add_gpus, read_json, run_verb, write_json
from wsss.core.errors import ICDError

log = logging.getLogger("deeplab")


def _pretrain(args: argparse.Namespace) -> None:
    from deeplab.classifier import train_classifier

    metrics = train_classifier(args.out, dataset=read_json(args.dataset), **json.loads(args.options))
    write_json(args.metrics, metrics)
    log.info("final loss %.4f, rank accuracy %.3f", metrics["final_loss"], metrics["final_rank_accuracy"])


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


def _predict(args: argparse.Namespace) -> None:
    from deeplab.infer import pack_for_server, predict_split

    predict_split(
        args.model,
        read_json(args.dataset),
        args.split,
        args.out_dir,
        server_layout=args.server_tar is not None,
        **json.loads(args.options),
    )
    if args.server_tar is not None:
        log.info("packed %d predictions into %s", pack_for_server(args.out_dir, args.server_tar), args.server_tar)


def _evaluate(args: argparse.Namespace) -> None:
    from deeplab.evaluate import evaluate_predictions

    dataset = read_json(args.dataset)
    results = evaluate_predictions(dataset, args.predictions)
    write_json(
        args.out,
        {
            "backbone": args.backbone,
            "seeds": args.seeds,
            "split": dataset["roles"]["eval"],
            "multiscale": args.multiscale,
            "results": results,
        },
    )
    log.info("mIoU: %s", {name: round(result["miou"], 4) for name, result in results.items()})


def _table(args: argparse.Namespace) -> None:
    from deeplab.report import write_segmentation_tables

    write_segmentation_tables([read_json(path) for path in args.evaluations], args.out, args.markdown, args.per_class)


def _figure(args: argparse.Namespace) -> None:
    from deeplab.report import prediction_figure

    if len(args.titles) != len(args.predictions):
        raise ICDError(
            f"--titles has {len(args.titles)} entries but --predictions {len(args.predictions)}: give one "
            "title per prediction folder."
        )
    prediction_figure(args.out, read_json(args.dataset), dict(zip(args.titles, args.predictions, strict=True)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deeplab", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    verb = verbs.add_parser(
        "pretrain-resnet101", help="train the ResNet101 stand-in for ImageNet weights on image-level labels"
    )
    verb.add_argument("--dataset", required=True, help="the validated dataset report (dataset.json)")
    verb.add_argument(
        "--options", required=True, help='JSON object: the resnet_pretrain section, "width", "seed" and "normalisation"'
    )
    verb.add_argument("--out", required=True, help="torchvision-format resnet101 state dict (.pth)")
    verb.add_argument("--metrics", required=True, help="JSON: settings, per-interval loss and accuracy, time")
    verb.set_defaults(run=_pretrain)
    add_gpus(verb)

    verb = verbs.add_parser("train-deeplab", help="train DeepLab on seeds (resumes from OUT_DIR/checkpoint.pt)")
    verb.add_argument("--dataset", required=True, help="the validated dataset report (dataset.json)")
    verb.add_argument("--labels-root", help="folder of <id>.png seeds; omit to train on the ground-truth masks")
    verb.add_argument("--weights", help="backbone weights (ImageNet or the synthetic stand-in); omit for random init")
    verb.add_argument("--backbone", required=True, choices=["vgg16", "resnet101"])
    verb.add_argument(
        "--options",
        required=True,
        help='JSON object {"deeplab": ..., "model": ..., "normalisation": <of the weights>, "seed": ...}',
    )
    verb.add_argument("--out-dir", required=True, help="folder for checkpoint.pt, model.pt, history.json")
    verb.set_defaults(run=_train)
    add_gpus(verb)

    verb = verbs.add_parser("predict-deeplab", help="full-resolution predictions of one split")
    verb.add_argument("--dataset", required=True)
    verb.add_argument("--model", required=True, help="model.pt written by `deeplab train-deeplab`")
    verb.add_argument("--split", required=True, help="a role (eval, test) or a split name")
    verb.add_argument("--options", required=True, help='JSON object {"scales", "flip", "crf": {...} or null}')
    verb.add_argument("--out-dir", required=True, help="raw/ and crf/ folders, or the server layout with --server-tar")
    verb.add_argument("--server-tar", help="write the VOC server layout and pack it into this tar")
    verb.set_defaults(run=_predict)
    add_gpus(verb)

    verb = verbs.add_parser("evaluate-deeplab", help="mIoU and per-class IoU of eval-split predictions")
    verb.add_argument("--dataset", required=True)
    verb.add_argument("--predictions", required=True, help="folder holding raw/ (and crf/)")
    verb.add_argument("--backbone", required=True)
    verb.add_argument("--seeds", required=True, help="the seed set the model was trained on (gt: ground truth)")
    verb.add_argument("--multiscale", action="store_true", help="the predictions averaged several scales or flips")
    verb.add_argument("--out", required=True, help="JSON record")
    verb.set_defaults(run=_evaluate)

    verb = verbs.add_parser("segmentation-table", help="segmentation.csv, per-class IoU and the Table 7/8 markdown")
    verb.add_argument("--evaluations", nargs="+", required=True, help="JSON records of `deeplab evaluate-deeplab`")
    verb.add_argument("--out", required=True, help="segmentation.csv")
    verb.add_argument("--per-class", required=True, help="CSV of per-class IoU")
    verb.add_argument("--markdown", required=True, help="Tables 7/8 beside the paper's numbers")
    verb.set_defaults(run=_table)

    verb = verbs.add_parser(
        "segmentation-figure", help="Fig. 6 style: images, predictions of several models, ground truth"
    )
    verb.add_argument("--dataset", required=True)
    verb.add_argument("--predictions", nargs="+", required=True, help="prediction folders (<id>.png)")
    verb.add_argument("--titles", nargs="+", required=True, help="a column title per prediction folder")
    verb.add_argument("--out", required=True, help="PNG")
    verb.set_defaults(run=_figure)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_verb(build_parser(), argv)

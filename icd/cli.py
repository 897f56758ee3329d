"""`python -m icd <verb>`: the small CLI the Snakemake rules call, one verb per pipeline step.

Knobs arrive as one JSON object (`--options`), the config section the step uses, so a rule passes
exactly the parameters that should trigger its rerun. User errors print one clear line, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from wsss.core.cli import add_gpus, read_json, run_verb, write_json
from wsss.core.files import write_csv, write_text

log = logging.getLogger("icd")


def _synthesize(args: argparse.Namespace) -> None:
    from wsss.data.synthetic import generate_dataset

    stats = generate_dataset(Path(args.out), **json.loads(args.options))
    write_json(args.stats, stats)


def _validate_data(args: argparse.Namespace) -> None:
    from wsss.data.voc import SplitRoles, VOCPaths, validate_dataset

    if args.weights:  # a user's weights file of the wrong shape fails here, before any work
        from wsss.nets.backbones import VGG16DeepLab, load_vgg16_weights

        backbone = json.loads(args.backbone)
        load_vgg16_weights(VGG16DeepLab(width=backbone["width"], batch_norm=backbone["batch_norm"]), args.weights)
    paths = VOCPaths.create(args.voc_root, args.sbd_root, args.saliency_root)
    roles = SplitRoles(train=args.train_split, eval=args.eval_split, test=args.test_split)
    report = validate_dataset(paths, roles, workers=args.workers)
    write_json(args.out, report)
    log.info("dataset ok: %s", report["counts"])


def _accept_data(args: argparse.Namespace) -> None:
    """The checked report becomes the one the pipeline reads. A step apart from the check, because Snakemake
    deletes a job's outputs when it reruns or fails: a rejected dataset then costs only the candidate."""
    write_text(args.out, Path(args.candidate).read_text())


def _pretrain(args: argparse.Namespace) -> None:
    from icd.pretrain import pretrain_backbone

    metrics = pretrain_backbone(Path(args.out), **json.loads(args.options))
    write_json(args.metrics, metrics)


def _premise(args: argparse.Namespace) -> None:
    from icd.pretrain import measure_premise

    options = json.loads(args.options)
    report = {
        "pretrained": measure_premise(args.weights, Path(args.data_root), **options),
        "random_init": measure_premise(None, Path(args.data_root), **options),
    }
    write_json(args.out, report)


def _superpixels(args: argparse.Namespace) -> None:
    from icd.superpixels import compute_superpixel_shard
    from wsss.core.shards import shard_ids

    dataset = read_json(args.dataset)
    ids = shard_ids(dataset["splits"][dataset["roles"]["train"]], args.shard, args.shards)
    stats = compute_superpixel_shard(
        args.out, ids, voc_root=dataset["voc_root"], weights=args.weights, **json.loads(args.options)
    )
    log.info("shard %d/%d: %s", args.shard, args.shards, stats)


def _train_icd(args: argparse.Namespace) -> None:
    from icd.train import train_icd

    train_icd(
        args.out_dir,
        dataset=read_json(args.dataset),
        superpixel_shards=args.superpixels,
        weights=args.weights,
        **json.loads(args.options),
    )


def _scores(args: argparse.Namespace) -> None:
    from icd.scores import infer_scores_shard
    from wsss.core.shards import shard_ids

    dataset = read_json(args.dataset)
    ids = shard_ids(dataset["splits"][dataset["roles"]["train"]], args.shard, args.shards)
    infer_scores_shard(
        args.out,
        ids,
        dataset=dataset,
        model_path=args.model,
        superpixel_shards=args.superpixels,
        **json.loads(args.options),
    )


def _export_backbone(args: argparse.Namespace) -> None:
    from icd.scores import export_backbone

    export_backbone(args.model, args.out, **json.loads(args.options))


def _score_ap(args: argparse.Namespace) -> None:
    from icd.scores import score_map_average_precision

    table = score_map_average_precision(
        read_json(args.dataset), args.scores, canvas=args.inference_size, ablation_shards=args.ablation_scores
    )
    write_csv(args.out, [{"scores": name, **row} for name, row in table.items()])
    log.info("pixel mAP: %s", {name: round(row["mAP"], 4) for name, row in table.items()})


def _seed_sweep(args: argparse.Namespace) -> None:
    from icd.seed_quality import threshold_sweep

    rows, best = threshold_sweep(read_json(args.dataset), args.scores, args.superpixels, **json.loads(args.options))
    write_csv(args.out_table, rows)
    write_json(args.out_choice, best)
    log.info("best background threshold (picked with ground truth): %s", best)


def _seeds(args: argparse.Namespace) -> None:
    from icd.seeds import generate_seed_shard
    from wsss.core.shards import shard_ids

    dataset = read_json(args.dataset)
    ids = shard_ids(dataset["splits"][dataset["roles"]["train"]], args.shard, args.shards)
    generate_seed_shard(
        args.out,
        ids,
        dataset=dataset,
        variants=args.variants,
        score_shards=args.scores,
        superpixel_shards=args.superpixels,
        ablation_shards=args.ablation_scores,
        cam_backgrounds=read_json(args.cam_background) if args.cam_background else None,
        **json.loads(args.options),
    )


def _collect_seeds(args: argparse.Namespace) -> None:
    from icd.seeds import collect_seed_shards

    collect_seed_shards(args.shards, args.out_root, args.variants)


def _seed_table(args: argparse.Namespace) -> None:
    import pandas as pd

    from icd.seed_quality import CAM_SWEEP, evaluate_seed_folders
    from icd.seeds import variant_thresholds

    thresholds = variant_thresholds(args.variants, args.threshold, read_json(args.cam_background))
    rows, per_class = evaluate_seed_folders(read_json(args.dataset), args.seeds_root, thresholds)
    sweep = pd.read_csv(args.sweep).to_dict("records")
    write_csv(args.out, [row for row in sweep if row["table"] != CAM_SWEEP] + rows)
    write_csv(args.per_class, [{"variant": variant, **ious} for variant, ious in per_class.items()])


def _seed_figure(args: argparse.Namespace) -> None:
    from icd.figures import seed_figure

    seed_figure(args.out, read_json(args.dataset), args.scores, args.seeds_root, canvas=args.canvas)


def _training_curves(args: argparse.Namespace) -> None:
    from wsss.plots import training_curves

    training_curves(args.out, json.loads(Path(args.history).read_text()))


def _seed_iou_chart(args: argparse.Namespace) -> None:
    import pandas as pd

    from wsss.plots import per_class_iou_chart

    per_class = pd.read_csv(args.per_class).set_index("variant")
    per_class_iou_chart(args.out, {variant: row.to_dict() for variant, row in per_class.iterrows()})


def add_ablation_scores(verb: argparse.ArgumentParser) -> None:
    verb.add_argument(
        "--ablation-scores",
        nargs="+",
        help="score shards of a network trained without top-down "
        "adaptation: they add Table 3's bottom-up and refined rows of that network (`*_no_td`)",
    )


def _sharded_verb(verbs, name: str, run, help_text: str) -> argparse.ArgumentParser:
    """A verb working on shard --shard of --shards of the training split, writing one .npz shard."""
    verb = verbs.add_parser(name, help=help_text)
    verb.add_argument("--dataset", required=True, help="the validated dataset report (dataset.json)")
    verb.add_argument("--shard", type=int, required=True)
    verb.add_argument("--shards", type=int, required=True)
    verb.add_argument("--options", required=True, help="JSON object of the step's keyword arguments")
    verb.add_argument("--out", required=True, help="the shard (.npz)")
    verb.set_defaults(run=run)
    return verb


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icd", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    verb = verbs.add_parser("synthesize-data", help="write the synthetic dataset in the VOC layout")
    verb.add_argument("--out", required=True, help="the VOC2012 folder to create")
    verb.add_argument("--stats", required=True, help="JSON file for the dataset statistics")
    verb.add_argument("--options", required=True, help="JSON object: the config's `synthetic` section")
    verb.set_defaults(run=_synthesize)

    verb = verbs.add_parser("validate-data", help="check the dataset up front and write its report")
    verb.add_argument("--voc-root", required=True)
    verb.add_argument("--sbd-root")
    verb.add_argument("--saliency-root")
    verb.add_argument("--train-split", default="train_aug")
    verb.add_argument("--eval-split", default="val")
    verb.add_argument("--test-split", default="test")
    verb.add_argument("--workers", type=int, default=1)
    verb.add_argument("--weights", help="the user's pretrained backbone weights, checked against --backbone")
    verb.add_argument("--backbone", default="{}", help='JSON {"width", "batch_norm"} the weights must fit')
    verb.add_argument("--out", required=True, help="JSON report: splits, labels, counts")
    verb.set_defaults(run=_validate_data)

    verb = verbs.add_parser("accept-data", help="make a checked dataset report (validate-data's) the pipeline's")
    verb.add_argument("--candidate", required=True, help="the report validate-data wrote")
    verb.add_argument("--out", required=True, help="the accepted report (dataset.json)")
    verb.set_defaults(run=_accept_data)

    verb = verbs.add_parser("pretrain-backbone", help="pretrain the backbone on the synthetic pretext task")
    verb.add_argument("--out", required=True, help="backbone weights (.pth)")
    verb.add_argument("--metrics", required=True, help="JSON file for the training metrics")
    verb.add_argument("--options", required=True, help="JSON object of pretrain_backbone's arguments")
    verb.set_defaults(run=_pretrain)

    verb = verbs.add_parser("measure-premise", help="measure whether backbone features separate fg from bg")
    verb.add_argument("--weights", required=True)
    verb.add_argument("--data-root", required=True)
    verb.add_argument("--options", required=True, help="JSON object of measure_premise's arguments")
    verb.add_argument("--out", required=True)
    verb.set_defaults(run=_premise)

    verb = _sharded_verb(
        verbs, "superpixels", _superpixels, "Felzenszwalb + feature merging for one shard of the training split"
    )
    verb.add_argument("--weights", required=True, help="backbone weights the features come from")
    add_gpus(verb)

    verb = verbs.add_parser("train-icd", help="train the ICD network (resumes from OUT_DIR/checkpoint.pt)")
    verb.add_argument("--dataset", required=True, help="the validated dataset report (dataset.json)")
    verb.add_argument("--superpixels", nargs="+", required=True, help="superpixel shards (.npz)")
    verb.add_argument("--weights", required=True, help="pretrained backbone weights")
    verb.add_argument(
        "--options",
        required=True,
        help='JSON object {"model": ..., "icd": ..., "seed": ..., "normalisation": <of the weights>}',
    )
    verb.add_argument("--out-dir", required=True, help="folder for checkpoint.pt, model.pt, history.json")
    verb.set_defaults(run=_train_icd)
    add_gpus(verb)

    verb = verbs.add_parser("seed-sweep", help="Table 2 thresholds and the CAM baselines' background sweeps")
    verb.add_argument("--dataset", required=True)
    verb.add_argument("--scores", nargs="+", required=True, help="score shards (.npz)")
    verb.add_argument("--superpixels", nargs="+", required=True, help="superpixel shards (.npz), for cam_sp")
    verb.add_argument("--options", required=True, help='JSON {"canvas", "thresholds", "cam_backgrounds"}')
    verb.add_argument("--out-table", required=True, help="CSV of every (variant, threshold) row")
    verb.add_argument(
        "--out-choice", required=True, help='JSON {"cam", "cam_sp"}: each one\'s best background threshold'
    )
    verb.set_defaults(run=_seed_sweep)

    verb = _sharded_verb(
        verbs, "make-seeds", _seeds, "seed PNGs of one family of seed sets for one shard of the training split"
    )
    verb.add_argument("--variants", nargs="+", required=True, help="the seed sets to write (one family's)")
    verb.add_argument("--scores", nargs="+", required=True, help="score shards (.npz)")
    verb.add_argument("--superpixels", nargs="+", help="superpixel shards (.npz), for cam_sp")
    add_ablation_scores(verb)
    verb.add_argument("--cam-background", help="JSON with the CAM baselines' background thresholds, for cam*")

    verb = verbs.add_parser("collect-seeds", help="gather shard folders into seeds/<variant>/ folders")
    verb.add_argument("--shards", nargs="+", required=True, help="shard folders written by `icd make-seeds`")
    verb.add_argument("--variants", nargs="+", required=True)
    verb.add_argument("--out-root", required=True)
    verb.set_defaults(run=_collect_seeds)

    verb = verbs.add_parser("seed-table", help="seeds.csv (Tables 2 and 3) and per-class IoU of the seeds")
    verb.add_argument("--dataset", required=True)
    verb.add_argument("--seeds-root", required=True)
    verb.add_argument("--variants", nargs="+", required=True)
    verb.add_argument("--threshold", type=float, required=True, help="seeds.threshold the ICD seeds used")
    verb.add_argument("--cam-background", required=True, help="JSON with the CAM baselines' background thresholds")
    verb.add_argument("--sweep", required=True, help="CSV written by seed-sweep")
    verb.add_argument("--out", required=True)
    verb.add_argument("--per-class", required=True)
    verb.set_defaults(run=_seed_table)

    verb = verbs.add_parser("seed-figure", help="the paper's Fig. 4: CAM vs ICD scores and seeds")
    verb.add_argument("--dataset", required=True)
    verb.add_argument("--scores", nargs="+", required=True, help="score shards (.npz)")
    verb.add_argument("--seeds-root", required=True, help="folder holding cam/, cam_crf/, icd/ and icd_crf/ seeds")
    verb.add_argument("--canvas", type=int, required=True, help="seeds.inference_size")
    verb.add_argument("--out", required=True, help="PNG")
    verb.set_defaults(run=_seed_figure)

    verb = verbs.add_parser("training-curves", help="plot ICD training: losses, lr, sign flips per epoch")
    verb.add_argument("--history", required=True, help="history.json written by train-icd")
    verb.add_argument("--out", required=True, help="PNG")
    verb.set_defaults(run=_training_curves)

    verb = verbs.add_parser("seed-iou-chart", help="bar chart of the seeds' per-class IoU")
    verb.add_argument("--per-class", required=True, help="seeds_per_class.csv written by seed-table")
    verb.add_argument("--out", required=True, help="PNG")
    verb.set_defaults(run=_seed_iou_chart)

    verb = _sharded_verb(verbs, "infer-scores", _scores, "CAM / ICD score maps of one shard of the training split")
    verb.add_argument("--model", required=True, help="the trained ICD model (model.pt)")
    verb.add_argument("--superpixels", nargs="+", required=True, help="superpixel shards (.npz)")
    add_gpus(verb)

    verb = verbs.add_parser("score-map-ap", help="Table 1: pixel-level AP of each score map")
    verb.add_argument("--dataset", required=True)
    verb.add_argument("--scores", nargs="+", required=True, help="score shards (.npz)")
    verb.add_argument("--inference-size", type=int, required=True)
    add_ablation_scores(verb)
    verb.add_argument("--out", required=True, help="CSV table")
    verb.set_defaults(run=_score_ap)

    verb = verbs.add_parser("export-icd-backbone", help="the trained ICD network's backbone as a weights file")
    verb.add_argument("--model", required=True, help="the trained ICD model (model.pt)")
    verb.add_argument(
        "--options",
        required=True,
        help='JSON object {"model": ..., "icd": ..., "normalisation": <the one model.pt records>}',
    )
    verb.add_argument("--out", required=True, help="backbone weights (.pth), loadable as deeplab.weights.vgg16")
    verb.set_defaults(run=_export_backbone)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_verb(build_parser(), argv)

"""`python -m icd <verb>`: the small CLI the Snakemake rules call, one verb per pipeline step.

Knobs arrive as one JSON object (`--options`), the config section the step uses, so a rule passes
exactly the parameters that should trigger its rerun. User errors print one clear line, no traceback.

Each verb is declared in decorators right on top of its handler, so its arguments are read together with
what it does: `@verbs.verb(name, help=...)`, then one `@arg(...)` (add_argument's parameters) per argument,
in --help order; `@options(help)` is `--options`, and DATASET, GPUS, SHARDED and ABLATION_SCORES are
arguments several verbs share (see wsss.core.cli). A verb's name is that of the Snakemake rule running it;
`icd --help` lists the verbs in the order they are declared here.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path

from icd.networks import PRIMARY, suffix_of
from wsss.core.cli import DATASET, GPUS, Verbs, arg, arguments, options, read_json, run_verb, write_json
from wsss.core.files import write_csv, write_text

log = logging.getLogger("icd")

verbs = Verbs(prog="icd", description=__doc__.splitlines()[0])

# A sharded verb works on shard --shard of --shards of the training split and writes one .npz shard.
SHARDED = arguments(
    DATASET,
    arg("--shard", type=int, required=True),
    arg("--shards", type=int, required=True),
    options("JSON object of the step's keyword arguments"),
    arg("--out", required=True, help="the shard (.npz)"),
)


def _training_shard(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """A sharded verb's dataset report and the image ids of its shard of the training split."""
    from wsss.core.shards import shard_ids

    dataset = read_json(args.dataset)
    return dataset, shard_ids(dataset["splits"][dataset["roles"]["train"]], args.shard, args.shards)


def _with_canvas(options: dict, key: str, dataset: dict) -> dict:
    """`options` with its canvas setting `key` derived from the dataset's largest image where the config leaves it
    null (wsss.data.canvas)."""
    from wsss.data.canvas import canvas_size

    return {**options, key: canvas_size(options[key], dataset)}


def _run_on_training_shard(
    args: argparse.Namespace, worker: Callable[..., object], canvas_key: str, **keywords: object
) -> None:
    """A sharded verb's work: `worker(--out, its shard's ids, dataset=<the report>, **keywords, **--options)`, the
    options' canvas (`canvas_key`) resolved."""
    dataset, ids = _training_shard(args)
    worker(args.out, ids, dataset=dataset, **keywords, **_with_canvas(json.loads(args.options), canvas_key, dataset))


@verbs.verb("synthesize-data", help="write the synthetic dataset in the VOC layout")
@arg("--out", required=True, help="the VOC2012 folder to create")
@arg("--stats", required=True, help="JSON file for the dataset statistics")
@options("JSON object: the config's `synthetic` section")
def _synthesize(args: argparse.Namespace) -> None:
    from wsss.data.synthetic import generate_dataset

    write_json(args.stats, generate_dataset(Path(args.out), **json.loads(args.options)))


@verbs.verb("convert-sbd", help="SBD as downloaded (.mat maps) as SegmentationClassAug PNGs and train_aug.txt")
@arg("--sbd-root", required=True, help="SBD's benchmark_RELEASE/dataset folder (or benchmark_RELEASE)")
@arg("--voc-root", required=True, help="the VOC2012 folder: its train and val lists, its train masks")
@arg("--workers", type=int, default=1)
@arg("--out", required=True, help="the folder to create, read as the pipeline's sbd_root")
def _convert_sbd(args: argparse.Namespace) -> None:
    from wsss.data.sbd import convert_sbd

    log.info("SBD converted: %s", convert_sbd(args.sbd_root, args.voc_root, args.out, workers=args.workers))


@verbs.verb("convert-coco", help="MS-COCO 2014 as downloaded in the VOC layout: image links, XML labels, class maps")
@arg("--coco-root", required=True, help="the folder holding train2014/, val2014/ and annotations/")
@arg("--workers", type=int, default=1)
@arg("--out", required=True, help="the folder to create, read as the pipeline's voc_root and sbd_root")
@arg("--report", required=True, help="JSON: the split counts and the images left out, for the dataset report")
def _convert_coco(args: argparse.Namespace) -> None:
    from wsss.data.coco import convert_coco

    report = convert_coco(args.coco_root, args.out, workers=args.workers)
    write_json(args.report, report)
    log.info("COCO converted: %s", report["counts"])


@verbs.verb("validate-data", help="check the dataset up front and write its report")
@arg("--source", default="voc", choices=["voc", "coco", "synthetic"], help="data.source, recorded in the report")
@arg("--voc-root", required=True)
@arg("--sbd-root")
@arg("--saliency-root")
@arg("--train-split", default="train_aug")
@arg("--eval-split", default="val")
@arg("--test-split", default="test", help="the VOC server's split; empty: none (COCO)")
@arg("--classes", help="JSON list: the foreground class names (data.classes) in label order; default VOC's 20")
@arg("--canvases", default="{}", help="JSON {setting key: size}: canvases the config sets, which must hold every image")
@arg("--workers", type=int, default=1)
@arg("--weights", help="the user's pretrained backbone weights, checked against --backbone")
@arg("--backbone", default="{}", help='JSON {"width", "batch_norm"} the weights must fit')
@arg("--conversion", help="`icd convert-coco`'s report, recorded in the report (its counts, the images left out)")
@arg("--ood-root", help="folder of hard out-of-distribution images (W-OoD); empty: none")
@arg("--ood-list", default="ood_list.txt", help="the OoD list, relative to --ood-root: one image path per line")
@arg("--extra", default="[]", help="JSON list of {root, list}: sets of extra image-level-labelled images (data.extra)")
@arg("--out", required=True, help="JSON report: source, splits, labels, counts, the OoD images, the extra images")
def _validate_data(args: argparse.Namespace) -> None:
    from wsss.data.classes import VOC, ClassList
    from wsss.data.extra import ExtraSet, validate_extra
    from wsss.data.ood import OoDList, validate_ood
    from wsss.data.voc import SplitRoles, VOCPaths, validate_dataset

    if args.weights:  # a user's weights file of the wrong shape fails here, before any work
        from wsss.nets.backbones import VGG16DeepLab, load_vgg16_weights

        backbone = json.loads(args.backbone)
        load_vgg16_weights(VGG16DeepLab(width=backbone["width"], batch_norm=backbone["batch_norm"]), args.weights)
    paths = VOCPaths.create(args.voc_root, args.sbd_root, args.saliency_root)
    roles = SplitRoles(train=args.train_split, eval=args.eval_split, test=args.test_split or None)
    classes = ClassList(tuple(json.loads(args.classes))) if args.classes else VOC
    canvases = json.loads(args.canvases)
    report = validate_dataset(paths, roles, classes=classes, canvases=canvases, workers=args.workers)
    ood = OoDList(Path(args.ood_root), args.ood_list) if args.ood_root else None
    report = {"source": args.source, **report, "ood": validate_ood(ood, workers=args.workers) if ood else None}
    extra_sets = [ExtraSet.of_config(entry) for entry in json.loads(args.extra)]
    report["extra"] = validate_extra(extra_sets, classes, canvases=canvases, workers=args.workers)
    if report["extra"]:  # the derived canvases hold the extra images too
        report["largest_side"] = max(report["largest_side"], report["extra"]["largest_side"])
    if args.conversion:
        report["conversion"] = read_json(args.conversion)
    write_json(args.out, report)
    log.info(
        "dataset ok: %s, OoD images: %d, extra images: %s",
        report["counts"],
        len(report["ood"]["images"]) if ood else 0,
        {entry["root"]: entry["images"] for entry in report["extra"]["sets"]} if report["extra"] else 0,
    )


@verbs.verb("accept-data", help="make a checked dataset report (validate-data's) the pipeline's")
@arg("--candidate", required=True, help="the report validate-data wrote")
@arg("--out", required=True, help="the accepted report (dataset.json)")
def _accept_data(args: argparse.Namespace) -> None:
    """The checked report becomes the one the pipeline reads. A step apart from the check, because Snakemake
    deletes a job's outputs when it reruns or fails: a rejected dataset then costs only the candidate."""
    write_text(args.out, Path(args.candidate).read_text())


@verbs.verb("pretrain-backbone", help="pretrain the backbone on the synthetic pretext task")
@arg("--out", required=True, help="backbone weights (.pth)")
@arg("--metrics", required=True, help="JSON file for the training metrics")
@options("JSON object of pretrain_backbone's arguments")
def _pretrain(args: argparse.Namespace) -> None:
    from icd.pretrain import pretrain_backbone

    metrics = pretrain_backbone(Path(args.out), **json.loads(args.options))
    write_json(args.metrics, metrics)


@verbs.verb("measure-premise", help="measure whether backbone features separate fg from bg")
@arg("--weights", required=True)
@arg("--data-root", required=True)
@options("JSON object of measure_premise's arguments")
@arg("--out", required=True)
def _premise(args: argparse.Namespace) -> None:
    from icd.pretrain import measure_premise

    settings = json.loads(args.options)
    report = {
        "pretrained": measure_premise(args.weights, Path(args.data_root), **settings),
        "random_init": measure_premise(None, Path(args.data_root), **settings),
    }
    write_json(args.out, report)


@verbs.verb("superpixels", help="Felzenszwalb + feature merging for one shard of the training images")
@SHARDED
@arg("--weights", required=True, help="backbone weights the features come from")
@GPUS
def _superpixels(args: argparse.Namespace) -> None:
    """The shard's images of the training split and of the extra images (data.extra), which ICD trains on."""
    from icd.superpixels import compute_superpixel_shard
    from wsss.core.shards import shard_ids
    from wsss.data.training_images import TrainingImages

    dataset = read_json(args.dataset)
    images = TrainingImages.of_dataset(dataset)
    ids = shard_ids(images.ids, args.shard, args.shards)
    options = _with_canvas(json.loads(args.options), "feature_input_size", dataset)
    stats = compute_superpixel_shard(args.out, ids, image_path=images.path, weights=args.weights, **options)
    log.info("shard %d/%d: %s", args.shard, args.shards, stats)


@verbs.verb("train-icd", help="train the ICD network (resumes from OUT_DIR/checkpoint.pt)")
@DATASET
@arg("--superpixels", nargs="+", required=True, help="superpixel shards (.npz)")
@arg("--weights", required=True, help="pretrained backbone weights")
@options('JSON object {"model": ..., "icd": ..., "seed": ..., "normalisation": <of the weights>}')
@arg("--out-dir", required=True, help="folder for checkpoint.pt, model.pt, history.json")
@GPUS
def _train_icd(args: argparse.Namespace) -> None:
    from icd.train import train_icd

    train_icd(
        args.out_dir,
        dataset=read_json(args.dataset),
        superpixel_shards=args.superpixels,
        weights=args.weights,
        **json.loads(args.options),
    )


@verbs.verb("seed-sweep", help="Table 2 thresholds and the CAM baselines' background sweeps")
@arg("--dataset", required=True)
@arg("--scores", nargs="+", required=True, help="score shards (.npz)")
@arg("--superpixels", nargs="+", required=True, help="superpixel shards (.npz), for cam_sp")
@options('JSON {"canvas", "thresholds", "cam_backgrounds"}')
@arg("--out-table", required=True, help="CSV of every (variant, threshold) row")
@arg("--out-choice", required=True, help='JSON {"cam", "cam_sp"}: each one\'s best background threshold')
def _seed_sweep(args: argparse.Namespace) -> None:
    from icd.seed_quality import threshold_sweep

    dataset = read_json(args.dataset)
    options = _with_canvas(json.loads(args.options), "canvas", dataset)
    rows, best = threshold_sweep(dataset, args.scores, args.superpixels, **options)
    write_csv(args.out_table, rows)
    write_json(args.out_choice, best)
    log.info("best background threshold (picked with ground truth): %s", best)


@verbs.verb("make-seeds", help="seed PNGs of one family of seed sets for one shard of the training split")
@SHARDED
@arg("--variants", nargs="+", required=True, help="the seed sets to write, unsuffixed (one family's, icd.seed_sets)")
@arg("--scores", nargs="+", required=True, help="score shards (.npz) of one network")
@arg(
    "--network", default=PRIMARY, help="the network the scores are of: its suffix names the seed folders (icd.networks)"
)
@arg("--superpixels", nargs="+", help="superpixel shards (.npz), for cam_sp")
@arg("--cam-background", help="JSON with the CAM baselines' background thresholds, for cam, cam_crf, cam_sp")
def _seeds(args: argparse.Namespace) -> None:
    from icd.seeds import generate_seed_shard

    _run_on_training_shard(
        args,
        generate_seed_shard,
        "canvas",
        variants=args.variants,
        score_shards=args.scores,
        superpixel_shards=args.superpixels,
        suffix=suffix_of(args.network),
        cam_backgrounds=read_json(args.cam_background) if args.cam_background else None,
    )


@verbs.verb("collect-seeds", help="gather shard folders into seeds/<variant>/ folders")
@arg("--shards", nargs="+", required=True, help="shard folders written by `icd make-seeds`")
@arg("--variants", nargs="+", required=True)
@arg("--out-root", required=True)
def _collect_seeds(args: argparse.Namespace) -> None:
    from icd.seeds import collect_seed_shards

    collect_seed_shards(args.shards, args.out_root, args.variants)


@verbs.verb("seed-table", help="seeds.csv (Tables 2 and 3) and per-class IoU of the seeds")
@arg("--dataset", required=True)
@arg("--seeds-root", required=True)
@arg("--variants", nargs="+", required=True)
@arg("--threshold", type=float, required=True, help="seeds.threshold the ICD seeds used")
@arg("--networks", nargs="+", default=[PRIMARY], help="the swept networks (icd.networks), in the order of --sweeps")
@arg("--cam-backgrounds", nargs="+", required=True, help="each network's CAM background thresholds (JSON)")
@arg("--sweeps", nargs="+", required=True, help="each network's CSV written by seed-sweep")
@arg("--out", required=True)
@arg("--per-class", required=True)
def _seed_table(args: argparse.Namespace) -> None:
    import pandas as pd

    from icd.networks import BASE_VARIANTS
    from icd.seed_quality import CAM_SWEEP, evaluate_seed_folders
    from icd.seeds import variant_thresholds

    networks = list(zip(map(suffix_of, args.networks), args.cam_backgrounds, args.sweeps, strict=True))
    thresholds = {}
    for suffix, cam_background, _ in networks:  # a network's seed sets are icd.networks.BASE_VARIANTS + its suffix
        own = [variant for variant in BASE_VARIANTS if variant + suffix in args.variants]
        chosen = variant_thresholds(own, args.threshold, read_json(cam_background))
        thresholds.update({variant + suffix: value for variant, value in chosen.items()})
    # A network without CAM seed sets is not swept (icd.workflow.swept_networks): its seeds all use T.
    in_order = {variant: thresholds.get(variant, args.threshold) for variant in args.variants}
    rows, per_class = evaluate_seed_folders(read_json(args.dataset), args.seeds_root, in_order)
    table_2 = [
        {**row, "variant": row["variant"] + suffix}
        for suffix, _, sweep in networks
        for row in pd.read_csv(sweep).to_dict("records")
        if row["table"] != CAM_SWEEP
    ]
    write_csv(args.out, table_2 + rows)
    write_csv(args.per_class, [{"variant": variant, **ious} for variant, ious in per_class.items()])


@verbs.verb("context-leakage", help="how much of each class's spurious context the seeds label as the class")
@arg("--dataset", required=True)
@arg("--seeds-root", required=True)
@arg("--variants", nargs="+", required=True)
@arg("--out", required=True, help="CSV table")
def _context_leakage(args: argparse.Namespace) -> None:
    from icd.context_leakage import context_leakage

    rows = context_leakage(read_json(args.dataset), args.seeds_root, args.variants)
    write_csv(args.out, rows)
    pooled = [row for row in rows if row["class"] == "all"]
    log.info("leakage: %s", {row["variant"]: round(float(row["leakage"]), 4) for row in pooled})
    log.info(
        "mIoU as labelled -> leakage removed: %s",
        {row["variant"]: f"{row['iou']:.4f} -> {row['iou_leakage_removed']:.4f}" for row in pooled},
    )


@verbs.verb("seed-figure", help="the paper's Fig. 4: CAM vs ICD scores and seeds")
@arg("--dataset", required=True)
@arg("--scores", nargs="+", required=True, help="score shards (.npz)")
@arg("--seeds-root", required=True, help="folder holding cam/, cam_crf/, icd/ and icd_crf/ seeds")
@arg("--canvas", type=int, help="seeds.inference_size (default: derived from the dataset's largest image)")
@arg("--out", required=True, help="PNG")
def _seed_figure(args: argparse.Namespace) -> None:
    from icd.figures import seed_figure
    from wsss.data.canvas import canvas_size

    dataset = read_json(args.dataset)
    seed_figure(args.out, dataset, args.scores, args.seeds_root, canvas=canvas_size(args.canvas, dataset))


@verbs.verb("ood-figure", help="Fig. 4 with and without W-OoD: CAM and icd_crf seeds of both networks on context")
@arg("--dataset", required=True)
@arg("--scores", nargs="+", required=True, help="score shards (.npz) of the primary network")
@arg("--ood-scores", nargs="+", required=True, help="score shards (.npz) of the OoD network")
@arg("--network", required=True, help="the OoD network's name: its seed sets' suffix")
@arg("--seeds-root", required=True)
@arg("--canvas", type=int, help="seeds.inference_size (default: derived from the dataset's largest image)")
@arg("--out", required=True, help="PNG")
def _ood_figure(args: argparse.Namespace) -> None:
    from icd.figures import ood_figure
    from wsss.data.canvas import canvas_size

    dataset = read_json(args.dataset)
    canvas = canvas_size(args.canvas, dataset)
    ood_figure(
        args.out,
        dataset,
        args.scores,
        args.ood_scores,
        args.seeds_root,
        suffix=suffix_of(args.network),
        canvas=canvas,
    )


@verbs.verb("training-curves", help="plot ICD training: losses, lr, sign flips per epoch")
@arg("--history", required=True, help="history.json written by train-icd")
@arg("--out", required=True, help="PNG")
def _training_curves(args: argparse.Namespace) -> None:
    from wsss.plots import training_curves

    training_curves(args.out, json.loads(Path(args.history).read_text()))


@verbs.verb("seed-iou-chart", help="bar chart of the seeds' per-class IoU")
@arg("--per-class", required=True, help="seeds_per_class.csv written by seed-table")
@arg("--out", required=True, help="PNG")
def _seed_iou_chart(args: argparse.Namespace) -> None:
    import pandas as pd

    from wsss.plots import per_class_iou_chart

    per_class = pd.read_csv(args.per_class).set_index("variant")
    per_class_iou_chart(args.out, {variant: row.to_dict() for variant, row in per_class.iterrows()})


@verbs.verb("infer-scores", help="CAM / ICD score maps of one shard of the training split")
@SHARDED
@arg("--model", required=True, help="the trained ICD model (model.pt)")
@arg("--superpixels", nargs="+", required=True, help="superpixel shards (.npz)")
@GPUS
def _scores(args: argparse.Namespace) -> None:
    from icd.scores import infer_scores_shard

    _run_on_training_shard(
        args, infer_scores_shard, "inference_size", model_path=args.model, superpixel_shards=args.superpixels
    )


@verbs.verb("score-map-ap", help="Table 1: pixel-level AP of each score map")
@arg("--dataset", required=True)
@arg("--networks", required=True, help='JSON {suffix: {"maps": [...], "scores": [shards]}}, the primary network first')
@arg("--inference-size", type=int, help="seeds.inference_size (default: derived from the dataset's largest image)")
@arg("--out", required=True, help="CSV table")
def _score_ap(args: argparse.Namespace) -> None:
    from icd.score_maps import score_map_average_precision
    from wsss.data.canvas import canvas_size

    dataset = read_json(args.dataset)
    canvas = canvas_size(args.inference_size, dataset)
    table = score_map_average_precision(dataset, json.loads(args.networks), canvas=canvas)
    write_csv(args.out, [{"scores": name, **row} for name, row in table.items()])
    log.info("pixel mAP: %s", {name: round(row["mAP"], 4) for name, row in table.items()})


@verbs.verb("export-icd-backbone", help="the trained ICD network's backbone as a weights file")
@arg("--model", required=True, help="the trained ICD model (model.pt)")
@options('JSON object {"model": ..., "icd": ..., "normalisation": <the one model.pt records>}')
@arg("--out", required=True, help="backbone weights (.pth), loadable as deeplab.weights.vgg16")
def _export_backbone(args: argparse.Namespace) -> None:
    from icd.scores import export_backbone

    export_backbone(args.model, args.out, **json.loads(args.options))


def build_parser() -> argparse.ArgumentParser:
    return verbs.build_parser()


def main(argv: list[str] | None = None) -> int:
    return run_verb(build_parser(), argv)

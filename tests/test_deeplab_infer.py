"""DeepLab inference and evaluation: multi-scale averaging, CRF, server layout and tar, mIoU."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from deeplab.data import SeedTrainingSet
from deeplab.evaluate import evaluate_predictions
from deeplab.infer import SERVER_FOLDER, class_probabilities, crf_refine, load_trained, pack_for_server, predict_split
from deeplab.model import NETWORK_KEYS, build_model
from deeplab.train import network_options, train_deeplab
from wsss.core.config import load_config
from wsss.core.errors import DataError
from wsss.data.classes import IGNORE_LABEL, NUM_CLASSES, PALETTE
from wsss.data.io import read_mask, read_rgb, write_mask
from wsss.data.voc import VOCPaths

MODEL_SECTION = {"batch_norm": True}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A randomly initialised width-1/16 VGG16 DeepLab saved as `deeplab train-deeplab` saves it."""
    deeplab = {**load_config()["deeplab"], "width": 0.0625, "freeze_bn": False}
    network = network_options("vgg16", deeplab, MODEL_SECTION)
    torch.manual_seed(0)
    net = build_model(num_classes=NUM_CLASSES, **{key: network[key] for key in NETWORK_KEYS})
    torch.nn.init.normal_(net.head.weight, std=1.0)  # spread the logits so predictions differ between classes
    path = tmp_path_factory.mktemp("deeplab") / "model.pt"
    torch.save(
        {"model": net.state_dict(), "network": json.dumps(network), "fingerprint": "x", "normalisation": "minus127"},
        path,
    )
    return path


def _single_scale(net, image, mean, scale):
    """The plain single-scale probabilities, written out independently of class_probabilities."""
    x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        scale
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = F.interpolate(net(x), size=image.shape[:2], mode="bilinear", align_corners=False)
    return logits.softmax(dim=1)[0].numpy()


def test_multiscale_with_scale_one_equals_single_scale_and_averages_otherwise(saved_model, one_torch_thread):
    net, normalise = load_trained(saved_model, torch.device("cpu"))
    assert normalise.name == "minus127"  # the model's record
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    mean, scale = [127.0] * 3, [1.0] * 3
    single = _single_scale(net, image, mean, scale)
    assert single.shape == (NUM_CLASSES, 50, 70)
    # Equal up to float32 convolution rounding (memory layouts differ): same labels everywhere.
    at_one = class_probabilities(net, image, normalise=normalise, scales=[1.0])
    np.testing.assert_allclose(at_one, single, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(at_one.argmax(axis=0), single.argmax(axis=0))

    half = np.array(Image.fromarray(image).resize((35, 25), Image.BILINEAR))
    x = torch.from_numpy(half).permute(2, 0, 1)[None].float() - 127.0
    with torch.no_grad():
        half_probs = (
            F.interpolate(net(x), size=(50, 70), mode="bilinear", align_corners=False).softmax(dim=1)[0].numpy()
        )
    flipped = _single_scale(net, np.ascontiguousarray(image[:, ::-1]), mean, scale)[:, :, ::-1]
    both = class_probabilities(net, image, normalise=normalise, scales=[0.5, 1.0], flip=True)
    half_flipped = class_probabilities(net, np.ascontiguousarray(image[:, ::-1]), normalise=normalise, scales=[0.5])[
        :, :, ::-1
    ]
    np.testing.assert_allclose(both, (single + flipped + half_probs + half_flipped) / 4, rtol=1e-4, atol=1e-7)
    assert not np.allclose(both, single, atol=1e-3)


def test_crf_keeps_confident_labels_and_smooths_an_uncertain_pixel():
    image = np.zeros((20, 20, 3), np.uint8)
    image[:, 10:] = 200
    labels = np.zeros((20, 20), np.int64)
    labels[:, 10:] = 3
    probabilities = np.full((NUM_CLASSES, 20, 20), 0.01 / (NUM_CLASSES - 1), np.float32)
    probabilities[labels, np.arange(20)[:, None], np.arange(20)[None]] = 0.99
    probabilities[:, 5, 15] = 1.0 / NUM_CLASSES  # no opinion: argmax says background, the neighbours say 3
    assert probabilities.argmax(axis=0)[5, 15] == 0
    crf = load_config()["deeplab"]["crf"]
    refined = crf_refine(image, probabilities, **crf)
    np.testing.assert_array_equal(refined, labels.astype(np.uint8))


# deeplab-pytorch's test-time CRF (its configs' CRF section: POS_W 3, POS_XY_STD 1, BI_W 4, BI_XY_STD 67,
# BI_RGB_STD 3, ITER_MAX 10), the schema's deeplab.crf defaults.
DEEPLAB_PYTORCH_CRF = dict(
    gaussian_sxy=1, gaussian_compat=3, bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4, iterations=10
)


def _pydensecrf_labels(image: np.ndarray, probabilities: np.ndarray, crf: dict) -> np.ndarray:
    """deeplab-pytorch's `DenseCRF.__call__`, transcribed: unary -log p (U.unary_from_softmax clips p at 1e-5), the
    Gaussian and bilateral Potts terms, `iterations` mean-field steps in pydensecrf, argmax."""
    import pydensecrf.densecrf as dcrf

    labels, height, width = probabilities.shape
    model = dcrf.DenseCRF2D(width, height, labels)
    model.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(probabilities, 1e-5, None)).reshape(labels, -1)))
    model.addPairwiseGaussian(sxy=crf["gaussian_sxy"], compat=crf["gaussian_compat"])
    model.addPairwiseBilateral(
        sxy=crf["bilateral_sxy"],
        srgb=crf["bilateral_srgb"],
        rgbim=np.copy(image, order="C"),
        compat=crf["bilateral_compat"],
    )
    return np.array(model.inference(crf["iterations"])).reshape(labels, height, width).argmax(axis=0)


def _photograph_probabilities(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A 150 x 200 photograph (skimage.data, downscaled) and DeepLab-like class probabilities over the 21 labels:
    each SLIC superpixel leans towards one of 5 labels, through smooth noise that blurs the regions' borders."""
    import skimage.data
    import skimage.segmentation
    from scipy.ndimage import gaussian_filter

    image = np.asarray(Image.fromarray(getattr(skimage.data, name)()).resize((200, 150), Image.BILINEAR))
    rng = np.random.default_rng(len(name))
    segments = skimage.segmentation.slic(image, n_segments=30, compactness=10, start_label=0)
    leaning = rng.choice(np.array([0, 0, 3, 8, 12, 15]), size=segments.max() + 1)
    logits = gaussian_filter(rng.normal(0.0, 4.0, (NUM_CLASSES, *segments.shape)), sigma=(0, 4, 4))
    logits[leaning[segments], np.arange(150)[:, None], np.arange(200)[None]] += 2.5
    probabilities = torch.softmax(torch.from_numpy(gaussian_filter(logits, sigma=(0, 2, 2))), dim=0)
    return image, probabilities.numpy().astype(np.float32)


@pytest.mark.parametrize("crf", ["deeplab-pytorch", "config"])
@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_crf_labels_agree_with_deeplab_pytorchs_pydensecrf_call(name, crf):
    """The engine's CRF (the position kernel on the pixel grid, not pydensecrf's lattice) against deeplab-pytorch's
    call: >= 99.5 % of pixels agree (measured 99.90-99.97 %), on a CRF that moves 1.5-5 % of the argmax's labels."""
    image, probabilities = _photograph_probabilities(name)
    settings = DEEPLAB_PYTORCH_CRF if crf == "deeplab-pytorch" else load_config()["deeplab"]["crf"]
    expected = _pydensecrf_labels(image, probabilities, settings)
    refined = crf_refine(image, probabilities, **settings)
    assert refined.dtype == np.uint8
    assert (expected != probabilities.argmax(axis=0)).mean() > 0.01  # a CRF that did nothing would fail below
    assert len(np.unique(expected)) >= 4
    assert (refined == expected).mean() >= 0.995


def test_test_split_predictions_in_the_server_layout_with_the_voc_palette_and_a_tar(
    tiny_dataset, saved_model, tmp_path, one_torch_thread
):
    predict_split(
        saved_model,
        tiny_dataset,
        "test",
        tmp_path / "test",
        scales=[1.0],
        flip=False,
        crf=None,
        layout="server",
        progress=False,
    )
    ids = tiny_dataset["splits"]["test"]
    folder = tmp_path / "test" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert folder == tmp_path / "test" / SERVER_FOLDER
    assert sorted(p.stem for p in folder.iterdir()) == sorted(ids)
    paths = VOCPaths.create(tiny_dataset["voc_root"])
    for image_id in ids:
        with Image.open(folder / f"{image_id}.png") as png:
            assert png.mode == "P"
            assert np.array_equal(np.asarray(png.getpalette()[: 256 * 3], np.uint8).reshape(256, 3), PALETTE)
            assert png.size[::-1] == read_rgb(paths.image(image_id)).shape[:2]
            assert set(np.unique(np.asarray(png))) <= set(range(NUM_CLASSES))

    tar_path = tmp_path / "results.tar"
    assert pack_for_server(tmp_path / "test", tar_path) == len(ids)
    with tarfile.open(tar_path) as archive:
        names = sorted(archive.getnames())
        assert names == sorted(f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in ids)
        for name in names:
            assert archive.extractfile(name).read() == (tmp_path / "test" / name).read_bytes()


def test_eval_predictions_with_crf_write_raw_and_crf_folders(tiny_dataset, saved_model, tmp_path, one_torch_thread):
    crf = load_config()["deeplab"]["crf"]
    out = tmp_path / "val"
    predict_split(saved_model, tiny_dataset, "eval", out, scales=[1.0], flip=False, crf=crf, progress=False)
    ids = tiny_dataset["splits"]["val"]
    for name in ("raw", "crf"):
        assert sorted(p.stem for p in (out / name).iterdir()) == sorted(ids)
    results = evaluate_predictions(tiny_dataset, out, progress=False)
    assert set(results) == {"raw", "crf"} and all(0 <= r["miou"] <= 1 for r in results.values())


def test_the_training_split_predicted_as_seeds_is_a_seed_folder_deeplab_trains_on(
    tiny_dataset, saved_model, tmp_path, one_torch_thread
):
    """A further round's labels: the final prediction (after the CRF) of every training image as <id>.png, palettised
    as the seeds are, at the image's size, which `train-deeplab --labels-root` reads."""
    crf = load_config()["deeplab"]["crf"]
    labels = tmp_path / "train_labels"
    options = dict(scales=[0.5, 1.0], flip=True, crf=crf, progress=False)
    predict_split(saved_model, tiny_dataset, "train", labels, layout="seeds", **options)
    ids = tiny_dataset["splits"][tiny_dataset["roles"]["train"]]
    assert sorted(path.name for path in labels.iterdir()) == sorted(f"{image_id}.png" for image_id in ids)
    evaluation = tmp_path / "evaluation"
    predict_split(saved_model, tiny_dataset, "train", evaluation, **options)
    for image_id in ids:
        with Image.open(labels / f"{image_id}.png") as png:
            assert png.mode == "P"
        assert (labels / f"{image_id}.png").read_bytes() == (evaluation / "crf" / f"{image_id}.png").read_bytes()

    data = SeedTrainingSet(tiny_dataset, labels, seed=0, crop_size=32, scale_range=(1, 1), flip=False, pad_rgb=[0] * 3)
    data.check_seed_sizes(progress=False)
    assert data.label_path(ids[0]) == f"{labels}/{ids[0]}.png"
    deeplab = {**load_config()["deeplab"], "width": 0.0625, "iterations": 2, "batch_size": 2, "crop_size": 32}
    deeplab.update(workers=0, log_interval=1, checkpoint_interval=2)
    train_deeplab(
        tmp_path / "round2",
        dataset=tiny_dataset,
        labels_root=labels,
        weights=None,
        backbone="vgg16",
        deeplab=deeplab,
        model=MODEL_SECTION,
        normalisation="minus127",
        seed=0,
        progress=False,
    )
    assert len(json.loads((tmp_path / "round2" / "history.json").read_text())) == 2


def test_the_seed_layout_and_the_server_layout_are_not_asked_for_together(tmp_path, capsys):
    from deeplab.cli import main

    command = ["predict-deeplab", "--dataset", "d.json", "--model", "m.pt", "--split", "train", "--options", "{}"]
    code = main([*command, "--out-dir", str(tmp_path / "out"), "--as-seeds", "--server-tar", str(tmp_path / "t.tar")])
    assert code == 2 and "give one of them" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_evaluation_matches_a_brute_force_iou(tiny_dataset, tmp_path):
    paths = VOCPaths.create(tiny_dataset["voc_root"], tiny_dataset["sbd_root"])
    ids = tiny_dataset["splits"]["val"]
    truths = {i: read_mask(paths.ground_truth("val", i)) for i in ids}
    for image_id, truth in truths.items():
        write_mask(tmp_path / "raw" / f"{image_id}.png", np.where(truth == IGNORE_LABEL, 0, truth).astype(np.uint8))
        write_mask(tmp_path / "crf" / f"{image_id}.png", np.zeros_like(truth))
    results = evaluate_predictions(tiny_dataset, tmp_path, progress=False)
    assert results["raw"]["miou"] == pytest.approx(1.0)

    gt = np.concatenate([t.ravel() for t in truths.values()])
    gt = gt[gt != IGNORE_LABEL]
    present = sorted(set(gt.tolist()))
    expected = {0: np.mean(gt == 0)}  # all-background prediction: IoU of bg = bg pixels / valid pixels
    expected.update({c: 0.0 for c in present if c})
    assert results["crf"]["miou"] == pytest.approx(np.mean(list(expected.values())))
    assert results["crf"]["per_class"]["background"] == pytest.approx(expected[0])
    assert results["crf"]["per_class"]["dog"] is None  # absent from GT and prediction

    (tmp_path / "raw" / f"{ids[0]}.png").unlink()
    with pytest.raises(DataError, match=rf"no prediction for 1 of the {len(ids)} 'val' ids"):
        evaluate_predictions(tiny_dataset, tmp_path, progress=False)


def test_a_saved_network_is_rebuilt_with_the_fc6_dilation_it_was_trained_with(tmp_path):
    """The dilation is no weight: a model rebuilt at LargeFOV's 12 would load the same tensors and compute other
    features. Stored with the network description, it comes back; without one, LargeFOV's."""
    deeplab = {**load_config()["deeplab"], "width": 0.0625}
    assert network_options("vgg16", deeplab, MODEL_SECTION)["fc6_dilation"] == 12
    network = network_options("vgg16", deeplab, {**MODEL_SECTION, "fc6_dilation": 1})  # from the ICD backbone
    net = build_model(num_classes=NUM_CLASSES, **{key: network[key] for key in NETWORK_KEYS})
    path = tmp_path / "model.pt"
    torch.save({"model": net.state_dict(), "network": json.dumps(network), "normalisation": "minus127"}, path)
    rebuilt, _ = load_trained(path, torch.device("cpu"))
    assert rebuilt.backbone.fc6.dilation == (1, 1) and rebuilt.backbone.fc6.padding == (1, 1)


def test_one_call_predicts_the_eval_split_then_the_test_split_in_the_server_layout(
    tiny_dataset, saved_model, tmp_path, one_torch_thread
):
    """`--test-out-dir` (the workflow's predict_deeplab, one process for both splits) writes what two calls write."""
    from deeplab.cli import main

    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps(tiny_dataset))
    options = {"scales": [1.0], "flip": False, "crf": load_config()["deeplab"]["crf"]}
    command = ["predict-deeplab", "--dataset", str(dataset), "--model", str(saved_model), "--split", "eval"]
    together = tmp_path / "together"
    code = main(
        [
            *command,
            *("--options", json.dumps(options), "--out-dir", str(together / "val")),
            *("--test-out-dir", str(together / "test"), "--server-tar", str(together / "test.tar")),
        ]
    )
    assert code == 0
    apart = tmp_path / "apart"
    predict_split(saved_model, tiny_dataset, "eval", apart / "val", **options, progress=False)
    predict_split(saved_model, tiny_dataset, "test", apart / "test", layout="server", **options, progress=False)
    files = sorted(path.relative_to(apart) for path in apart.rglob("*.png"))
    assert len(files) == 2 * len(tiny_dataset["splits"]["val"]) + len(tiny_dataset["splits"]["test"])
    assert sorted(path.relative_to(together) for path in together.rglob("*.png")) == files
    assert all((together / name).read_bytes() == (apart / name).read_bytes() for name in files)
    with tarfile.open(together / "test.tar") as archive:
        assert sorted(archive.getnames()) == sorted(
            str(name.relative_to("test")) for name in files if name.parts[0] == "test"
        )

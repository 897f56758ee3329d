"""Reliability through the user's entry point, the Snakemake DAG on the TINY config (issue 7).

Bad input is rejected before any work with a message naming the file or key and the fix, and leaves
existing results byte-identical; a SIGKILLed Snakemake resumes ICD and DeepLab training to the same
weights and leaves no half-written shard at a final name; same-seed runs give identical seeds and tables; a
workdir with spaces and quotes works and nothing is written outside results/<run>/; every
`torch.load` is weights-only. Runs are shared between tests through module-scoped fixtures.
"""

from __future__ import annotations

import ast
import base64
import copy
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import resize_png, split_ids, truncate, write_annotation
from tests.scenarios import voc_scenario
from tests.workflow_helpers import TINY, assert_resumed_after, differing_weights, snakemake, trained_weights
from wsss.core.config import PROJECT_ROOT
from wsss.core.shards import ShardStore
from wsss.data.io import image_size

# Through the seeds, the stages these tests are about (the DeepLab stage has its own tests).
SYNTHETIC_TARGETS = [
    f"results/tiny/{path}" for path in ("tables/seeds.csv", "tables/score_map_ap.csv", "figures/seeds_fig4.png")
]
# The VOC-source runs train long enough to SIGKILL training between two checkpoints.
ICD_EPOCHS = 20
DEEPLAB_ITERATIONS = 40
SHARDS = [f"shard_{index}.npz" for index in range(TINY["synthetic_overrides"]["superpixels"]["shards"])]


def sha256_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Two synthetic TINY runs: one in a workdir whose path has spaces and quotes, one plain.


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("reliability")
    quoted, plain = base / 'it\'s a "dir"' / "run one", base / "plain"
    for workdir in (quoted, plain):
        workdir.mkdir(parents=True)
        (workdir / "notes.txt").write_text("the user's own file\n")
    before = files_under(quoted)
    for workdir in (quoted, plain):
        result = snakemake(workdir, "--cores", "2", *SYNTHETIC_TARGETS)
        assert result.returncode == 0, output(result)[-4000:]
    return {"quoted": quoted, "plain": plain, "quoted_files_before": before}


@pytest.mark.slow
def test_a_workdir_with_spaces_and_quotes_runs_and_only_results_are_written(synthetic_runs):
    quoted = synthetic_runs["quoted"]
    assert len(list((quoted / "results" / "tiny" / "seeds" / "icd").glob("*.png"))) == 16
    written = files_under(quoted) - synthetic_runs["quoted_files_before"]
    outside = sorted(f for f in written if not f.startswith(("results/tiny/", ".snakemake/")) and f != "tiny.yaml")
    assert outside == []
    assert (quoted / "notes.txt").read_text() == "the user's own file\n"


@pytest.mark.slow
def test_two_runs_with_the_same_seed_give_identical_seeds_and_tables(synthetic_runs):
    first, second = (synthetic_runs[key] / "results" / "tiny" for key in ("quoted", "plain"))
    seeds = sha256_tree(first / "seeds")
    assert sum(name.endswith(".png") for name in seeds) >= 16 * 6  # every variant of every training image
    assert seeds == sha256_tree(second / "seeds")
    tables = sha256_tree(first / "tables")
    assert {"seeds.csv", "seeds_per_class.csv", "score_map_ap.csv"} <= set(tables)
    assert tables == sha256_tree(second / "tables")
    sweep = "networks/icd/seed_thresholds.csv"
    assert (first / sweep).read_bytes() == (second / sweep).read_bytes()


@pytest.mark.slow
def test_a_seed_of_the_wrong_size_is_rejected_before_deeplab_trains(synthetic_runs, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(synthetic_runs["plain"], workdir)  # metadata and mtimes kept: the seeds stay up to date
    seeds = workdir / "results" / "tiny" / "seeds" / "icd_crf"
    resize_png(seeds / "train_000001.png")
    config = copy.deepcopy(TINY)
    config["synthetic_overrides"]["deeplab"].update(iterations=8, workers=2)  # one pass over the 16 images
    model = workdir / "results" / "tiny" / "deeplab" / "vgg16" / "icd_crf" / "model.pt"
    result = snakemake(workdir, "--cores", "2", str(model.relative_to(workdir)), config=config)
    assert result.returncode != 0
    message = output(result)
    assert "seeds/icd_crf/train_000001.png: label map is" in message and "regenerate the seeds" in message
    assert "Traceback" not in message
    assert not (model.parent / "checkpoint.pt").exists()


# ---------------------------------------------------------------------------------------------
# A user's "real VOC" run: data and ImageNet-style weights outside results/, data.source voc.


def voc_config(workdir: Path, run: str = "voc", voc_root: Path | None = None) -> dict:
    """The VOC scenario (tests/scenarios/voc.yaml), reading the dataset and weights under workdir/data, trained
    for long enough to be killed between two checkpoints."""
    config = voc_scenario(voc_root or workdir / "data" / "VOC2012", workdir / "data" / "backbone.pth", run=run)
    config["icd"]["epochs"] = ICD_EPOCHS
    config["deeplab"].update(backbones=["vgg16"], iterations=DEEPLAB_ITERATIONS)
    return config


def model_target(config: dict) -> str:
    return f"results/{config['run']}/networks/icd/model.pt"


def deeplab_target(config: dict) -> str:
    """DeepLab VGG16 trained on ground truth: needs only the dataset and the weights."""
    return f"results/{config['run']}/deeplab/vgg16/gt/model.pt"


@pytest.fixture(scope="module")
def voc_workdir(synthetic_runs, tmp_path_factory) -> Path:
    """A finished VOC-source run up to the ICD model: the existing results bad input must not touch."""
    workdir = tmp_path_factory.mktemp("voc")
    source = synthetic_runs["plain"] / "results" / "tiny"
    shutil.copytree(source / "data" / "VOC2012", workdir / "data" / "VOC2012")
    shutil.copy(source / "pretrain" / "backbone.pth", workdir / "data" / "backbone.pth")
    config = voc_config(workdir)
    result = snakemake(workdir, "--cores", "2", model_target(config), deeplab_target(config), config=config)
    assert result.returncode == 0, output(result)[-4000:]
    return workdir


def first_id(root: Path, split: str = "train_aug") -> str:
    return split_ids(root, split)[0]


def _reencode(mode: str) -> Callable[[Path, dict], None]:
    """Replace a training image by a JPEG of another colour mode, same size: must be accepted."""

    def change(root: Path, config: dict) -> None:
        path = root / "JPEGImages" / f"{first_id(root)}.jpg"
        with Image.open(path) as image:
            converted = image.convert(mode)
        converted.save(path, format="JPEG")
        with Image.open(path) as image:
            assert image.mode == mode

    return change


def _move_root_to_a_name_with_spaces_and_quotes(root: Path, config: dict) -> None:
    moved = root.rename(root.with_name('it\'s a "VOC" root'))
    config["data"].update(voc_root=str(moved), saliency_root=str(moved / "Saliency"))


def _set(section: str, key: str, value) -> Callable[[Path, dict], None]:
    def change(root: Path, config: dict) -> None:
        config.setdefault(section, {})[key] = value

    return change


def _on_file(relative: str, action: Callable[[Path], None]) -> Callable[[Path, dict], None]:
    """Apply `action` to root/relative, with {id} the first training id."""

    def change(root: Path, config: dict) -> None:
        action(root / relative.format(id=first_id(root)))

    return change


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


# name: (how to break the input, the step that must reject it (None: accepted), texts the user must see)
BAD_INPUTS = {
    "missing VOC root": (
        _set("data", "voc_root", "/nonexistent/VOC2012"),
        "config",
        [
            "invalid configuration at 'data.voc_root': the folder /nonexistent/VOC2012 does not exist",
            "Set data.voc_root to the VOC2012 folder",
        ],
    ),
    "missing SBD root": (
        _set("data", "sbd_root", "/nonexistent/SBD"),
        "config",
        [
            "invalid configuration at 'data.sbd_root': the folder /nonexistent/SBD does not exist",
            "Set data.sbd_root to the folder holding SegmentationClassAug/",
        ],
    ),
    "missing saliency root": (
        _set("data", "saliency_root", "/nonexistent/saliency"),
        "config",
        [
            "invalid configuration at 'data.saliency_root': the folder /nonexistent/saliency does not exist",
            "Set data.saliency_root to the folder of saliency PNGs",
        ],
    ),
    "list id without image": (
        _on_file("JPEGImages/{id}.jpg", Path.unlink),
        "validate_data",
        [
            "JPEGImages/train_000001.jpg: image missing for id 'train_000001'",
            "Add the JPEG or remove the id from its split list",
        ],
    ),
    "truncated JPEG": (
        _on_file("JPEGImages/{id}.jpg", truncate),
        "validate_data",
        ["JPEGImages/train_000001.jpg: unreadable or truncated image", "Re-extract or re-download"],
    ),
    "corrupt JPEG": (
        _on_file("JPEGImages/{id}.jpg", _write(b"\xff\xd8\xff\xe0 not a jpeg")),
        "validate_data",
        ["JPEGImages/train_000001.jpg: unreadable or truncated image", "Re-extract or re-download"],
    ),
    "grayscale JPEG": (_reencode("L"), None, []),
    "VOC root with spaces and quotes": (_move_root_to_a_name_with_spaces_and_quotes, None, []),
    "CMYK JPEG": (_reencode("CMYK"), None, []),
    "ground truth size": (
        _on_file("SegmentationClassAug/{id}.png", resize_png),
        "validate_data",
        ["SegmentationClassAug/train_000001.png: mask is", "Masks must have their image's size"],
    ),
    "saliency size": (
        _on_file("Saliency/{id}.png", resize_png),
        "validate_data",
        ["Saliency/train_000001.png: saliency map is", "Resize the saliency maps"],
    ),
    "unknown class in XML": (
        _on_file("Annotations/{id}.xml", lambda p: write_annotation(p, [("unicorn", 0)])),
        "validate_data",
        ["Annotations/train_000001.xml: unknown class name 'unicorn'", "must be one of the 20 classes of data.classes"],
    ),
    "image without labels": (
        _on_file("Annotations/{id}.xml", lambda p: write_annotation(p, [])),
        "validate_data",
        ["Annotations/train_000001.xml: no object", "Remove 'train_000001' from 'train_aug'"],
    ),
    "config wrong type": (
        _set("icd", "epochs", "many"),
        "config",
        [
            "invalid configuration at 'icd.epochs': 'many' is not of type 'integer'",
            "workflow/schemas/config.schema.yaml",
        ],
    ),
    "config unknown key": (
        _set("seeds", "treshold", 0.3),
        "config",
        [
            "invalid configuration at 'seeds': Additional properties are not allowed ('treshold'",
            "workflow/schemas/config.schema.yaml",
        ],
    ),
    "weights of another width": (
        _set("model", "width", 0.125),
        "validate_data",
        [
            "data/backbone.pth: weights do not fit the model",
            "features.0.weight: expected (8, 3, 3, 3), found (4, 3, 3, 3)",
            "Set model.width",
        ],
    ),
}

# What a run may have written when the step in the key rejects the input: only logs, plus the
# outputs of steps that legitimately ran before it.
ALLOWED_BEFORE = {"config": (), "validate_data": ("logs/",)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_rejected_before_any_work_and_existing_results_stay_untouched(voc_workdir, name):
    breaks, rejected_by, expected = BAD_INPUTS[name]
    run = "input-" + re.sub(r"[^a-z0-9]+", "-", name.lower())
    root = voc_workdir / "inputs" / run / "VOC2012"
    shutil.copytree(voc_workdir / "data" / "VOC2012", root)
    config = voc_config(voc_workdir, run=run, voc_root=root)
    breaks(root, config)
    before = sha256_tree(voc_workdir / "results")
    targets = [f"results/{run}/superpixels/{shard}" for shard in SHARDS]
    result = snakemake(voc_workdir, "--cores", "2", *targets, config=config)
    after = sha256_tree(voc_workdir / "results")

    assert {path: after.get(path) for path in before} == before, "existing results changed"
    new = sorted(set(after) - set(before))
    if rejected_by is None:
        assert result.returncode == 0, output(result)[-4000:]
        store = ShardStore(voc_workdir / "results" / run / "superpixels" / shard for shard in SHARDS)
        images = Path(config["data"]["voc_root"]) / "JPEGImages"
        assert len(store) == 16
        for image_id in store.ids():  # every training image read, converted, and its superpixels at its size
            assert store[image_id].shape == image_size(images / f"{image_id}.jpg")
        return
    assert result.returncode != 0
    message = output(result)  # the profile's show-failed-logs puts the failed step's log in it
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message[-4000:]}"
    assert "Traceback" not in message
    if rejected_by != "config":
        assert f"Error in rule {rejected_by}" in message
    allowed = tuple(f"{run}/{prefix}" for prefix in ALLOWED_BEFORE[rejected_by])
    assert [path for path in new if not path.startswith(allowed)] == []


# ---------------------------------------------------------------------------------------------
# Bad input found inside an existing run: the check reruns there, and nothing already computed is lost.


@pytest.mark.slow
def test_bad_input_found_in_an_existing_run_costs_nothing_already_computed(voc_workdir, tmp_path):
    """The finished run's own JPEG truncated and its data check forced: rejected, every result kept byte
    for byte, and once the JPEG is back nothing downstream of the check is scheduled."""
    workdir = tmp_path / "run"
    shutil.copytree(voc_workdir, workdir)  # results and Snakemake's records, mtimes kept
    # The run's recorded settings name the fixture's data and weights: break its JPEG there, then restore it.
    config = voc_config(voc_workdir)
    # the run's targets, and the data stage's (of `snakemake data` and of the default target `all`)
    targets = [model_target(config), deeplab_target(config), "results/voc/data/dataset.json"]
    results = workdir / "results" / "voc"
    kept = {path: digest for path, digest in sha256_tree(results).items() if not path.startswith("logs/")}
    root = voc_workdir / "data" / "VOC2012"
    image = root / "JPEGImages" / f"{first_id(root)}.jpg"
    original, stat = image.read_bytes(), image.stat()
    try:
        truncate(image)
        result = snakemake(workdir, "--cores", "2", *targets, "--forcerun", "validate_data", config=config)
    finally:
        image.write_bytes(original)
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert result.returncode != 0
    message = output(result)
    for text in BAD_INPUTS["truncated JPEG"][2]:
        assert text in message, f"{text!r} not in:\n{message[-4000:]}"
    assert "Error in rule validate_data" in message and "Traceback" not in message
    after = {path: digest for path, digest in sha256_tree(results).items() if not path.startswith("logs/")}
    assert after == kept, "the rejected check changed the run's results"
    dry = snakemake(workdir, "-n", *targets, config=config)
    assert dry.returncode == 0, output(dry)[-4000:]
    assert "Nothing to be done" in dry.stdout, dry.stdout[-4000:]


@pytest.mark.slow
def test_a_checkpoint_of_another_configuration_is_retrained_not_resumed(voc_workdir):
    """A stale checkpoint (left when a config change reruns training) must never seed the new run."""
    config = voc_config(voc_workdir, run="voc-other-lr")
    config["icd"].update(lr=0.002, epochs=2)
    checkpoint = voc_workdir / "results" / "voc-other-lr" / "networks" / "icd" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(voc_workdir / "results" / "voc" / "networks" / "icd" / "checkpoint.pt", checkpoint)
    result = snakemake(voc_workdir, "--cores", "2", model_target(config), config=config)
    assert result.returncode == 0, output(result)[-4000:]
    log = (voc_workdir / "results" / "voc-other-lr" / "logs" / "train_icd" / "icd.log").read_text()
    assert "icd/checkpoint.pt was written by a different configuration; training from scratch" in log
    history = json.loads((checkpoint.parent / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2]


# ---------------------------------------------------------------------------------------------
# SIGKILL of the whole Snakemake process group, then the same command again.


def kill_snakemake_when(workdir: Path, config: dict, target: str, ready: Callable[[], bool]) -> None:
    """Run the `snakemake` helper in a new session; SIGKILL its process group (jobs included) once `ready()`."""
    code = (
        "import json, sys; from pathlib import Path; from tests.workflow_helpers import snakemake; "
        "snakemake(Path(sys.argv[1]), '--cores', '2', sys.argv[3], config=json.loads(sys.argv[2]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(workdir), json.dumps(config), target], cwd=PROJECT_ROOT, start_new_session=True
    )
    deadline = time.time() + 600
    while not ready() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "Snakemake finished (or failed) before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.time() + 60
    while live_members(process.pid) and time.time() < deadline:  # every job is gone before anything is inspected
        time.sleep(0.05)
    assert not live_members(process.pid)


def live_members(group: int) -> list[int]:
    """Processes of a process group still running (zombies waiting for their reaper do not count)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, process_group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:  # the process ended meanwhile
            continue
        if int(process_group) == group and state != "Z":
            members.append(int(stat.parent.name))
    return members


def incomplete_markers(workdir: Path) -> set[str]:
    """Outputs Snakemake has marked incomplete (its markers are base64-encoded output paths)."""
    folder = workdir / ".snakemake" / "incomplete"
    return {base64.b64decode(p.name).decode() for p in folder.iterdir()} if folder.is_dir() else set()


def rerun_after_unlock(workdir: Path, config: dict, target: str) -> subprocess.CompletedProcess:
    """A SIGKILLed Snakemake leaves its lock: `--unlock`, then the same command (the profile reruns incomplete jobs)."""
    assert snakemake(workdir, "--unlock", config=config).returncode == 0
    return snakemake(workdir, "--cores", "2", target, config=config)


def temporaries(results: Path) -> list[str]:
    """Hidden temporaries of atomic writes under `results`: a finished rerun removes those killed writers left."""
    return sorted(str(path) for path in results.rglob(".*") if ".tmp" in path.name)


@pytest.mark.slow
def test_killed_in_a_sharded_step_and_in_icd_training_snakemake_resumes_to_identical_weights(voc_workdir, tmp_path):
    config = voc_config(voc_workdir)  # the finished reference run's data, weights and settings
    target = model_target(config)
    results = tmp_path / "results" / "voc"
    shard_logs = [results / "logs" / "superpixels" / shard.replace(".npz", ".log") for shard in SHARDS]
    outputs = [f"results/voc/superpixels/{shard}" for shard in SHARDS]

    def a_shard_job_runs() -> bool:
        """A superpixel job has started and Snakemake has marked its output incomplete (just after the start)."""
        marked = incomplete_markers(tmp_path)
        return any(log.exists() and shard in marked for shard, log in zip(outputs, shard_logs, strict=True))

    kill_snakemake_when(tmp_path, config, target, a_shard_job_runs)
    unfinished = []
    for index, (shard, log) in enumerate(zip(outputs, shard_logs, strict=True)):
        finished = log.exists() and f"shard {index}/{len(SHARDS)}:" in log.read_text()
        if (tmp_path / shard).exists():  # only a finished job's shard may sit at the final name, and it is whole
            assert finished, f"{shard} written by a killed job"
            assert len(ShardStore([tmp_path / shard])) > 0
        elif log.exists():
            unfinished.append(shard)
    assert unfinished, "no superpixel job was killed"
    assert incomplete_markers(tmp_path) & set(unfinished)  # the markers outlive the kill
    assert snakemake(tmp_path, "--unlock", config=config).returncode == 0
    dry = output(snakemake(tmp_path, "-n", target, config=config))
    assert all(shard in dry for shard in unfinished), dry[-3000:]

    checkpoint = results / "networks" / "icd" / "checkpoint.pt"
    kill_snakemake_when(tmp_path, config, target, checkpoint.exists)
    assert not (results / "networks" / "icd" / "model.pt").exists()
    killed_after = torch.load(checkpoint, weights_only=True)["epoch"]
    assert killed_after < ICD_EPOCHS - 1
    result = rerun_after_unlock(tmp_path, config, target)
    assert result.returncode == 0, output(result)[-4000:]
    log = (results / "logs" / "train_icd" / "icd.log").read_text()
    assert "resuming from results/voc/networks/icd/checkpoint.pt" in log
    reference = voc_workdir / "results" / "voc" / "networks" / "icd"
    assert_resumed_after(
        log,
        "epoch",
        killed_after,
        json.loads((results / "networks" / "icd" / "history.json").read_text()),
        json.loads((reference / "history.json").read_text()),
    )
    assert (
        differing_weights(
            trained_weights(results / "networks" / "icd" / "model.pt"), trained_weights(reference / "model.pt")
        )
        == []
    )
    assert not temporaries(results)


@pytest.mark.slow
def test_killed_deeplab_training_resumes_to_identical_weights(voc_workdir, tmp_path):
    config = voc_config(voc_workdir)
    target = deeplab_target(config)
    folder = tmp_path / Path(target).parent
    kill_snakemake_when(tmp_path, config, target, (folder / "checkpoint.pt").exists)
    assert not (folder / "model.pt").exists()
    killed_after = torch.load(folder / "checkpoint.pt", weights_only=True)["epoch"]
    assert killed_after < DEEPLAB_ITERATIONS - 1
    result = rerun_after_unlock(tmp_path, config, target)
    assert result.returncode == 0, output(result)[-4000:]
    log = (tmp_path / "results" / "voc" / "logs" / "deeplab" / "train_vgg16_gt.log").read_text()
    assert "resuming from" in log
    reference = voc_workdir / Path(target).parent
    assert_resumed_after(
        log,
        "iteration",
        killed_after,
        json.loads((folder / "history.json").read_text()),
        json.loads((reference / "history.json").read_text()),
    )
    assert differing_weights(trained_weights(folder / "model.pt"), trained_weights(voc_workdir / target)) == []
    assert not temporaries(tmp_path / "results")


# ---------------------------------------------------------------------------------------------
# Safe loading and memory.

SCANNED_SOURCES = ("wsss", "icd", "deeplab", "benchmarks", "workflow", "Snakefile")


def _is_weights_only(call: ast.Call) -> bool:
    return any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords
    )


def torch_loads(source: str, python: bool = True) -> list[tuple[int, bool]]:
    """(line, weights_only=True?) of every `torch.load(` call: parsed for Python, per line for Snakemake files."""
    if not python:
        return [
            (number, "weights_only=True" in line)
            for number, line in enumerate(source.splitlines(), start=1)
            if "torch.load(" in line
        ]
    return [
        (node.lineno, _is_weights_only(node))
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
    ]


def test_the_scanner_tells_safe_from_unsafe_loads():
    assert torch_loads(
        "import torch\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
        "torch.load(p, map_location='cpu', weights_only=True)\n"
    ) == [(2, False), (3, False), (4, True)]
    assert torch_loads("shell: \"python -c 'torch.load(p)'\"\n", python=False) == [(1, False)]


def test_every_torch_load_in_the_sources_is_weights_only():
    files = [
        path
        for name in SCANNED_SOURCES
        for path in ((PROJECT_ROOT / name).rglob("*") if (PROJECT_ROOT / name).is_dir() else [PROJECT_ROOT / name])
        if path.is_file() and (path.suffix in (".py", ".smk") or path.name == "Snakefile")
    ]
    calls = {
        f"{path.relative_to(PROJECT_ROOT)}:{line}": safe
        for path in files
        for line, safe in torch_loads(path.read_text(), python=path.suffix == ".py")
    }
    # the scan sees every loader: weights, the trainers' checkpoint resume, scores, DeepLab inference
    assert {"wsss/nets/normalisation.py", "wsss/core/checkpoints.py", "icd/scores.py", "deeplab/infer.py"} <= {
        where.split(":")[0] for where in calls
    }
    assert [where for where, safe in calls.items() if not safe] == []


@pytest.mark.slow
def test_memory_benchmark_reports_peak_rss_per_stage_and_compact_scores(synthetic_runs):
    import pandas as pd

    from benchmarks.memory import score_sizes

    results = synthetic_runs["plain"] / "results" / "tiny"
    printed = subprocess.run(
        [sys.executable, "benchmarks/memory.py", "--results", str(results)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    benchmarks = results / "benchmarks"
    expected = {
        "train_icd/icd": pd.read_csv(benchmarks / "train_icd" / "icd.tsv", sep="\t")["max_rss"].max(),
        "superpixels": max(
            pd.read_csv(p, sep="\t")["max_rss"].max() for p in (benchmarks / "superpixels").glob("*.tsv")
        ),
    }
    for stage, max_rss in expected.items():
        line = next(line for line in printed.splitlines() if line.startswith(f"{stage} "))
        assert f"{max_rss:.1f}" in line.split()
    assert "VOC train_aug estimate (10582 images, 65x65 features" in printed

    sizes = score_sizes(sorted((results / "networks" / "icd" / "scores").glob("shard_*.npz")))
    labels = json.loads((results / "data" / "dataset.json").read_text())["labels"]
    assert sizes["images"] == len(labels) == 16
    assert sizes["dtypes"] == ["float16"]
    assert sizes["bytes_per_class_pixel"] == 4 * 2  # cam, bottom_up, refined, adapted; 2 bytes each
    assert sizes["classes_per_image"] == pytest.approx(sum(map(len, labels.values())) / len(labels))

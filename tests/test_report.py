"""The report's plots, and the Snakemake HTML report of a finished tiny run rendered by headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.apt import AptUnavailable, apt_install
from tests.workflow_helpers import snakemake
from wsss.plots import per_class_iou_chart, sign_flips, training_curves

CLASSES = ("aeroplane", "boat", "cat")


def record(epoch: int, signs: tuple[int, int, int], lr: float = 0.01) -> dict:
    return {
        "epoch": epoch,
        "lr": lr,
        "sign": dict(zip(CLASSES, signs, strict=True)),
        "loss_cam": 1.0 / epoch,
        "loss_bottom_up": -float(epoch),
        "loss_total": 1.0 / epoch - epoch,
    }


def test_sign_flips_count_changes_from_the_previous_epoch_starting_at_plus_one():
    history = [record(1, (1, -1, 1)), record(2, (1, -1, 1)), record(3, (-1, 1, -1)), record(4, (-1, 1, 1))]
    expected = []
    previous = (1, 1, 1)
    for entry in history:  # brute force over the tuples the records were made from
        signs = tuple(entry["sign"][name] for name in CLASSES)
        expected.append(sum(a != b for a, b in zip(signs, previous, strict=True)))
        previous = signs
    assert sign_flips(history) == expected == [1, 0, 3, 1]
    assert sign_flips([]) == []


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def test_training_curves_and_iou_chart_are_drawn(tmp_path):
    training_curves(tmp_path / "curves.png", [record(e, (1, 1, -1), lr=0.01 * (1 - e / 5)) for e in range(1, 5)])
    per_class_iou_chart(
        tmp_path / "iou.png", {"cam": {"background": 0.8, "cat": 0.3}, "icd": {"background": 0.7, "cat": 0.5}}
    )
    for name in ("curves.png", "iou.png"):
        pixels = _pixels(tmp_path / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 500
        assert pixels.std() > 10  # drawn, not blank
    with pytest.raises(ValueError, match="empty training history"):
        training_curves(tmp_path / "none.png", [])
    assert not (tmp_path / "none.png").exists()


def test_cli_verbs_read_the_artifacts_the_rules_give_them(tmp_path, monkeypatch):
    import wsss.plots
    from icd.cli import main

    table = tmp_path / "seeds_per_class.csv"
    table.write_text("variant,background,aeroplane,train\ncam,0.8000,0.2500,0.3000\nicd,0.7000,0.4000,0.3500\n")
    drawn = {}
    monkeypatch.setattr(wsss.plots, "per_class_iou_chart", lambda out, per_class: drawn.update(per_class))
    assert main(["seed-iou-chart", "--per-class", str(table), "--out", str(tmp_path / "iou.png")]) == 0
    with open(table, newline="") as handle:
        expected = {
            row.pop("variant"): {name: float(value) for name, value in row.items()} for row in csv.DictReader(handle)
        }
    assert drawn == expected
    assert [list(per_class) for per_class in drawn.values()] == [["background", "aeroplane", "train"]] * 2

    history = tmp_path / "history.json"
    history.write_text(json.dumps([record(1, (1, 1, -1)), record(2, (1, -1, -1))]))
    assert main(["training-curves", "--history", str(history), "--out", str(tmp_path / "curves.png")]) == 0
    assert _pixels(tmp_path / "curves.png").std() > 10


def chromium() -> str:
    """The Chromium binary, installing Debian's `chromium` when missing (skips where that is impossible)."""
    found = shutil.which("chromium")
    if found:
        return found
    start = time.perf_counter()
    try:
        result = apt_install(["chromium"])
    except AptUnavailable as reason:
        pytest.skip(f"Chromium is not installed: {reason}")
    if result.returncode != 0:
        pytest.skip(f"`{' '.join(result.args)}` failed, so the report cannot be rendered: {result.stderr[-500:]}")
    print(f"\ninstalled chromium in {time.perf_counter() - start:.0f} s")
    return shutil.which("chromium")


def headless(binary: str, *args: str) -> subprocess.CompletedProcess:
    """Chromium without a display; the virtual-time budget lets the report's JavaScript render first."""
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--virtual-time-budget=15000",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


# Opens the view named in the URL fragment through the report app's own handlers (what a click does):
# "category=<name>", "info=<result path>" (caption and details) or "image=<result path>".
VIEW_DRIVER = """<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    const [kind, target] = decodeURIComponent(location.hash.slice(1)).split("=");
    if (kind === "category") app.showCategory(target);
    if (kind === "info") app.showResultInfo(target);
    if (kind === "image") app.setView({content: "img", contentPath: results[target].data_uri, resultPath: target});
  }, 100);
});
</script>"""


class RenderedReport:
    """The report as headless Chromium renders it, one view at a time."""

    def __init__(self, binary: str, report: Path, folder: Path) -> None:
        html = report.read_text()
        self.categories = json.loads(re.search(r"categories = (\{.*?\});\n", html).group(1))
        self.driven = folder / "driven.html"
        end = html.rindex("</body>")
        self.driven.write_text(html[:end] + VIEW_DRIVER + html[end:])
        self.binary, self.folder = binary, folder

    def dom(self, view: str) -> str:
        """The rendered page without its scripts (they embed every name, rendered or not)."""
        dom = headless(self.binary, "--dump-dom", f"{self.driven.as_uri()}#{view}").stdout
        return re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)

    def screenshot(self, view: str) -> np.ndarray:
        path = self.folder / "view.png"
        headless(self.binary, f"--screenshot={path}", "--window-size=1400,1000", f"{self.driven.as_uri()}#{view}")
        return _pixels(path)


TABLES = ("tables/score_map_ap.csv", "tables/seeds.csv", "tables/seeds_per_class.csv")
FIGURES = ("figures/seeds_fig4.png", "figures/seeds_per_class_iou.png", "figures/icd_training.png")


@pytest.mark.slow
def test_report_renders_tables_and_figures(finished_run, tmp_path):
    binary = chromium()
    results = finished_run / "results" / "tiny"
    report = results / "report.html"
    result = snakemake(finished_run, "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    screenshot = tmp_path / "landing.png"
    headless(binary, f"--screenshot={screenshot}", "--window-size=1400,1000", report.as_uri())
    assert _pixels(screenshot).std() > 10, "the rendered report is blank"

    rendered = RenderedReport(binary, report, tmp_path)
    assert {"ICD", "Seeds"} <= set(rendered.categories)
    listed = set()
    for category, subcategories in rendered.categories.items():
        dom = rendered.dom(f"category={category}")
        for path in (p for paths in subcategories.values() for p in paths):
            assert f">{path}<" in dom, f"category {category} does not list {path}"
            listed.add(path)
    assert {f"results/tiny/{name}" for name in TABLES + FIGURES} <= listed

    for name in TABLES:  # the caption renders the CSV itself as an HTML table, header first
        with open(results / name, newline="") as handle:
            header = next(csv.reader(handle))
        dom = rendered.dom(f"info=results/tiny/{name}")
        table = re.search(r"<table\b.*?</table>", dom, flags=re.S)
        assert table, f"no table rendered for {name}"
        cells = re.findall(r"<th\b[^>]*>(.*?)</th>", table.group(0), flags=re.S)
        assert cells == header, name

    for name in FIGURES:
        dom = rendered.dom(f"image=results/tiny/{name}")
        assert f";filename={Path(name).name};base64," in "".join(
            re.findall(r'<img src="(data:image/png;[^"]*)"', dom)
        ), f"{name} is not displayed"
        content = rendered.screenshot(f"image=results/tiny/{name}")[:, 300:]  # right of the navigation bar
        assert content.std() > 10, f"{name} renders blank"

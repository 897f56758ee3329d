"""A synthetic PASCAL VOC 2012 + SBD dataset on which the weak-supervision problem is real.

Every object has a textured grey body, faintly tinted with its class's hue (`body_tint`), and a small
saturated disc of that hue at one end of its long axis. The disc is what tells the classes apart
best, so a classifier's CAM peaks on that part rather than over the whole (elongated) object: the
failure mode ICD addresses (see reference/synthetic-feasibility.md). The tint keeps the rest of the
object class-specific too, as real objects are; the official SPRefine relies on that when it compares
classes' scores at a pixel (with identical bodies, which class wins a body in a multi-class image is
arbitrary).
Files follow the VOC layout exactly, so the real VOC reader is what reads them.

Some classes come with a background context (water under boats, rails under trains: `context_classes`), the
spurious cue a classifier learns along with the class. Two more outputs serve the study of that cue:
ContextMasks/<id>.png says where each labelled image's cues lie (the class index of the context, 0 elsewhere),
to measure how far a CAM leaks onto them; and OoD/ holds a hard out-of-distribution set in W-OoD's layout (Lee et
al., CVPR 2022; OoD/ood_list.txt, one image path per line): images showing the cues without any class object,
which teach the classifier not to fire on them. Extra/ holds extra image-level-labelled images in data.extra's list
layout (Extra/extra_list.txt, `<path> <class>` per line), as a web crawl by class name would give them: statistics
of their own (one class each, larger and more central objects, plain backdrops, the context cues half as often),
for the ICD networks to train on besides the training split.

Also here: `pretext_images`, a generic shape x texture classification task that stands in for
ImageNet pretraining (no weights can be downloaded), sharing the background generator.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.color import hsv2rgb
from tqdm import tqdm

from wsss.core.files import atomic_dir, write_text
from wsss.data.classes import FOREGROUND_CLASSES, IGNORE_LABEL, class_index
from wsss.data.io import write_grey, write_jpeg, write_mask

SPLITS = ("train", "val", "test")
_MIN_VISIBLE = 0.75  # share of its area an object keeps when later objects overlap it
_PLACEMENT_TRIES = 60  # shapes and positions tried per object before the layout restarts
_LAYOUT_TRIES = 30
_STRAY_CONTEXT_PROBABILITY = 0.05  # a context without its class: correlation, not a giveaway
_BODY_GREY, _BODY_CONTRAST = 128.0, 35.0
_SALIENCY_MISS_PROBABILITY = 0.25  # per object: a blob of it is missing from the saliency map
_SALIENCY_FALSE_PROBABILITY = 0.35  # per image: a false-positive blob in the background

# Background context of each VOC class (used for the configured `context_classes` only).
_CONTEXT_KIND = {
    "aeroplane": "sky",
    "bird": "sky",
    "boat": "water",
    "train": "rails",
    "bicycle": "road",
    "bus": "road",
    "car": "road",
    "motorbike": "road",
    "cow": "grass",
    "dog": "grass",
    "horse": "grass",
    "person": "grass",
    "sheep": "grass",
    "bottle": "floor",
    "cat": "floor",
    "chair": "floor",
    "diningtable": "floor",
    "pottedplant": "floor",
    "sofa": "floor",
    "tvmonitor": "floor",
}


# ----------------------------------------------------------------------------- colours, backgrounds


def _hsv(h, s, v) -> np.ndarray:
    """RGB in 0..255 (float32) from broadcastable HSV arrays in 0..1."""
    h, s, v = np.broadcast_arrays(h, s, v)
    return (hsv2rgb(np.stack([h % 1.0, s, v], axis=-1)) * 255.0).astype(np.float32)


def _muted_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """n low-saturation colours: backgrounds must never look like a class part."""
    return _hsv(rng.random(n), rng.uniform(0.05, 0.35, n), rng.uniform(0.25, 0.85, n))


def _waves(rng: np.random.Generator, n: int, h: int, w: int, wavelength: np.ndarray) -> np.ndarray:
    """cos of a plane wave per image (n, h, w) at random angle and phase, split into separable
    row and column factors so no trigonometry runs per pixel."""
    angle, phase = rng.uniform(0, 2 * np.pi, (2, n, 1, 1)).astype(np.float32)
    k = (2 * np.pi / wavelength).astype(np.float32).reshape(n, 1, 1)
    x = k * np.cos(angle) * np.arange(w, dtype=np.float32)[None, None, :]
    y = k * np.sin(angle) * np.arange(h, dtype=np.float32)[None, :, None] + phase
    return np.cos(x) * np.cos(y) - np.sin(x) * np.sin(y)


def _gradients(angle: np.ndarray, h: int, w: int) -> np.ndarray:
    """Linear ramps (n, h, w) from 0 to 1 across each image, along its angle (n, 1, 1, radians)."""
    ramp = np.cos(angle) * np.linspace(0, 1, w, dtype=np.float32)
    ramp = ramp + np.sin(angle) * np.linspace(0, 1, h, dtype=np.float32)[:, None]
    return (ramp - ramp.min(axis=(1, 2), keepdims=True)) / np.maximum(np.ptp(ramp, axis=(1, 2), keepdims=True), 1e-6)


def _backgrounds(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """n noise-free backgrounds (n, h, w, 3) float32: a gradient, stripes or blotches between two muted colours.

    Vectorised over n so the pretext sampler makes thousands at once; the dataset uses n = 1.
    """
    first, second = _muted_colours(rng, n), _muted_colours(rng, n)
    kind = rng.integers(0, 3, n)
    pattern = _gradients(rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32), h, w)
    stripes = np.flatnonzero(kind == 1)  # softened square waves, 10-24 px period, over the gradient
    waves = _waves(rng, stripes.size, h, w, rng.uniform(10, 24, stripes.size))
    pattern[stripes] = 0.5 * pattern[stripes] + 0.5 * (np.clip(3 * waves, -1, 1) * 0.5 + 0.5)
    blotches = np.flatnonzero(kind == 2)  # a few random low-frequency waves
    waves = sum(_waves(rng, blotches.size, h, w, rng.uniform(0.25, 0.7, blotches.size) * max(h, w)) for _ in range(4))
    pattern[blotches] = np.clip(waves / 4 + 0.5, 0, 1)
    pattern *= rng.uniform(0.3, 1.0, (n, 1, 1)).astype(np.float32)
    return first[:, None, None] + pattern[..., None] * (second - first)[:, None, None]


def _add_noise(rng: np.random.Generator, images: np.ndarray, sigma_range: tuple[float, float] = (3, 8)) -> np.ndarray:
    """Per-image Gaussian pixel noise, its sigma drawn in `sigma_range`, rounded to uint8."""
    sigma = rng.uniform(*sigma_range, (images.shape[0],) + (1,) * (images.ndim - 1)).astype(np.float32)
    noisy = images + sigma * rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)  # + 0.5 then truncation rounds


# ----------------------------------------------------------------------------- class contexts


def _band(rng: np.random.Generator, h: int, w: int, top: bool, lo: float, hi: float, wave: float) -> np.ndarray:
    """A full-width band at the top or bottom, its edge a gentle wave."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    edge = h * rng.uniform(lo, hi) + wave * np.sin(2 * np.pi * x / rng.uniform(20, 40) + rng.uniform(0, 2 * np.pi))
    return y < edge if top else y > edge


def _water(rng, image) -> np.ndarray:
    """Blue band at the bottom with horizontal ripples (boat)."""
    h, w = image.shape[:2]
    mask = _band(rng, h, w, top=False, lo=0.55, hi=0.75, wave=rng.uniform(1, 3))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ripple = np.sin(2 * np.pi * y / rng.uniform(3, 5) + 0.6 * np.sin(x / rng.uniform(4, 8)))
    colour = _hsv(rng.uniform(0.55, 0.62), rng.uniform(0.45, 0.7), rng.uniform(0.45, 0.7))
    image[mask] = colour + 18.0 * ripple[mask, None]
    return mask


def _rails(rng, image) -> np.ndarray:
    """Two parallel dark rails over brown ties, across the image at a random angle (train)."""
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    across = (x - rng.uniform(0.3, 0.7) * w) * -np.sin(angle) + (y - rng.uniform(0.3, 0.7) * h) * np.cos(angle)
    along = x * np.cos(angle) + y * np.sin(angle)
    gauge = rng.uniform(0.12, 0.18) * min(h, w)
    ties = (np.abs(across) < gauge / 2 + 3) & (along % rng.uniform(7, 10) < 2.5)
    image[ties] = _hsv(rng.uniform(0.05, 0.1), 0.5, rng.uniform(0.3, 0.45))
    rails = np.abs(np.abs(across) - gauge / 2) < 1.2
    image[rails] = rng.uniform(40, 70)
    return ties | rails


def _sky(rng, image) -> np.ndarray:
    """Light blue band at the top, brighter upwards (aeroplane, bird)."""
    h, w = image.shape[:2]
    mask = _band(rng, h, w, top=True, lo=0.35, hi=0.55, wave=rng.uniform(0, 2))
    shade = 1.0 - 0.25 * np.arange(h, dtype=np.float32) / h
    colour = _hsv(rng.uniform(0.55, 0.6), rng.uniform(0.25, 0.45), rng.uniform(0.75, 0.95))
    image[mask] = np.broadcast_to(colour * shade[:, None, None], (h, w, 3))[mask]
    return mask


def _road(rng, image) -> np.ndarray:
    """Dark grey horizontal band with a dashed white centre line (car, bus, ...)."""
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    centre, half = rng.uniform(0.4, 0.8) * h, rng.uniform(0.12, 0.2) * h
    band = np.abs(y - centre) < half
    image[band] = rng.uniform(60, 100)
    dashes = (np.abs(y - centre) < 1.0) & ((x + rng.uniform(0, 14)) % 14 < 8)
    image[dashes] = 235.0
    return band | dashes


def _grass(rng, image) -> np.ndarray:
    """Green band at the bottom with vertical blade streaks (animals, person)."""
    h, w = image.shape[:2]
    mask = _band(rng, h, w, top=False, lo=0.5, hi=0.7, wave=rng.uniform(1, 3))
    blades = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), (3, 0.5))
    colour = _hsv(rng.uniform(0.25, 0.35), rng.uniform(0.4, 0.6), rng.uniform(0.35, 0.6))
    image[mask] = colour + 60.0 * blades[mask, None]
    return mask


def _floor(rng, image) -> np.ndarray:
    """Wooden planks at the bottom (indoor classes)."""
    h, w = image.shape[:2]
    mask = _band(rng, h, w, top=False, lo=0.5, hi=0.7, wave=0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    grain = 8.0 * np.sin(x / rng.uniform(2, 4) + 3 * np.sin(y / 5))
    joints = (y % rng.uniform(8, 12)) < 1.0
    colour = _hsv(rng.uniform(0.06, 0.1), rng.uniform(0.4, 0.6), rng.uniform(0.45, 0.65))
    wood = colour + grain[..., None] - 50.0 * joints[..., None]
    image[mask] = wood[mask]
    return mask


# Each painter draws its cue over the image in place and returns the pixels it painted: where the cue lies, which
# the dataset records (ContextMasks/) so that a CAM's leakage onto its class's context can be measured.
_CONTEXT_PAINTERS = {"water": _water, "rails": _rails, "sky": _sky, "road": _road, "grass": _grass, "floor": _floor}


# ----------------------------------------------------------------------------- objects


@dataclass
class _Object:
    """One placed object: its mask and part patches and where the patch sits in the image."""

    name: str
    mask: np.ndarray
    part: np.ndarray
    top: int = 0
    left: int = 0
    difficult: bool = False

    def window(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.mask.shape[0]), slice(self.left, self.left + self.mask.shape[1])


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float) -> np.ndarray:
    return (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2


def _object_shape(rng: np.random.Generator, name: str, scale: float, length, width, part_fraction: float) -> _Object:
    """An elongated tapered or bent blob, randomly rotated, with a part disc at one end of its axis.

    The body is a union of discs along a (possibly curved) centre line with a linearly shrinking
    radius; the part radius is fitted so that part / object area is `part_fraction` on the pixels.
    """
    long, wide = rng.uniform(*length) * scale, rng.uniform(*width) * scale
    if rng.random() < 0.5:  # bent, mildly tapered
        bend, taper = rng.uniform(0.12, 0.25) * rng.choice([-1, 1]), rng.uniform(0.15, 0.35)
    else:  # straight, strongly tapered
        bend, taper = rng.uniform(-0.05, 0.05), rng.uniform(0.35, 0.6)
    span = max(long - wide, 1.0)
    t = np.linspace(0.0, 1.0, int(span / 2) + 8)
    u, v = (t - 0.5) * span, bend * span * (1 - (2 * t - 1) ** 2)
    radius = wide / 2 * (1 - taper * t)
    angle = rng.uniform(0, 2 * np.pi)
    cy, cx = u * np.sin(angle) + v * np.cos(angle), u * np.cos(angle) - v * np.sin(angle)

    pad = wide / 2 + 2
    y0, x0 = np.floor(cy.min() - pad), np.floor(cx.min() - pad)
    yy, xx = np.mgrid[y0 : np.ceil(cy.max() + pad) + 1, x0 : np.ceil(cx.max() + pad) + 1].astype(np.float32)
    yy, xx = yy + 0.5, xx + 0.5  # pixel centres
    centres = (cy[:, None, None], cx[:, None, None])
    body = ((yy - centres[0]) ** 2 + (xx - centres[1]) ** 2 < radius[:, None, None] ** 2).any(0)

    end, inner = (-1, -2) if rng.random() < 0.5 else (0, 1)  # the part sits at the narrow or the wide end
    outward = np.array([cy[end] - cy[inner], cx[end] - cx[inner]])
    outward /= np.linalg.norm(outward)

    def part_disc(r: float) -> np.ndarray:  # touches the tip: tangent to the end cap from inside
        centre_y, centre_x = np.array([cy[end], cx[end]]) + outward * (radius[end] - r)
        return _disc(yy, xx, centre_y, centre_x, r)

    r = np.sqrt(part_fraction * body.sum() / np.pi)
    for _ in range(4):  # fixed point on the rasterised areas
        part = part_disc(r)
        r *= np.sqrt(part_fraction * (body | part).sum() / max(part.sum(), 1))
    part = part_disc(r)
    mask = body | part
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    return _Object(name, mask[crop], part[crop])


def _offset(rng, free: int, spread: float) -> int:
    """A position in 0..free, uniform over the central `spread` of that range (1: all of it)."""
    margin = round((1 - spread) * free / 2)
    return int(rng.integers(margin, free - margin + 1))


def _try_place(rng, obj: _Object, instances, protected, areas, visible, spread: float = 1.0) -> bool:
    """Put `obj` on top at a random position (within the central `spread` of the positions that fit) if every
    earlier part stays fully visible and every earlier object keeps `_MIN_VISIBLE` of its area; update the maps
    when it does."""
    (h, w), (ph, pw) = instances.shape, obj.mask.shape
    if ph > h or pw > w:
        return False
    obj.top, obj.left = _offset(rng, h - ph, spread), _offset(rng, w - pw, spread)
    window = obj.window()
    if protected[window][obj.mask].any():
        return False
    covered = np.bincount(instances[window][obj.mask], minlength=len(areas))
    if np.any((visible - covered)[1:] < _MIN_VISIBLE * areas[1:]):
        return False
    visible -= covered
    instances[window][obj.mask] = len(areas)
    protected[window] |= obj.part
    return True


def _layout(rng, names: list[str], h: int, w: int, length, width, part_fraction: float, spread: float = 1.0):
    """Rejection-sample all objects of an image, each within the central `spread` of the positions that fit it;
    returns the objects and the instance map (0 = background)."""
    scale = min(h, w)
    for _ in range(_LAYOUT_TRIES):
        instances = np.zeros((h, w), np.int64)
        protected = np.zeros((h, w), bool)
        areas, visible, objects = np.zeros(1), np.zeros(1), []
        for name in names:
            for _ in range(_PLACEMENT_TRIES):
                obj = _object_shape(rng, name, scale, length, width, part_fraction)
                if _try_place(rng, obj, instances, protected, areas, visible, spread):
                    objects.append(obj)
                    areas, visible = np.append(areas, obj.mask.sum()), np.append(visible, obj.mask.sum())
                    break
            else:
                break
        if len(objects) == len(names):
            return objects, instances
    raise ValueError(
        f"could not place {len(names)} objects in a {h}x{w} image; reduce object_length, "
        "object_width or objects_per_image"
    )


def _class_plan(rng, classes: list[str], objects_per_image, single_class_fraction: float) -> list[str]:
    """Class of each object, in drawing order: one class with probability `single_class_fraction`, else 2+."""
    lo, hi = objects_per_image
    if len(classes) < 2 or hi < 2 or rng.random() < single_class_fraction:
        return [classes[rng.integers(len(classes))]] * int(rng.integers(lo, hi + 1))
    count = int(rng.integers(max(lo, 2), hi + 1))
    names = list(rng.choice(classes, 2, replace=False)) + list(rng.choice(classes, count - 2))
    return [str(names[i]) for i in rng.permutation(count)]


def _part_colours(classes: list[str]) -> dict[str, np.ndarray]:
    """Saturated colours with evenly spaced hues: the parts' colours and the bodies' tints."""
    return {name: _hsv(i / len(classes), 0.9, 0.95) for i, name in enumerate(classes)}


def _paint_object(rng, image: np.ndarray, obj: _Object, colour: np.ndarray, body_tint: float) -> None:
    """Textured body (2-px checkerboard around mid grey, shifted `body_tint` of the way towards the part's
    hue) and the class-coloured part, drawn over `image`."""
    window = obj.window()
    yy, xx = np.mgrid[window]
    checker = ((yy // 2 + xx // 2 + rng.integers(2)) % 2).astype(np.float32) * 2 - 1
    grey = _BODY_GREY + rng.uniform(-10, 10) + _BODY_CONTRAST * checker
    jitter = rng.uniform(-12, 12, 3).astype(np.float32)
    patch = image[window]
    patch[obj.mask] = grey[obj.mask, None] + body_tint * (colour - colour.mean())
    patch[obj.part] = colour + jitter


# ----------------------------------------------------------------------------- masks, saliency, XML


def _label_mask(instances: np.ndarray, objects: list[_Object], boundary_width: int) -> np.ndarray:
    """Class index of the topmost object per pixel, with an ignore band straddling every instance boundary."""
    lut = np.array([0] + [class_index(o.name) for o in objects], np.uint8)
    labels = lut[instances]
    if boundary_width > 0:  # a window of width+1 flags exactly `width` pixels across a straight edge
        size = boundary_width + 1
        band = ndimage.maximum_filter(instances, size) != ndimage.minimum_filter(instances, size)
        labels[band] = IGNORE_LABEL
    return labels


def _blob(h: int, w: int, cy: float, cx: float, sigma: float) -> np.ndarray:
    y, x = np.ogrid[0:h, 0:w]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2)).astype(np.float32)


def _saliency(rng, instances: np.ndarray, noise: float) -> np.ndarray:
    """A plausible off-the-shelf saliency map: blurred foreground, holes, false blobs and smooth noise."""
    h, w = instances.shape
    sal = ndimage.gaussian_filter((instances > 0).astype(np.float32), rng.uniform(1.5, 3.0))
    for k in range(1, instances.max() + 1):
        ys, xs = np.nonzero(instances == k)
        if ys.size and rng.random() < _SALIENCY_MISS_PROBABILITY:
            i = rng.integers(ys.size)
            sal *= 1 - 0.8 * _blob(h, w, ys[i], xs[i], 0.15 * np.sqrt(ys.size))
    if rng.random() < _SALIENCY_FALSE_PROBABILITY:
        sal += rng.uniform(0.4, 0.8) * _blob(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 8))
    smooth = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 4)
    smooth /= max(np.abs(smooth).max(), 1e-6)
    return np.clip(sal + noise * smooth, 0, 1)


def _annotation_xml(image_id: str, objects: list[_Object], instances: np.ndarray, segmented: bool) -> str:
    """VOC XML; each box is the visible extent of its object, 1-based inclusive as in VOC."""
    h, w = instances.shape
    lines = [
        "<annotation>",
        "\t<folder>VOC2012</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source><database>ICD synthetic VOC</database></source>",
        f"\t<size><width>{w}</width><height>{h}</height><depth>3</depth></size>",
        f"\t<segmented>{int(segmented)}</segmented>",
    ]
    for k, obj in enumerate(objects, start=1):
        ys, xs = np.nonzero(instances == k)
        lines += [
            "\t<object>",
            f"\t\t<name>{obj.name}</name>",
            "\t\t<pose>Unspecified</pose>",
            "\t\t<truncated>0</truncated>",
            f"\t\t<difficult>{int(obj.difficult)}</difficult>",
            f"\t\t<bndbox><xmin>{xs.min() + 1}</xmin><ymin>{ys.min() + 1}</ymin>"
            f"<xmax>{xs.max() + 1}</xmax><ymax>{ys.max() + 1}</ymax></bndbox>",
            "\t</object>",
        ]
    return "\n".join([*lines, "</annotation>"]) + "\n"


# ----------------------------------------------------------------------------- one image


@dataclass
class _Sample:
    rgb: np.ndarray
    instances: np.ndarray
    objects: list[_Object]
    contexts: list[str]  # context classes whose context is painted
    context_labels: np.ndarray  # uint8: class index of the context whose cue shows at a pixel, 0 elsewhere


def _render(rng, o: dict) -> _Sample:
    """One image: size, classes, background with contexts, objects on top; `o` holds the generator options."""
    h, w = (int(s) for s in rng.integers(o["min_size"], o["max_size"] + 1, 2))
    names = _class_plan(rng, o["classes"], o["objects_per_image"], o["single_class_fraction"])
    image = _backgrounds(rng, 1, h, w)[0]
    contexts, context_labels = [], np.zeros((h, w), np.uint8)
    for name in o["context_classes"]:
        chance = o["context_probability"] if name in names else _STRAY_CONTEXT_PROBABILITY
        if rng.random() < chance:
            context_labels[_CONTEXT_PAINTERS[_CONTEXT_KIND[name]](rng, image)] = class_index(name)
            contexts.append(name)
    objects, instances = _layout(rng, names, h, w, o["object_length"], o["object_width"], o["part_fraction"])
    context_labels[instances > 0] = 0  # the objects are painted over their contexts
    colours = _part_colours(o["classes"])
    for obj in objects:
        obj.difficult = bool(rng.random() < o["difficult_fraction"])
        _paint_object(rng, image, obj, colours[obj.name], o["body_tint"])
    if all(obj.difficult for obj in objects):
        objects[0].difficult = False  # every image keeps a labelled object
    return _Sample(_add_noise(rng, image[None])[0], instances, objects, contexts, context_labels)


# ----------------------------------------------------------------------------- the hard OoD set (W-OoD)

# <dataset root>/OoD/ood_list.txt lists the OoD images (W-OoD's list: one path per line, relative to OoD/).
OOD_FOLDER, OOD_LIST = "OoD", "ood_list.txt"
_OOD_STREAM = 3  # the OoD images' split code in (seed, split, index), beside train, val and test's 0, 1, 2
_SECOND_CUE_PROBABILITY = 0.3
_MAX_DISTRACTORS = 2


def _ood_cue_kinds(o: dict) -> list[str]:
    """The context kinds OoD images draw their cues from: the context classes' (the cues a classifier learns to
    fire on, which the OoD images teach it not to), or every class's when no class has a context."""
    return list(dict.fromkeys(_CONTEXT_KIND[name] for name in o["context_classes"] or o["classes"]))


def _distractor(rng, image: np.ndarray) -> None:
    """A flat muted disc, ring or squat rectangle over the image: clutter that no class object resembles (no
    saturated part, no textured grey elongated body), so an OoD image is not told apart by being empty."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    cy, cx, radius = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.06, 0.16) * min(h, w)
    shape = rng.integers(3)
    if shape == 0:
        region = _disc(yy, xx, cy, cx, radius)
    elif shape == 1:
        region = _disc(yy, xx, cy, cx, radius) & ~_disc(yy, xx, cy, cx, radius * rng.uniform(0.4, 0.7))
    else:  # half-sides within a factor 2 of each other: never as elongated as an object
        half_height, half_width = radius * rng.uniform(0.5, 1.0, 2)
        region = (np.abs(yy - cy) < half_height) & (np.abs(xx - cx) < half_width)
    image[region] = _muted_colours(rng, 1)[0]


def _render_ood(rng, o: dict) -> tuple[np.ndarray, list[str]]:
    """One hard OoD image: the dataset's sizes and backgrounds, one context cue (sometimes a second of another
    kind), up to `_MAX_DISTRACTORS` class-free distractors and no class object. Returns it and its cues' kinds."""
    h, w = (int(s) for s in rng.integers(o["min_size"], o["max_size"] + 1, 2))
    image = _backgrounds(rng, 1, h, w)[0]
    pool = _ood_cue_kinds(o)
    kinds = [pool[rng.integers(len(pool))]]
    if len(pool) > 1 and rng.random() < _SECOND_CUE_PROBABILITY:
        others = [kind for kind in pool if kind != kinds[0]]
        kinds.append(others[rng.integers(len(others))])
    for kind in kinds:
        _CONTEXT_PAINTERS[kind](rng, image)
    for _ in range(rng.integers(_MAX_DISTRACTORS + 1)):
        _distractor(rng, image)
    return _add_noise(rng, image[None])[0], kinds


def _write_ood_set(root: Path, o: dict, bar: tqdm) -> Counter:
    """The `num_ood` OoD images and their list under root/OoD (nothing for none); returns how many images show each
    cue kind. Image k draws from (seed, _OOD_STREAM, k - 1) alone: it does not depend on how many there are."""
    if not o["num_ood"]:
        return Counter()
    names = [f"JPEGImages/ood_{number:06d}.jpg" for number in range(1, o["num_ood"] + 1)]
    cues: Counter = Counter()
    for index, name in enumerate(names):
        image, kinds = _render_ood(np.random.default_rng([o["seed"], _OOD_STREAM, index]), o)
        write_jpeg(root / OOD_FOLDER / name, image, quality=o["jpeg_quality"])
        cues.update(kinds)
        bar.update()
    write_text(root / OOD_FOLDER / OOD_LIST, "".join(f"{name}\n" for name in names))
    return cues


# ----------------------------------------------------------------------------- the extra image-level-labelled set

# <dataset root>/Extra/extra_list.txt lists the extra images, `<path> <class>` (data.extra's list layout).
EXTRA_FOLDER, EXTRA_LIST = "Extra", "extra_list.txt"
_EXTRA_STREAM = 4  # the extra images' split code in (seed, split, index), after the OoD images' 3
_EXTRA_SECOND_INSTANCE_PROBABILITY = 0.15  # two objects of the class, at the dataset's sizes and positions
_EXTRA_OBJECT_SCALE = 1.2  # a single object's length and width, relative to the dataset's ranges ...
_EXTRA_LARGEST_OBJECT = 0.9  # ... up to this fraction of the shorter side, so that it still fits
_EXTRA_SPREAD = 0.4  # a single object lies within the central 40 % of the positions that fit it
_EXTRA_CONTEXT_SHARE = 0.5  # a context class's cue shows half as often as in the dataset's images
_EXTRA_NOISE = (1.0, 3.0)  # sigma of the pixel noise, the dataset's being 3-8


def _plain_background(rng, h: int, w: int) -> np.ndarray:
    """A web image's backdrop (h, w, 3) float32: one muted colour, or a smooth gradient between two."""
    first, second = _muted_colours(rng, 2)
    if rng.random() < 0.5:
        return np.broadcast_to(first, (h, w, 3)).copy()
    ramp = _gradients(rng.uniform(0, 2 * np.pi, (1, 1, 1)).astype(np.float32), h, w)[0]
    return first + ramp[..., None] * (second - first)


def _render_extra(rng, o: dict) -> tuple[np.ndarray, str, bool]:
    """One web-style image of the dataset's sizes: a class drawn uniformly, one large central object of it (or two
    of the dataset's), a plain backdrop with light noise, and the class's context cue half as often as the dataset
    shows it. Returns the image, its class and whether the cue shows."""
    h, w = (int(s) for s in rng.integers(o["min_size"], o["max_size"] + 1, 2))
    name = o["classes"][rng.integers(len(o["classes"]))]
    image = _plain_background(rng, h, w)
    cue = name in o["context_classes"] and rng.random() < _EXTRA_CONTEXT_SHARE * o["context_probability"]
    if cue:
        _CONTEXT_PAINTERS[_CONTEXT_KIND[name]](rng, image)
    if rng.random() < _EXTRA_SECOND_INSTANCE_PROBABILITY:
        objects, _ = _layout(rng, [name, name], h, w, o["object_length"], o["object_width"], o["part_fraction"])
    else:
        length, width = (
            [min(_EXTRA_OBJECT_SCALE * bound, _EXTRA_LARGEST_OBJECT) for bound in o[key]]
            for key in ("object_length", "object_width")
        )
        objects, _ = _layout(rng, [name], h, w, length, width, o["part_fraction"], spread=_EXTRA_SPREAD)
    for obj in objects:
        _paint_object(rng, image, obj, _part_colours(o["classes"])[name], o["body_tint"])
    return _add_noise(rng, image[None], _EXTRA_NOISE)[0], name, cue


def _write_extra_set(root: Path, o: dict, bar: tqdm) -> list[tuple[str, bool]]:
    """The `num_extra` extra images and their list under root/Extra (nothing for none); returns each image's class
    and whether its context cue shows. Image k draws from (seed, _EXTRA_STREAM, k - 1) alone: it does not depend on
    how many there are, and the dataset's files not on whether there are any."""
    names = [f"JPEGImages/extra_{number:06d}.jpg" for number in range(1, o["num_extra"] + 1)]
    drawn = []
    for index, name in enumerate(names):
        image, class_name, cue = _render_extra(np.random.default_rng([o["seed"], _EXTRA_STREAM, index]), o)
        write_jpeg(root / EXTRA_FOLDER / name, image, quality=o["jpeg_quality"])
        drawn.append((class_name, cue))
        bar.update()
    if names:
        listing = "".join(f"{name} {class_name}\n" for name, (class_name, _) in zip(names, drawn, strict=True))
        write_text(root / EXTRA_FOLDER / EXTRA_LIST, listing)
    return drawn


# ----------------------------------------------------------------------------- the dataset

# Per labelled image, the class index of the context whose cue shows at each pixel (0: none, objects included).
CONTEXT_MASKS = "ContextMasks"


def _validate(o: dict) -> None:
    """Fail early, naming the bad option."""
    for name in o["classes"]:
        if name not in FOREGROUND_CLASSES:
            known = ", ".join(FOREGROUND_CLASSES)
            raise ValueError(f"synthetic classes: {name!r} is not a VOC foreground class ({known})")
    if not o["classes"] or len(set(o["classes"])) != len(o["classes"]):
        raise ValueError(f"synthetic classes must be a non-empty list without repeats, got {o['classes']}")
    for name in o["context_classes"]:
        if name not in o["classes"]:
            raise ValueError(f"synthetic context_classes: {name!r} is not one of classes {o['classes']}")
    lo, hi = o["objects_per_image"]
    if not 1 <= lo <= hi:
        raise ValueError(f"synthetic objects_per_image must be [min, max] with 1 <= min <= max, got {[lo, hi]}")
    if o["num_ood"] < 0:
        raise ValueError(f"synthetic num_ood must be >= 0 (0: no OoD set), got {o['num_ood']}")
    if o["num_extra"] < 0:
        raise ValueError(f"synthetic num_extra must be >= 0 (0: no extra set), got {o['num_extra']}")
    if not 1 <= o["min_size"] <= o["max_size"]:
        raise ValueError(f"synthetic min_size must be <= max_size, got {o['min_size']} > {o['max_size']}")
    for key in ("object_length", "object_width"):
        lo, hi = o[key]
        if not 0 < lo <= hi:
            raise ValueError(f"synthetic {key} must be [min, max] with 0 < min <= max, got {[lo, hi]}")


def _split_ids(split: str, count: int) -> list[str]:
    return [f"{split}_{i:06d}" for i in range(1, count + 1)]


def _write_sample(root: Path, image_id: str, sample: _Sample, o: dict, *, labelled: bool, segmented: bool) -> None:
    """The files of one image: JPEG always; XML and masks for labelled ids; saliency when asked."""
    write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", sample.rgb, quality=o["jpeg_quality"])
    if labelled:
        xml = _annotation_xml(image_id, sample.objects, sample.instances, segmented)
        write_text(root / "Annotations" / f"{image_id}.xml", xml)
        mask = _label_mask(sample.instances, sample.objects, o["boundary_width"])
        write_mask(root / "SegmentationClassAug" / f"{image_id}.png", mask, atomic=False)
        if segmented:
            write_mask(root / "SegmentationClass" / f"{image_id}.png", mask, atomic=False)
        write_mask(root / CONTEXT_MASKS / f"{image_id}.png", sample.context_labels, atomic=False)


def _write_lists(root: Path, ids: dict[str, list[str]]) -> None:
    def write(path: Path, names: list[str]) -> None:
        write_text(path, "".join(f"{i}\n" for i in sorted(names)))

    write(root / "ImageSets" / "Segmentation" / "train.txt", ids["train"])
    write(root / "ImageSets" / "Segmentation" / "val.txt", ids["val"])
    write(root / "ImageSets" / "Segmentation" / "trainval.txt", ids["train"] + ids["val"])
    write(root / "ImageSets" / "Segmentation" / "test.txt", ids["test"])
    write(root / "ImageSets" / "SegmentationAug" / "train_aug.txt", ids["train_aug"])


def _record(sample: _Sample) -> dict:
    """What the stats need from one labelled image."""
    names = sorted({o.name for o in sample.objects})
    parts = [
        (o.part.sum() / o.mask.sum(), o.part.sum() / (sample.instances == k).sum())
        for k, o in enumerate(sample.objects, start=1)
    ]
    return {
        "objects": len(sample.objects),
        "classes": names,
        "parts": parts,
        "foreground": float((sample.instances > 0).mean()),
        "contexts": sample.contexts,
        "context_pixels": float((sample.context_labels > 0).mean()),
        "non_square": sample.rgb.shape[0] != sample.rgb.shape[1],
    }


def _summarise(
    records: list[dict], ids: dict[str, list[str]], o: dict, ood_cues: Counter, extra: list[tuple[str, bool]]
) -> dict:
    """JSON-serialisable statistics over the labelled images (train_aug and val), the OoD set's size and cues
    (`ood_cues`: how many OoD images show each context kind), and the extra set's size, images per class and
    context fractions (`extra`: each extra image's class and whether its cue shows), beside the dataset's."""
    counts = Counter(r["objects"] for r in records)
    parts = np.array([p for r in records for p in r["parts"]])
    with_class = {c: [r for r in records if c in r["classes"]] for c in o["classes"]}
    extra_classes, extra_cues = Counter(name for name, _ in extra), Counter(name for name, cue in extra if cue)
    return {
        "images": {split: len(ids[split]) for split in ("train_aug", "train", "val", "test")},
        "objects_per_image": {
            "mean": float(np.mean([r["objects"] for r in records])),
            "histogram": {str(k): counts[k] for k in sorted(counts)},
        },
        "part_fraction": float(parts[:, 1].mean()),  # on the visible masks (parts are never occluded)
        "part_fraction_unoccluded": float(parts[:, 0].mean()),
        "single_class_fraction": float(np.mean([len(r["classes"]) == 1 for r in records])),
        "foreground_fraction": float(np.mean([r["foreground"] for r in records])),
        "non_square_fraction": float(np.mean([r["non_square"] for r in records])),
        "class_images": {c: len(rs) for c, rs in with_class.items()},
        "context_fraction": {
            c: float(np.mean([c in r["contexts"] for r in with_class[c]])) if with_class[c] else 0.0
            for c in o["context_classes"]
        },
        "context_pixel_fraction": float(np.mean([r["context_pixels"] for r in records])),  # visible cues, any class
        "ood": {"images": o["num_ood"], "contexts": dict(sorted(ood_cues.items()))},
        "extra": {
            "images": len(extra),
            "class_images": {c: extra_classes[c] for c in o["classes"]},
            "context_fraction": {
                c: extra_cues[c] / extra_classes[c] if extra_classes[c] else 0.0 for c in o["context_classes"]
            },
        },
    }


def generate_dataset(
    root: str | os.PathLike,
    *,
    seed: int,
    num_train: int,
    num_val: int,
    num_test: int,
    num_ood: int,
    num_extra: int,
    train_gt_fraction: float,
    min_size: int,
    max_size: int,
    classes: list[str],
    context_classes: list[str],
    context_probability: float,
    objects_per_image: tuple[int, int] | list[int],
    single_class_fraction: float,
    part_fraction: float,
    body_tint: float,
    object_length: list[float],
    object_width: list[float],
    boundary_width: int,
    saliency: bool,
    saliency_noise: float,
    difficult_fraction: float,
    jpeg_quality: int,
    progress: bool = True,
) -> dict:
    """Write the synthetic VOC2012 (+ SBD) folder at `root` atomically, with its hard OoD set in root/OoD and its
    extra image-level-labelled set in root/Extra, and return its statistics.

    Each image draws from its own generator seeded by (seed, split, index), the OoD images' split being
    `_OOD_STREAM` and the extra images' `_EXTRA_STREAM`, so files are byte-identical across runs and an image does
    not depend on how many others there are (nor the dataset's images on whether there is an OoD or extra set).
    """
    o = dict(locals())  # the options as one dict for the helpers
    o["classes"], o["context_classes"] = list(classes), list(context_classes)
    o["objects_per_image"] = tuple(int(v) for v in objects_per_image)
    _validate(o)
    ids = {split: _split_ids(split, n) for split, n in zip(SPLITS, (num_train, num_val, num_test), strict=True)}
    ids["train_aug"], ids["train"] = ids["train"], ids["train"][: round(train_gt_fraction * num_train)]
    segmented = set(ids["train"]) | set(ids["val"])

    records = []
    total = num_train + num_val + num_test + num_ood + num_extra
    bar = tqdm(total=total, desc="synthetic VOC", disable=not progress)
    with atomic_dir(root) as tmp, bar:
        for code, (split, split_ids) in enumerate(
            zip(SPLITS, (ids["train_aug"], ids["val"], ids["test"]), strict=True)
        ):
            for index, image_id in enumerate(split_ids):
                rng = np.random.default_rng([seed, code, index])
                sample = _render(rng, o)
                labelled = split != "test"
                _write_sample(tmp, image_id, sample, o, labelled=labelled, segmented=image_id in segmented)
                if saliency:
                    write_grey(tmp / "Saliency" / f"{image_id}.png", _saliency(rng, sample.instances, saliency_noise))
                if labelled:
                    records.append(_record(sample))
                bar.update()
        _write_lists(tmp, ids)
        ood_cues = _write_ood_set(tmp, o, bar)
        extra = _write_extra_set(tmp, o, bar)
    return _summarise(records, ids, o, ood_cues, extra)


# ----------------------------------------------------------------------------- pretext task

_PRETEXT_SHAPES = ("ellipse", "polygon", "star", "ring", "cross")
_PRETEXT_TEXTURES = ("checker", "stripes", "dots", "smooth")
PRETEXT_CLASSES: tuple[str, ...] = tuple(f"{s}/{t}" for s in _PRETEXT_SHAPES for t in _PRETEXT_TEXTURES)
_PRETEXT_STREAM = 0x70726574  # keeps pretext draws apart from the dataset's (seed, split, index) streams
_PRETEXT_CHUNK = 256


def _pretext_shape(rng, family: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test of a unit-size shape in rotated, aspect-scaled object coordinates (k, S, S)."""
    k = (u.shape[0], 1, 1)  # one parameter per image
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    if family == "ellipse":
        return rho < 1
    if family == "polygon":
        sector = 2 * np.pi / rng.integers(3, 7, k)
        return rho * np.cos(phi % sector - sector / 2) < np.cos(sector / 2)
    if family == "star":
        points, inner = rng.integers(5, 9, k), rng.uniform(0.35, 0.6, k)
        tip = np.abs(2 * ((phi * points / (2 * np.pi)) % 1) - 1)
        return rho < inner + (1 - inner) * tip
    if family == "ring":
        return (rho < 1) & (rho > rng.uniform(0.45, 0.7, k))
    thick = rng.uniform(0.22, 0.38, k)  # cross
    return ((np.abs(u) < thick) & (np.abs(v) < 1)) | ((np.abs(v) < thick) & (np.abs(u) < 1))


def _pretext_texture(rng, family: str, dy: np.ndarray, dx: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Texture value in [0, 1] at offsets from the object centre (k, S, S), random period and angle."""
    k = (dy.shape[0], 1, 1)  # one parameter per image
    angle = rng.uniform(0, 2 * np.pi, k)
    along, across = dx * np.cos(angle) + dy * np.sin(angle), dy * np.cos(angle) - dx * np.sin(angle)
    if family == "smooth":
        return np.clip(0.5 + along / (2 * radius), 0, 1)
    period = rng.uniform(2, 8, k)
    tu, tv = along / period + rng.random(k), across / period + rng.random(k)
    if family == "checker":
        return (np.floor(tu) + np.floor(tv)) % 2
    if family == "stripes":
        return np.floor(tu) % 2
    fu, fv = tu - np.round(tu), tv - np.round(tv)  # dots
    return (fu**2 + fv**2 < rng.uniform(0.25, 0.4, k) ** 2).astype(np.float32)


def _pretext_chunk(rng, labels: np.ndarray, size: int) -> np.ndarray:
    """Images for a chunk of labels: one random shape x texture object on a synthetic background."""
    m = labels.size
    shape_id, texture_id = np.divmod(labels, len(_PRETEXT_TEXTURES))
    images = _backgrounds(rng, m, size, size)
    grid = np.arange(size, dtype=np.float32) + 0.5
    centre = rng.uniform(0.35, 0.65, (2, m, 1, 1)).astype(np.float32) * size
    dy, dx = grid[None, :, None] - centre[0], grid[None, None, :] - centre[1]
    radius = rng.uniform(0.22, 0.4, (m, 1, 1)).astype(np.float32) * size
    aspect = rng.uniform(0.55, 1.0, (m, 1, 1)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, (m, 1, 1)).astype(np.float32)
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / radius
    v = (dy * np.cos(angle) - dx * np.sin(angle)) / (radius * aspect)

    mask = np.zeros((m, size, size), bool)
    texture = np.zeros((m, size, size), np.float32)
    for s, family in enumerate(_PRETEXT_SHAPES):
        idx = np.flatnonzero(shape_id == s)
        mask[idx] = _pretext_shape(rng, family, u[idx], v[idx])
    for t, family in enumerate(_PRETEXT_TEXTURES):
        idx = np.flatnonzero(texture_id == t)
        texture[idx] = _pretext_texture(rng, family, dy[idx], dx[idx], radius[idx])

    first = rng.uniform(20, 235, (m, 3))
    step = rng.uniform(25, 90, (m, 1)) * rng.choice([-1.0, 1.0], (m, 3)) * rng.uniform(0.5, 1.0, (m, 3))
    second = np.clip(first + step, 0, 255)
    obj = (first[:, None, None] + texture[..., None] * (second - first)[:, None, None]).astype(np.float32)
    images = np.where(mask[..., None], obj, images)
    return _add_noise(rng, images)


def pretext_images(seed: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, size, size, 3) uint8 and int64 labels in [0, len(PRETEXT_CLASSES)).

    Generic textured objects on the dataset's backgrounds, with image-level labels only and none
    of the target classes' parts or part-tipped bodies: an honest stand-in for ImageNet features.
    """
    rng = np.random.default_rng([seed, _PRETEXT_STREAM])
    labels = rng.integers(0, len(PRETEXT_CLASSES), n).astype(np.int64)
    images = np.empty((n, size, size, 3), np.uint8)
    for start in range(0, n, _PRETEXT_CHUNK):
        stop = min(start + _PRETEXT_CHUNK, n)
        images[start:stop] = _pretext_chunk(rng, labels[start:stop], size)
    return images, labels

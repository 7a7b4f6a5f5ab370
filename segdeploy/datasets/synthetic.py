"""A labelled segmentation dataset made from a seed: scenes of K texture classes, in the ADE20K layout.

Each class is a texture cut from a real photograph (``textures/``, see PROVENANCE.md), optionally tinted, so regions
differ in texture and colour as real surfaces do. A scene fills the image with one class and paints 3-8 shapes of
other classes over it (ellipses, polygons, rotated rectangles, bands and noise blobs at varied scales), each occluding
what is under it. Textures are rendered at a random scale, rotation and brightness per region; edges are softened,
then sensor-like blur and noise are added, and the image is stored as JPEG. Labels are 1..K (ADE20K's convention,
0 = "other" is never used), so readers apply reduce_zero_label and the classes are 0..K-1.

Two styles: ``clean`` (the accuracy fixtures: confident, well-separated classes) and ``hard`` (heavier blur,
noise, colour jitter, more and smaller shapes: a fixture with low logit margins, where a lossy graph shows).

Every image comes from its own generator seeded with ``[seed, split, index]``, so a dataset is reproducible file by
file and a split can be extended without changing the images already made.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np

from segdeploy.errors import InputError

GENERATOR_VERSION = 2
MAX_CLASSES = 24
MAX_IMAGES = 100_000  # per split: ADE20K's training split is 20,210 images
MAX_SIDE = 4096
SPLITS = {"training": 0, "validation": 1}

# name, texture crop, RGB multiplier (None: the photo's own colours). The first 16 differ most; 17-24 repeat a
# texture in another colour or a colour with another texture, for the harder fixtures.
CLASSES = (
    ("brick", "brick", (1.0, 0.55, 0.45)),
    ("grass", "grass", (0.55, 1.0, 0.45)),
    ("gravel", "gravel", None),
    ("sky", "sky", None),
    ("spacesuit", "spacesuit", None),
    ("stars", "stars", None),
    ("tissue", "tissue", None),
    ("wood", "wood", None),
    ("flag", "flag", None),
    ("fundus", "fundus", None),
    ("fur", "fur", None),
    ("lattice", "lattice", None),
    ("straw", "lawn", (1.0, 0.9, 0.5)),
    ("crema", "crema", None),
    ("bokeh", "bokeh", None),
    ("gland", "gland", None),
    ("uniform", "uniform", None),
    ("starfield", "starfield", None),
    ("slate brick", "brick", (0.6, 0.7, 1.0)),
    ("dry grass", "grass", (0.95, 0.8, 0.5)),
    ("sand", "gravel", (1.0, 0.85, 0.6)),
    ("concrete", "lawn", None),
    ("violet fundus", "fundus", (0.8, 0.6, 1.0)),
    ("dark wood", "wood", (0.65, 0.65, 0.65)),
)


@dataclass(frozen=True)
class SceneStyle:
    shapes: tuple[int, int]  # shapes painted over the background, inclusive range
    shape_scale: tuple[float, float]  # shape radius as a share of the image's short side
    texture_scale: tuple[float, float]
    brightness: float  # +- relative brightness per region
    channel_jitter: float  # +- relative gain per colour channel per region
    edge_blur: float  # sigma (pixels) of the soft edge between regions
    blur: float  # sigma of the whole-image blur
    noise: float  # sigma of Gaussian noise on the 0..255 scale
    jpeg_quality: int


STYLES = {
    "clean": SceneStyle(shapes=(3, 8), shape_scale=(0.1, 0.35), texture_scale=(0.5, 0.9), brightness=0.12,
                        channel_jitter=0.05, edge_blur=1.0, blur=0.6, noise=3.0, jpeg_quality=92),
    # between the two: enough noise and clutter that a briefly trained model is unsure (the low-margin fixture)
    "noisy": SceneStyle(shapes=(4, 10), shape_scale=(0.08, 0.3), texture_scale=(0.45, 1.0), brightness=0.2,
                        channel_jitter=0.12, edge_blur=1.8, blur=1.0, noise=8.0, jpeg_quality=85),
    "hard": SceneStyle(shapes=(5, 12), shape_scale=(0.06, 0.3), texture_scale=(0.4, 1.2), brightness=0.3,
                       channel_jitter=0.2, edge_blur=2.5, blur=1.6, noise=14.0, jpeg_quality=75),
}


def class_names(num_classes: int) -> list[str]:
    check_num_classes(num_classes)
    return [name for name, _, _ in CLASSES[:num_classes]]


def palette(num_classes: int) -> list[list[int]]:
    """A display colour per class: hues spread evenly, two brightness levels alternating."""
    import cv2

    hsv = np.array([[[int(180 * i / num_classes), 200, 255 if i % 2 == 0 else 170] for i in range(num_classes)]],
                   np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(int).tolist()


def check_num_classes(num_classes: int) -> None:
    if not 2 <= num_classes <= MAX_CLASSES:
        raise InputError(f"--classes must be between 2 and {MAX_CLASSES}, not {num_classes}")


# ----------------------------------------------------------------------------------------------------------------
# Textures


def _load_crop(name: str) -> np.ndarray:
    import cv2

    data = resources.files("segdeploy.datasets").joinpath("textures", f"{name}.jpg").read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return image[:, :, ::-1].astype(np.float32)  # RGB


def texture_tiles(num_classes: int) -> list[np.ndarray]:
    """One seamless float32 RGB tile per class: the tinted crop mirrored into a 2x2 block (wraps without seams)."""
    tiles = []
    for _, crop, tint in CLASSES[:num_classes]:
        rgb = _load_crop(crop)
        if tint is not None:
            rgb = rgb.mean(axis=2, keepdims=True) * np.asarray(tint, np.float32) * 1.15
        top = np.concatenate([rgb, rgb[:, ::-1]], axis=1)
        tiles.append(np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0)))
    return tiles


def render_texture(tile: np.ndarray, height: int, width: int, rng: np.random.Generator, style: SceneStyle
                   ) -> np.ndarray:
    """The tile at a random scale, angle and offset, wrapped over (height, width), with a random photometric gain."""
    import cv2

    scale = rng.uniform(*style.texture_scale)  # how large the texture shows: 0.5 = half the crop's size
    angle = rng.uniform(0, 360)
    size = tile.shape[0]
    # an inverse map (output pixel -> tile pixel), so the tile is sampled 1/scale times as fast as the output
    matrix = cv2.getRotationMatrix2D((0.0, 0.0), angle, 1.0 / scale)
    matrix[:, 2] = rng.uniform(0, size, 2)
    out = cv2.warpAffine(tile, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_WRAP)
    gain = (1 + rng.uniform(-style.brightness, style.brightness)) * \
        (1 + rng.uniform(-style.channel_jitter, style.channel_jitter, 3))
    return out * gain.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Shapes


def random_shape(height: int, width: int, rng: np.random.Generator, style: SceneStyle) -> np.ndarray:
    """A boolean mask of one shape: ellipse, star-ish polygon, rotated rectangle, thick band or noise blob."""
    import cv2

    mask = np.zeros((height, width), np.uint8)
    short = min(height, width)
    radius = rng.uniform(*style.shape_scale) * short
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    kind = rng.integers(0, 5)
    if kind == 0:
        axes = (max(2, int(radius)), max(2, int(radius * rng.uniform(0.35, 1.0))))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    elif kind == 1:
        n = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.45, 1.0, n)
        points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [points.astype(np.int32)], 1)
    elif kind == 2:
        box = ((cx, cy), (2 * radius, 2 * radius * rng.uniform(0.3, 1.0)), rng.uniform(0, 180))
        cv2.fillPoly(mask, [cv2.boxPoints(box).astype(np.int32)], 1)
    elif kind == 3:
        n = 4
        xs = np.sort(rng.uniform(-0.2, 1.2, n)) * width
        ys = cy + rng.normal(0, radius, n)
        if rng.random() < 0.5:  # vertical bands too
            xs, ys = cx + rng.normal(0, radius, n), np.sort(rng.uniform(-0.2, 1.2, n)) * height
        points = np.stack([xs, ys], 1).astype(np.int32)
        cv2.polylines(mask, [points], False, 1, thickness=max(3, int(radius * rng.uniform(0.3, 0.8))))
    else:
        # low-frequency noise, thresholded: an irregular blob (or several) around the centre
        grid = rng.standard_normal((6, 6)).astype(np.float32)
        field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[0:height, 0:width]
        falloff = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (1.6 * radius) ** 2)))
        mask = ((field + 2.5 * falloff) > 1.6).astype(np.uint8)
    return mask.astype(bool)


# ----------------------------------------------------------------------------------------------------------------
# Scenes


def make_scene(height: int, width: int, tiles: list[np.ndarray], rng: np.random.Generator, style: SceneStyle
               ) -> tuple[np.ndarray, np.ndarray]:
    """One scene: uint8 RGB image (H, W, 3) and uint8 labels 1..K."""
    import cv2

    k = len(tiles)
    background = int(rng.integers(0, k))
    image = render_texture(tiles[background], height, width, rng, style)
    label = np.full((height, width), background, np.uint8)
    shapes = int(rng.integers(style.shapes[0], style.shapes[1] + 1))
    pad = int(3 * style.edge_blur) + 1
    for _ in range(shapes):
        mask = random_shape(height, width, rng, style)
        ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if len(ys) == 0 or mask.sum() < 16:
            continue
        cls = int(rng.integers(0, k))
        # work in the shape's bounding box (plus the soft edge): textures are rendered where they show only
        y0, y1 = max(0, ys[0] - pad), min(height, ys[-1] + 1 + pad)
        x0, x1 = max(0, xs[0] - pad), min(width, xs[-1] + 1 + pad)
        texture = render_texture(tiles[cls], y1 - y0, x1 - x0, rng, style)
        # a soft edge in the image (real boundaries are not pixel-sharp); the label stays hard
        alpha = cv2.GaussianBlur(mask[y0:y1, x0:x1].astype(np.float32), (0, 0), style.edge_blur)[..., None]
        image[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1 - alpha) + texture * alpha
        label[mask] = cls
    if style.blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), style.blur)
    image = image + rng.normal(0, style.noise, image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), label + 1


@dataclass(frozen=True)
class SynthConfig:
    num_classes: int = 16
    train: int = 400
    val: int = 100
    height: int = 512
    width: int = 512
    seed: int = 0
    style: str = "clean"

    def check(self) -> None:
        check_num_classes(self.num_classes)
        if self.style not in STYLES:
            raise InputError(f"--style must be one of {', '.join(STYLES)}, not {self.style!r}")
        if self.train < 0 or self.val < 0 or self.train + self.val == 0:
            raise InputError(f"--train and --val must be >= 0 and not both 0, got {self.train} and {self.val}")
        if self.train > MAX_IMAGES or self.val > MAX_IMAGES:
            raise InputError(f"--train and --val take at most {MAX_IMAGES:,} images each, not {self.train} and "
                             f"{self.val}")
        if min(self.height, self.width) < 32 or max(self.height, self.width) > MAX_SIDE:
            raise InputError(f"--size must be 32x32 to {MAX_SIDE}x{MAX_SIDE}, not {self.height}x{self.width}")
        if not 0 <= self.seed < 2**32:
            raise InputError(f"--seed must be 0 to 2^32-1, not {self.seed}")


def scene(config: SynthConfig, split: str, index: int, tiles=None) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``index`` of ``split``, exactly as ``write_dataset`` stores it before JPEG compression."""
    tiles = tiles if tiles is not None else texture_tiles(config.num_classes)
    rng = np.random.default_rng([config.seed, SPLITS[split], index])
    return make_scene(config.height, config.width, tiles, rng, STYLES[config.style])


def dataset_meta(config: SynthConfig) -> dict:
    return {"name": f"segdeploy synthetic textures ({config.style}, {config.num_classes} classes)",
            "classes": class_names(config.num_classes), "palette": palette(config.num_classes),
            "layout": "ade20k", "reduce_zero_label": True, "generator_version": GENERATOR_VERSION,
            "config": asdict(config), "style": asdict(STYLES[config.style]),
            "textures": [crop for _, crop, _ in CLASSES[:config.num_classes]]}


def is_synthetic_dataset(path: str) -> bool:
    try:
        with open(os.path.join(path, "dataset.json"), encoding="utf-8") as f:
            return "generator_version" in json.load(f)
    except (OSError, ValueError):
        return False


def write_dataset(out: str | os.PathLike, config: SynthConfig, force: bool = False, progress=None) -> str:
    """Write the dataset to ``out`` (ADE20K layout + dataset.json), all at once: built in a temporary folder next to
    ``out`` and renamed into place, so a crash never leaves half a dataset. ``progress(done, total)`` is called
    after each image."""
    import cv2

    config.check()
    out = os.fspath(out)
    if os.path.exists(out):
        if not force:
            raise InputError(f"{out} exists; pass --force to replace it")
        if not (is_synthetic_dataset(out) or (os.path.isdir(out) and not os.listdir(out))):
            raise InputError(f"{out} exists and is not a synthetic dataset made by segdeploy; not replacing it")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    try:
        tiles = texture_tiles(config.num_classes)
        total, done = config.train + config.val, 0
        for split, count in (("training", config.train), ("validation", config.val)):
            image_dir = os.path.join(tmp, "images", split)
            label_dir = os.path.join(tmp, "annotations", split)
            os.makedirs(image_dir)
            os.makedirs(label_dir)
            for i in range(count):
                image, label = scene(config, split, i, tiles)
                stem = f"synth_{split[0]}{i:05d}"
                cv2.imwrite(os.path.join(image_dir, stem + ".jpg"), image[:, :, ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, STYLES[config.style].jpeg_quality])
                cv2.imwrite(os.path.join(label_dir, stem + ".png"), label)
                done += 1
                if progress is not None:
                    progress(done, total)
        with open(os.path.join(tmp, "dataset.json"), "w", encoding="utf-8") as f:
            json.dump(dataset_meta(config), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o755)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

"""Cut the synthetic dataset's texture crops from public-domain / CC0 photographs (run once; output is committed).

Sources: scikit-image's sample data (``pip download scikit-image --no-deps``, unzip ``skimage/data``) and the Grace
Hopper portrait in tests/data/images. Each crop is a box of the source, resized to 128x128 and stored as JPEG.
See segdeploy/datasets/textures/PROVENANCE.md for the sources' licences.

    python scripts/cut_textures.py SKIMAGE_DATA_DIR segdeploy/datasets/textures
"""
from __future__ import annotations

import os
import sys

import cv2

SIZE = 128
# name: (source file, x, y, width, height) in the source's pixels
CROPS = {
    "brick": ("brick.png", 0, 0, 256, 256),
    "grass": ("grass.png", 128, 128, 256, 256),
    "gravel": ("gravel.png", 0, 256, 256, 256),
    "wood": ("coffee.png", 0, 305, 95, 95),
    "crema": ("coffee.png", 220, 110, 60, 60),
    "fur": ("chelsea.png", 170, 0, 90, 90),
    "bokeh": ("chelsea.png", 340, 120, 110, 110),
    "spacesuit": ("astronaut.png", 40, 330, 130, 130),
    "flag": ("astronaut.png", 0, 20, 60, 60),
    "sky": ("rocket.jpg", 150, 0, 110, 110),
    "lattice": ("rocket.jpg", 10, 60, 120, 120),
    "fundus": ("retina.jpg", 380, 380, 420, 420),
    "stars": ("hubble_deep_field.jpg", 300, 300, 300, 300),
    "tissue": ("ihc.png", 0, 300, 150, 150),
    "gland": ("ihc.png", 110, 60, 120, 120),
    "lawn": ("camera.png", 420, 420, 90, 90),
    "starfield": ("grace_hopper.jpg", 0, 0, 150, 150),
    "uniform": ("grace_hopper.jpg", 60, 520, 75, 75),
}


def main(source_dir: str, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for name, (source, x, y, w, h) in CROPS.items():
        image = cv2.imread(os.path.join(source_dir, source), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read {source} in {source_dir}")
        crop = cv2.resize(image[y:y + h, x:x + w], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        cv2.imwrite(os.path.join(out_dir, f"{name}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, 92])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

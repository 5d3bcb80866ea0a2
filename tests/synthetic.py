"""A tiny labelled PNG dataset for end-to-end tests: brighter images are label 1, so a model can learn it."""
from pathlib import Path

import numpy as np
from PIL import Image


def write_labelled_pngs(root: Path, n_images: int = 40, per_patient: int = 2, noise: int = 120,
                        signal: int = 100, label_of=lambda i: i % 2) -> Path:
    """24-px PNGs under root/img and root/labels.csv (path, finding, patient); returns the CSV path."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir()
    rows = ["path,finding,patient"]
    for i in range(n_images):
        label = label_of(i)
        pixels = rng.integers(0, noise, (24, 24)) + signal * label
        Image.fromarray(pixels.astype(np.uint8)).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{label},p{i // per_patient}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"

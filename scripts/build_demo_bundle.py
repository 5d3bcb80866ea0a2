"""Build the demo data bundle the package ships, from the real data in ../shared/data.

    python scripts/build_demo_bundle.py [--shared ../shared/data] [--out src/medtransfer/demo_data]

The bundle lets the main command run on a fresh, offline machine: PneumoniaMNIST (the target,
whole, CC BY 4.0), the NIH ChestX-ray14 64 px subset (the same-site source, NIH, unrestricted
use) and a patient-level subset of the knee radiographs (the other-site source, CC BY 4.0),
each in the layout its medtransfer source reads, with its licence and citation beside it.
The selection is seeded, so rebuilding gives the same files. The whole bundle stays under 20 MB.
"""
from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np

KNEE_PATIENTS = {"train": 420, "val": 60, "test": 120}   # two knees each: 1,200 images
LIMIT_BYTES = 20 * 1024 * 1024

README = """# medtransfer demo data

Small, real, redistributable X-ray data so that `medtransfer study run examples/quickstart.yaml`
runs offline on a fresh machine. medtransfer uses a file here only when the data root
(`--data-root`, `$MEDTRANSFER_DATA`, `~/.cache/medtransfer/data`) has no copy of it.
Built by `scripts/build_demo_bundle.py` from the project's development data.

| folder / file | what | images | licence |
|---|---|---|---|
| `pneumoniamnist.npz` | MedMNIST PneumoniaMNIST, 28 px, official split (train 4,708 / val 524 / test 624), the medmnist package's file | 5,856 | CC BY 4.0 |
| `nih14-mini/` | NIH ChestX-ray14 subset at 64 px in the release layout (`Data_Entry_2017.csv` + `images/`) | 1,000 (264 patients) | NIH: unrestricted use, with acknowledgement |
| `knee-oa-64/` | knee radiographs at 64 px, KL grade 0-4, `labels.csv` (image, label, patient_id, split, side) + `images/`; a seeded patient-level subset | {knee_images} ({knee_patients} patients) | CC BY 4.0 |

## Citations and terms
- PneumoniaMNIST: Yang, J. et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D
  biomedical image classification", Scientific Data 10, 41 (2023); from Kermany, D. S. et al.,
  "Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning", Cell 172 (2018).
  Licence: CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/).
- NIH ChestX-ray14: Wang, X. et al., "ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on
  Weakly-Supervised Classification and Localization of Common Thorax Diseases", CVPR 2017. Released by the
  NIH Clinical Center for unrestricted use; we acknowledge the NIH Clinical Center as the data provider.
  Images downscaled from 1024 px to 64 px.
- Knee: Chen, P. (2018), "Knee Osteoarthritis Severity Grading Dataset", Mendeley Data,
  doi:10.17632/56rmx5bjcr.1, from the Osteoarthritis Initiative (OAI). Licence: CC BY 4.0.
  Images CLAHE-enhanced and resized to 64 px; this is a subset.
"""


def copy_pneumoniamnist(shared: Path, out: Path) -> None:
    shutil.copy2(shared / "pneumoniamnist" / "pneumoniamnist.npz", out / "pneumoniamnist.npz")


def copy_nih14_mini(shared: Path, out: Path) -> None:
    shutil.copytree(shared / "nih14-mini", out / "nih14-mini")


def copy_knee_subset(shared: Path, out: Path, seed: int = 0) -> tuple[int, int]:
    """Whole patients per split, drawn with a fixed seed: (images, patients)."""
    src = shared / "knee-oa-64"
    with open(src / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(seed)
    keep = set()
    for split, count in KNEE_PATIENTS.items():
        patients = sorted({r["patient_id"] for r in rows if r["split"] == split})
        keep.update(rng.choice(patients, size=min(count, len(patients)), replace=False).tolist())
    chosen = [r for r in rows if r["patient_id"] in keep]
    (out / "knee-oa-64" / "images").mkdir(parents=True)
    for r in chosen:
        shutil.copy2(src / r["image"], out / "knee-oa-64" / r["image"])
    with open(out / "knee-oa-64" / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return len(chosen), len(keep)


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=root / "src" / "medtransfer" / "demo_data")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    copy_pneumoniamnist(args.shared, args.out)
    copy_nih14_mini(args.shared, args.out)
    images, patients = copy_knee_subset(args.shared, args.out)
    (args.out / "README.md").write_text(README.format(knee_images=f"{images:,}", knee_patients=f"{patients:,}"))
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out}: {total / 1e6:.1f} MB ({sum(1 for _ in args.out.rglob('*.png'))} PNGs)")
    if total > LIMIT_BYTES:
        raise SystemExit(f"the bundle is {total / 1e6:.1f} MB: over the 20 MB limit")


if __name__ == "__main__":
    main()

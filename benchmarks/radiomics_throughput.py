"""Radiomics throughput: medtransfer's extraction vs a plain single-process pyradiomics loop.

Both measure the same images end to end (PNG files -> features) in the same run:

* plain: what a user would write: per image, decode it, ``sitk.GetImageFromArray(float32)``,
  a mask of ones, ``RadiomicsFeatureExtractor.execute``; one process.
* medtransfer: ``extract_features`` on a CSV source listing the same files, all cores, with
  a fresh image cache and feature cache in a temporary folder (so decoding and cache
  writes are included). A second call shows the cost of a rerun served from the cache.

Images: the 3 full-resolution NIH PNGs (1024 px) plus nih14-mini PNGs (64 px, upsampled by
``decode_image``) up to ``--n``, at each of ``--sizes``. The features of both paths must be
equal (allclose); the script exits non-zero when they are not.

"ratio" is plain wall time / medtransfer wall time (images/s ratio): it depends on how many
cores are free, so the load average is printed with each row. "cpu s" (this process plus
its worker processes) is the work done, which load does not change: it shows the cost of
the project's machinery (decode + image cache, feature cache, process pool) next to the loop.

    .venv/bin/python benchmarks/radiomics_throughput.py                 # 200 images, 256 and 512 px
    .venv/bin/python benchmarks/radiomics_throughput.py --n 40 --sizes 128
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.config import DataConfig, RadiomicsConfig, TaskConfig
from medtransfer.data import decode_image
from medtransfer.radiomics import extract_features, extractor_settings

CLASSES = ["firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape2D"]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def image_files(data_root: Path, n: int) -> list[Path]:
    full = sorted((data_root / "nih14-fullres" / "images").glob("*.png"))
    mini = sorted((data_root / "nih14-mini" / "images").glob("*.png"))
    files = (full + mini)[:n]
    if len(files) < n:
        sys.exit(f"need {n} PNGs under {data_root}/nih14-fullres and nih14-mini, found {len(files)}")
    return files


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def plain_loop(files: list[Path], size: int, bin_width: float) -> tuple[dict[str, dict], float, float]:
    """The straightforward single-process pyradiomics loop a user would write."""
    import SimpleITK as sitk
    from radiomics import featureextractor

    started, cpu = time.perf_counter(), cpu_seconds()
    extractor = featureextractor.RadiomicsFeatureExtractor(force2D=True, binWidth=bin_width)
    extractor.disableAllFeatures()
    for name in CLASSES:
        extractor.enableFeatureClassByName(name)
    out = {}
    for path in files:
        pixels = decode_image(path, size).astype(np.float32)
        image = sitk.GetImageFromArray(pixels[None])
        mask = sitk.GetImageFromArray(np.ones((1, size, size), dtype=np.uint8))
        result = extractor.execute(image, mask)
        out[str(path)] = {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}
    return out, time.perf_counter() - started, cpu_seconds() - cpu


def project(csv: Path, cache: Path, size: int, workers: int) -> tuple[pd.DataFrame, float, float]:
    data = DataConfig(source="csv", path=str(csv), cache_dir=str(cache), workers=workers)
    task = TaskConfig(kind="binary", label_column="label")
    rcfg = RadiomicsConfig(image_size=size, workers=workers)
    started, cpu = time.perf_counter(), cpu_seconds()
    table = extract_features(data, task, rcfg, csv.parent, progress=False, log=lambda _: None)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    if table.failed:
        sys.exit(f"medtransfer extraction failed on {len(table.failed)} images: {table.failed}")
    return table.features, seconds, cpu


def compare(plain: dict[str, dict], features: pd.DataFrame) -> tuple[bool, float]:
    """(all close, max relative difference) over every image and feature."""
    frame = pd.DataFrame.from_dict(plain, orient="index")[features.columns].loc[features.index]
    a, b = frame.to_numpy(np.float64), features.to_numpy(np.float64)
    rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-12)
    return bool(np.allclose(a, b, rtol=1e-7, atol=1e-12, equal_nan=True)), float(np.nanmax(rel))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="images (default 200)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="image sizes in px (default 256 512)")
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help=f"default {DEFAULT_DATA}")
    ap.add_argument("--workers", type=int, default=0, help="medtransfer processes; 0 = all cores")
    args = ap.parse_args(argv)

    files = image_files(args.data_root, args.n)
    bin_width = RadiomicsConfig().bin_width
    assert extractor_settings(RadiomicsConfig())["setting"]["binWidth"] == bin_width
    print(f"{len(files)} images ({sum('fullres' in str(f) for f in files)} full-res), {os.cpu_count()} cores, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'size':>5} {'plain s':>8} {'img/s':>7} {'cpu s':>6} {'medtransfer s':>14} {'img/s':>7} {'cpu s':>6} "
          f"{'ratio':>6} {'rerun s':>8}  features")
    ok = True
    with tempfile.TemporaryDirectory(prefix="radiomics-bench-") as tmp:
        csv = Path(tmp) / "images.csv"
        pd.DataFrame({"image": [str(f) for f in files], "label": [i % 2 for i in range(len(files))]}).to_csv(csv, index=False)
        for size in args.sizes:
            plain, plain_s, plain_cpu = plain_loop(files, size, bin_width)
            features, project_s, project_cpu = project(csv, Path(tmp) / f"cache-{size}", size, args.workers)
            _, rerun_s, _ = project(csv, Path(tmp) / f"cache-{size}", size, args.workers)
            features.index = [str(f) for f in files]  # image ids are the CSV's paths
            equal, max_rel = compare(plain, features)
            ok &= equal
            n = len(files)
            print(f"{size:>5} {plain_s:>8.1f} {n / plain_s:>7.2f} {plain_cpu:>6.1f} {project_s:>14.1f} {n / project_s:>7.2f} "
                  f"{project_cpu:>6.1f} {plain_s / project_s:>5.2f}x {rerun_s:>8.2f}  {features.shape[1]} per image, "
                  f"{'equal' if equal else 'DIFFERENT'} (max rel diff {max_rel:.1e}); "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

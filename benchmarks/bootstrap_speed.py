"""Patient-bootstrap speed: ``bootstrap_auroc_samples`` vs a plain loop of sklearn's roc_auc_score.

The issue asks for the per-run bootstrap to take under 1 s for 1,000 resamples
of 5,000 images (binary labels). Both paths here draw the *same* patient
resamples (``default_rng(seed).integers(0, P)``, one row of P patients per
resample) on the same synthetic test set:

* loop: what a user would write: per resample, gather the images of the drawn
  patients and call ``roc_auc_score``; timed over ``--loop-boot`` resamples and
  scaled to ``--n-boot`` (it is linear in the number of resamples);
* medtransfer: ``bootstrap_auroc_samples`` (all resamples at once, as weighted
  AUROCs from sparse per-patient counts): the first call in the process, then
  the best of ``--repeats`` calls.

The loop's AUROCs must equal the first ``--loop-boot`` of medtransfer's
(atol 1e-12); the script exits non-zero when they do not. "ratio" is loop time
/ medtransfer time, both measured in this run on this machine, so the load of
the machine affects both; wall times are printed with the load average.

    .venv/bin/python benchmarks/bootstrap_speed.py
    .venv/bin/python benchmarks/bootstrap_speed.py --images 20000 --patients 12000
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from medtransfer.evaluate.bootstrap import bootstrap_auroc_samples


def synthetic_test_set(n_images: int, n_patients: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, float32 scores, patient ids): every patient has an image, the rest go to random patients;
    labels cluster by patient and scores separate the classes by about AUROC 0.8."""
    rng = np.random.default_rng(seed)
    patients = np.concatenate([np.arange(n_patients), rng.integers(0, n_patients, n_images - n_patients)])
    risk = rng.normal(size=n_patients)[patients]
    labels = (risk + rng.normal(size=n_images) > 0.5).astype(int)
    scores = (1.2 * labels + 0.5 * risk + rng.normal(size=n_images)).astype(np.float32)
    return labels, scores, patients


def loop_bootstrap(labels, scores, patients, n_boot: int, seed: int) -> np.ndarray:
    """The straightforward loop: the same patient draws, expanded to images, one roc_auc_score each."""
    uniq, codes = np.unique(patients, return_inverse=True)
    images_of = [np.flatnonzero(codes == p) for p in range(len(uniq))]
    draws = np.random.default_rng(seed).integers(0, len(uniq), size=(n_boot, len(uniq)))
    out = []
    for row in draws:
        idx = np.concatenate([images_of[p] for p in row])
        out.append(roc_auc_score(labels[idx], scores[idx]))
    return np.asarray(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--loop-boot", type=int, default=100, help="resamples the loop is timed over")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0 < args.patients <= args.images:
        sys.exit("need 0 < --patients <= --images")
    if not 0 < args.loop_boot <= args.n_boot:
        sys.exit("need 0 < --loop-boot <= --n-boot")

    labels, scores, patients = synthetic_test_set(args.images, args.patients, args.seed)
    print(f"{args.images} images, {args.patients} patients, {labels.mean():.0%} positive, "
          f"{len(np.unique(scores))} distinct scores; load average {os.getloadavg()[0]:.2f}")

    start = time.perf_counter()
    fast = bootstrap_auroc_samples(labels, scores, patients, n_boot=args.n_boot, seed=args.seed)
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        bootstrap_auroc_samples(labels, scores, patients, n_boot=args.n_boot, seed=args.seed)
        times.append(time.perf_counter() - start)
    best = min(times)

    start = time.perf_counter()
    slow = loop_bootstrap(labels, scores, patients, args.loop_boot, args.seed)
    loop_scaled = (time.perf_counter() - start) * args.n_boot / args.loop_boot

    same = np.allclose(fast[:args.loop_boot], slow, rtol=0, atol=1e-12)
    print(f"medtransfer  {args.n_boot} resamples: first call {first:.3f} s, best of {args.repeats} {best:.3f} s")
    print(f"plain loop   {args.loop_boot} resamples timed, scaled to {args.n_boot}: {loop_scaled:.2f} s")
    print(f"ratio (loop / medtransfer, best): {loop_scaled / best:.0f}x; same AUROCs as the loop: {same}")
    print(f"requirement (< 1 s for 1,000 resamples of 5,000 images): "
          f"{'met' if max(first, best) < 1.0 else 'NOT met'} at this size (load average {os.getloadavg()[0]:.2f})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

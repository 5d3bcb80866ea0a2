"""Is a probe cheaper than a frozen fine-tune on a whole training set? (issue 25, acceptance 1)

Runs the real command line twice on the whole PneumoniaMNIST training set (4,708 images, ``n_train: all``)
from a pretrained init, each from an empty feature cache (the image cache is built once, untimed):

    medtransfer train examples/pneumoniamnist.yaml --set model.init=INIT --set train.strategy=probe
    medtransfer train examples/pneumoniamnist.yaml --set model.init=INIT --set train.strategy=frozen

and prints the wall time of each (launch to exit), their ratio (target: probe < 1/5 of frozen), their test
AUROCs and the load average at each start. The frozen command is the example's recipe (12 epochs, augmented,
so its backbone runs at every step); the probe runs the backbone once over the images and fits a logistic
regression (C by patient-grouped CV in the N-pool).

INIT (``--init``): ``imagenet`` when torchvision's resnet18 file is on disk; else a chest source pretrained
here first, untimed (NIH ChestX-ray14's 1,000-image subset, multi-label, ``--source-epochs`` epochs at the
example's 32 px, from scratch), used as ``checkpoint:RUN_DIR``: a pretrained backbone, offline.

    PYTHONPATH=src .venv/bin/python benchmarks/probe_vs_frozen.py
    PYTHONPATH=src .venv/bin/python benchmarks/probe_vs_frozen.py --init imagenet --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 5.0   # frozen / probe wall time at least this


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "examples" / "pneumoniamnist.yaml")
    p.add_argument("--init", default=None, help="model.init of both commands (default: imagenet when its file is "
                                                "on disk, else a chest source pretrained here)")
    p.add_argument("--source-epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="train.threads of every command (default: torch's)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="data root (default: ../shared/data when there, else the demo bundle's copy)")
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a temp folder)")
    return p.parse_args()


def cli(args: list[str], env: dict[str, str]) -> float:
    """Run ``medtransfer ARGS``; its wall time from launch to exit (a failure stops the benchmark)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "medtransfer.cli", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"medtransfer {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds


def pretrained_init(args: argparse.Namespace, work: Path, env: dict[str, str], common: list[str]) -> str:
    """``--init``, else imagenet when its file is on disk, else a chest source trained here (untimed)."""
    if args.init:
        return args.init
    sys.path.insert(0, str(ROOT / "src"))
    from medtransfer.models.registry import cached_imagenet_weights

    if cached_imagenet_weights("resnet18").path is not None:
        return "imagenet"
    source = work / "chest-source.yaml"
    source.write_text("data: {source: nih14, path: nih14-mini, split: random}\ntask: {kind: multilabel}\n"
                      "image_size: 32\nmodel: {arch: resnet18, init: scratch, dropout: 0.1}\n"
                      f"train: {{epochs: {args.source_epochs}, batch_size: 32, lr: 0.002}}\n")
    print(f"pretraining a chest source ({args.source_epochs} epochs on nih14-mini, untimed) ...", flush=True)
    seconds = cli(["train", str(source), "--out", str(work / "chest"), "--quiet", *common], env)
    print(f"  done in {seconds:.0f} s", flush=True)
    return f"checkpoint:{work / 'chest'}"


def main() -> int:
    args = parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="probe-vs-frozen-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    env = {**os.environ, "MEDTRANSFER_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    shared = ROOT.parent / "shared" / "data"
    data_root = args.data_root or (shared if (shared / "pneumoniamnist").is_dir() else work / "empty")
    data_root.mkdir(parents=True, exist_ok=True)
    common = ["--data-root", str(data_root)] + (["--set", f"train.threads={args.threads}"] if args.threads else [])
    init = pretrained_init(args, work, env, common)
    base = ["train", str(args.config), "--set", "train.n_train=all", "--set", f"model.init={init}", "--quiet", *common]
    # the image cache, built once untimed (both commands read it): a 1-epoch full run on 8 images
    cli(base + ["--set", "train.n_train=8", "--set", "train.epochs=1", "--out", str(work / "warmup")], env)
    results = {}
    for strategy in ("probe", "frozen"):
        shutil.rmtree(cache / "features", ignore_errors=True)   # every command from an empty feature cache
        load = os.getloadavg()
        out = work / strategy
        seconds = cli(base + ["--set", f"train.strategy={strategy}", "--out", str(out), "--overwrite"], env)
        metrics = json.loads((out / "metrics.json").read_text())
        results[strategy] = (seconds, metrics["test"]["auroc_macro"], metrics["n_train_images"], load)
        print(f"{strategy:>6}: {seconds:6.1f} s wall, test AUROC {metrics['test']['auroc_macro']:.4f}, "
              f"{metrics['n_train_images']} training images, load average at start {load[0]:.2f}", flush=True)
    ratio = results["probe"][0] / results["frozen"][0]
    print(f"init {init}; {os.cpu_count()} CPU cores; probe / frozen wall time = {ratio:.3f} "
          f"(frozen is {1 / ratio:.1f}x the probe; target: probe < 1/{TARGET:g} of frozen: "
          f"{'met' if ratio < 1 / TARGET else 'NOT met'})")
    return 0 if ratio < 1 / TARGET else 1


if __name__ == "__main__":
    sys.exit(main())

"""Does ``medtransfer advise --budget T`` finish within 1.2 T on a loaded machine? (issue 24, item 3)

Starts a competing process (a torch busy loop on ``--load-threads`` threads, 2 by default: another training
job on the same cores), waits until it is computing, then runs the real command line

    medtransfer advise examples/pneumoniamnist.yaml --budget 2m --set train.n_train=200 --out OUT

on the demo bundle's PneumoniaMNIST (no download: an empty data root falls back to the copy medtransfer
ships), times it from launch to exit, and prints per budget the wall time, its ratio to the budget, the
load average at the start and the end, and advise's own account (threads, probe, plan, stops). The
competitor is stopped at the end. Exit status 1 when a run takes over 1.2x its budget or does not give advice (a budget refused as too small
for the machine's current speed counts as a failure here).

    PYTHONPATH=src .venv/bin/python benchmarks/advise_budget.py                 # --budget 2m under load
    PYTHONPATH=src .venv/bin/python benchmarks/advise_budget.py --with-5m       # 2m, then 5m
    PYTHONPATH=src .venv/bin/python benchmarks/advise_budget.py --load-threads 0   # no competitor
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 1.2
BUSY_LOOP = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(512, 512)
a = torch.tanh(a @ a.T / 512)
print("busy", flush=True)
while True:
    a = torch.tanh(a @ a.T / 512)
"""
SHOWN = re.compile(r"CPU threads|cost:|plan:|rung \d|stopped|pick:|final run|learning curve:|skipped|budget:|"
                   r"advice written|FAILED")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", action="append", default=None, help="a --budget to run (repeatable; default 2m)")
    p.add_argument("--with-5m", action="store_true", help="also run --budget 5m")
    p.add_argument("--config", type=Path, default=ROOT / "examples" / "pneumoniamnist.yaml")
    p.add_argument("--n-train", default="200", help="train.n_train of the advised config (default 200)")
    p.add_argument("--load-threads", type=int, default=2, help="threads of the competing busy loop (0: none)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="data root (default: an empty folder, so the demo bundle's copy is used)")
    p.add_argument("--out", type=Path, default=None, help="folder for the advise outputs (default: a temp folder)")
    return p.parse_args()


def start_competitor(threads: int) -> subprocess.Popen | None:
    """The busy loop, returned once its first product is computed (so the load is there when advise starts)."""
    if threads <= 0:
        return None
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(threads)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    return proc


def run_advise(args: argparse.Namespace, budget: str, out: Path, data_root: Path) -> tuple[float, int, str]:
    """(wall seconds from launch to exit, exit status, stderr) of one ``medtransfer advise`` command line."""
    cmd = [sys.executable, "-m", "medtransfer.cli", "advise", str(args.config), "--data-root", str(data_root),
           "--out", str(out), "--budget", budget, "--set", f"train.n_train={args.n_train}", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode, done.stderr.strip()


def main() -> int:
    from medtransfer.advise.search import parse_budget

    args = parse_args()
    budgets = (args.budget or ["2m"]) + (["5m"] if args.with_5m else [])
    work = Path(tempfile.mkdtemp(prefix="advise-budget-"))
    out_root, data_root = args.out or work / "out", args.data_root or work / "no-data"
    data_root.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPU cores; competitor: {args.load_threads}-thread torch busy loop; "
          f"{args.config.name}, train.n_train={args.n_train}")
    competitor = start_competitor(args.load_threads)
    failed = False
    try:
        for budget in budgets:
            seconds = parse_budget(budget)
            out = out_root / f"budget-{budget}"
            load_before = os.getloadavg()[0]
            wall, code, err = run_advise(args, budget, out, data_root)
            ratio = wall / seconds
            why = (["over the limit"] if ratio > LIMIT else []) + ([f"advise exited {code}"] if code else [])
            failed |= bool(why)
            print(f"--budget {budget} ({seconds:.0f} s): wall {wall:.1f} s, ratio {ratio:.3f} "
                  f"(limit {LIMIT}), exit {code}, load average {load_before:.2f} at the start, "
                  f"{os.getloadavg()[0]:.2f} at the end" + (f"  <-- FAIL: {', '.join(why)}" if why else ""))
            log = out / "advise.log"
            for line in log.read_text().splitlines() if log.is_file() else []:
                if SHOWN.search(line):
                    print("    " + line)
            if code != 0:
                print("    stderr: " + err.splitlines()[-1] if err else "    (no stderr)")
    finally:
        if competitor is not None:
            competitor.terminate()
            competitor.wait()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line: the only place that parses arguments.

Each command calls the Python API's entry point (``api``: ``import medtransfer as mt``) with the parsed
arguments and prints what it returns, so the CLI and a notebook run the same code. Every user-facing failure
(a MedtransferError) ends as one line on stderr and exit status 2; a bug still shows its traceback.
``study run`` writes the study's report once the runs are recorded (``api.Studies.run``; the study package
never writes it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from . import api
from .config import resolve_data_root
from .errors import MedtransferError, write_error
from .kinds import auroc_name
from .study.executors import executor_names


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="run config YAML (see examples/)")
    p.add_argument("--data-root", default=None,
                   help="folder that relative data paths start from (default: $MEDTRANSFER_DATA or ~/.cache/medtransfer/data)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.n_train=200 (repeatable)")


_BARE = "(default)"   # --mlflow given without a URI


def _add_mlflow_arg(p: argparse.ArgumentParser, default_store: str) -> None:
    p.add_argument("--mlflow", nargs="?", const=_BARE, default=None, metavar="URI",
                   help=f"log to MLflow (pip install 'medtransfer[mlflow]'): a tracking URI or a folder "
                        f"(default {default_store}: an SQLite store mlflow.db and artifacts/ inside)")


def _mlflow(value: str | None) -> str | bool | None:
    """``--mlflow`` as the API takes it: True for the default store, a URI / folder, or None for no tracking."""
    return True if value == _BARE else value


DESCRIPTION = """\
Which transfer-learning recipe should I use on my small medical image dataset, and how much does it buy me?
medtransfer trains and tests recipes (scratch, ImageNet or pretrained-source initialisation x fine-tuning
strategy x learning-rate policy) over training-set sizes and seeds, reports learning curves with confidence
intervals and the best recipe at each size, advises a recipe for your own data within a time budget, and
scores new images with a trained model."""
START_HERE = """start here:
  medtransfer study run examples/quickstart.yaml --out studies/quickstart
        a study on the shipped demo data (offline): STUDY_DIR/report.html, answer.json, summary.csv
  medtransfer train examples/pneumoniamnist.yaml --out runs/one      one recipe, trained and tested
  medtransfer advise CONFIG.yaml --out advice --budget 10m           the recipe for your own data
  medtransfer predict --run RUN_DIR a.png b.dcm --out pred.csv       score new images

`medtransfer COMMAND --help` describes a command; from Python: `import medtransfer as mt; help(mt)`."""
INIT_EPILOG = """starting weights (model.init in the config, or --set model.init=...):
  scratch | imagenet | xrv:NAME (torchxrayvision's chest X-ray weights)
  pretrained           a published backbone's own weights, with model.arch hf:ORG/NAME (transformers),
                       openclip:hf-hub:ORG/NAME or timm:hf-hub:ORG/NAME, e.g. hf:microsoft/rad-dino
  checkpoint:RUN_DIR   a finished run folder: one `medtransfer pretrain` or `train` wrote, or a source a study
                       pretrained, STUDY_DIR/sources/NAME-RUN_ID, e.g.
                       --set model.init=checkpoint:studies/quickstart/sources/chest-d640df1fb503dbca
                       (`ls STUDY_DIR/sources` lists them). Its data is first compared with this run's: shared
                       patients or images stop the run, as a study's sources are checked."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medtransfer", description=DESCRIPTION, epilog=START_HERE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    for name, help_text in (("train", "train and evaluate one transfer-learning recipe"),
                            ("pretrain", "train a source model whose run folder can be used as model.init=checkpoint:RUN_DIR")):
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                           epilog=INIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_config_args(p)
        p.add_argument("--out", type=Path, required=True, help="run folder to create")
        p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
        p.add_argument("--quiet", action="store_true", help="log to train.log only")
        _add_mlflow_arg(p, "./mlruns, experiment 'medtransfer'")

    p = sub.add_parser("lr-find", help="exponential learning-rate range test: plot and suggested LR")
    _add_config_args(p)
    p.add_argument("--out", type=Path, required=True, help="folder for lr_find.png and lr_find.json")

    data = sub.add_parser("data", help="inspect a dataset").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("info", help="images, patients and per-label counts per split")
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the counts as JSON (for scripts)")

    rad = sub.add_parser("radiomics", help="radiomics features for the baseline").add_subparsers(
        dest="radiomics_command", required=True)
    p = rad.add_parser("extract", help="pyradiomics features of every image of a dataset, to a parquet file")
    _add_config_args(p)
    p.add_argument("--out", type=Path, required=True, help="parquet file to write (image_id + one column per feature)")
    p = rad.add_parser("fit", help="the radiomics + logistic-regression baseline on a run config's split and N-subset")
    _add_config_args(p)
    p.add_argument("--out", type=Path, required=True, help="run folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--quiet", action="store_true", help="log to train.log only")

    study = sub.add_parser("study", help="run a grid of recipes (a study) and report it").add_subparsers(
        dest="study_command", required=True)
    p = study.add_parser("run", help="run or resume every run of a study; writes results.sqlite and report.html")
    p.add_argument("spec", type=Path, help="study YAML (see examples/offline-chest.yaml)")
    p.add_argument("--out", type=Path, default=None, help="study folder (required unless --dry-run)")
    p.add_argument("--data-root", default=None, help="folder that relative data paths start from")
    p.add_argument("--executor", choices=executor_names(), default="local")
    p.add_argument("--workers", type=int, default=1, help="local executor: runs in parallel processes")
    p.add_argument("--ray-address", default=None, help="existing Ray cluster (default: $RAY_ADDRESS, else a local one)")
    p.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    p.add_argument("--pack", type=int, default=None, metavar="K",
                   help="train up to K CNN grid runs together as one fused model where their steps line up "
                        "(same arch, N, batch size, budget, strategy); default: the spec's resources.pack, else 1. "
                        "Packed runs get run ids of their own (results differ by rounding), so a study "
                        "resumed with another K trains its runs again rather than mixing the two")
    p.add_argument("--dry-run", action="store_true", help="print runs per axis, the total and a time estimate")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run-config key in base and every source, e.g. --set train.epochs=2 "
                        "(data.* / task.* keys: base only; repeatable)")
    _add_mlflow_arg(p, "STUDY_DIR/mlruns, one experiment named after the study")
    p = study.add_parser("status", help="counts by status, progress per axis, failure reasons")
    p.add_argument("study_dir", type=Path)
    p = study.add_parser("best", help="the best recipe at N (by mean validation AUROC over seeds) as a run folder "
                                      "predict can use: copied when its weights were kept, else retrained")
    p.add_argument("study_dir", type=Path)
    p.add_argument("--out", type=Path, required=True, help="run folder to create")
    p.add_argument("--n", default=None, metavar="N|all", help="training-set size to choose at (default: the largest run)")
    p.add_argument("--task", default=None, help="the task to choose within, when the study has several")
    p.add_argument("--retrain", action="store_true", help="train the recipe again even when its weights were kept")
    p.add_argument("--data-root", default=None, help="folder that relative data paths start from (for a retrain)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--quiet", action="store_true", help="retrain: log to train.log only")

    p = sub.add_parser("report", help="(re)write report.html, learning_curves.png and summary.csv of a study")
    p.add_argument("study_dir", type=Path)
    p.add_argument("--all-versions", action="store_true",
                   help="include the rows of earlier versions of the spec (labelled in the report)")
    p.add_argument("--force", action="store_true",
                   help="replace report.html even when the store now holds fewer done runs than it was made from")

    p = sub.add_parser("advise", help="rank initialisations, search recipes within a time budget and train the "
                                      "pick: OUT/advice.json, OUT/advice.html and a model in OUT/best")
    _add_config_args(p)
    p.add_argument("--out", type=Path, required=True, help="folder for advice.json, advice.html and best/")
    p.add_argument("--sources", action="append", default=[], metavar="NAME=RUN_DIR[,NAME=RUN_DIR...]",
                   help="pretrained run folders to compare, e.g. chest=runs/chest,knee=runs/knee (repeatable)")
    p.add_argument("--study", type=Path, default=None, metavar="STUDY_DIR",
                   help="also compare the sources a finished study pretrained (STUDY_DIR/sources/*)")
    p.add_argument("--backbone", action="append", default=[], metavar="ARCH[,ARCH...]",
                   help="also compare a published foundation backbone with its own weights, e.g. hf:microsoft/rad-dino "
                        "or timm:hf-hub:timm/vit_small_patch14_dinov2.lvd142m (repeatable; read from the Hugging Face "
                        "cache)")
    p.add_argument("--budget", default="10m", help="wall-time budget: 10m, 90s, 1h (default 10m)")
    p.add_argument("--quiet", action="store_true", help="log to OUT/advise.log only")

    p = sub.add_parser("predict", help="score images with a trained run")
    p.add_argument("--run", type=Path, required=True, help="a finished run folder")
    p.add_argument("images", nargs="+", type=Path, help="PNG / JPEG / DICOM files")
    p.add_argument("--out", type=Path, default=None, help="CSV to write (default: stdout)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--threshold", type=float, default=None, metavar="T",
                     help="label positive when score >= T (default: the run's threshold.json, Youden's J on validation)")
    how.add_argument("--sensitivity", type=float, default=None, metavar="S",
                     help="choose the threshold again on the run's validation predictions for sensitivity >= S")
    p.add_argument("--cam", type=Path, default=None, metavar="DIR",
                   help="write a Grad-CAM heat-map overlay PNG per image to DIR (needs medtransfer[cam]), titled "
                        "with its score and predicted label, beside a colour bar")
    p.add_argument("--truth", type=Path, default=None, metavar="CSV",
                   help="true labels to add to the Grad-CAM titles: a CSV with columns image (a path as given or a "
                        "file name) and label")
    p.add_argument("--device", default="auto")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except MedtransferError as err:
        print(f"medtransfer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medtransfer: interrupted", file=sys.stderr)
        return 130
    except OSError as err:   # a write the layers below did not wrap (full disk, read-only folder)
        print(f"medtransfer: error: {write_error(err.filename or 'a file', err)}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    handler = COMMANDS.get(args.command)
    if handler is None:
        raise AssertionError(args.command)
    return handler(args)


# Each command below imports the modules it runs when it runs, not at the top: they pull in torch,
# pandas, scikit-learn, pyradiomics or matplotlib, which `medtransfer --help` and `study status` never
# need. Measured on this project's 2-core machine: `medtransfer --help` takes 0.35 s; importing the
# training modules too (runs.cnn, inference) would make it 5 to 7 s, the report 2.6 s, scikit-learn's
# metrics (evaluate.threshold) 1.4 s, radiomics 1.6 s, medtransfer.data 0.6 s.


def _train(args) -> int:
    metrics = api.train(api.load_config(args.config, args.overrides), args.out, data_root=args.data_root,
                        overwrite=args.overwrite, echo=not args.quiet, mlflow=_mlflow(args.mlflow),
                        check_leaks=True)   # a study checks its own sources (allow_overlap); a hand-run train here
    from .runs.folder_protocol import verdict_lines
    from .runs.outer_cv import outer_cv_summary

    estimate = outer_cv_summary(metrics.details)   # the outer cross-validation's lines (none: the split is the estimate)
    for line in estimate:   # a split too small to be an estimate: the outer cross-validation's answer comes first
        print(line)
    for line in verdict_lines(metrics):   # better than chance? than the pixel baseline? what to suspect
        print(f"{line} [on its own test split]" if estimate else line)
    print(_test_line(args.out, metrics, " on its own test split" if estimate else ""))
    return 0


def _test_line(out: Path, metrics, what: str = "") -> str:
    """The line a finished run prints: its test AUROC, named for its task kind ("macro" only where averaged)."""
    auc, name = metrics.auroc("test"), auroc_name(metrics.task_kind)
    return f"{out}: test {name} {auc:.4f}{what}" if auc is not None else f"{out}: test {name} undefined"


def _lr_find(args) -> int:
    from .runs.lr_find import lr_find_run

    cfg = api.load_config(args.config, args.overrides)
    suggestion = lr_find_run(cfg, args.out, resolve_data_root(args.data_root))
    print(f"suggested lr: {suggestion.suggested:.3g} (valley {suggestion.valley[0]:.1e} to {suggestion.valley[1]:.1e}; "
          f"steepest {suggestion.steepest:.1e}, minimum/10 {suggestion.minimum_tenth:.1e}; "
          f"plot: {args.out / 'lr_find.png'})")
    for warning in suggestion.warnings:
        print(f"warning: {warning}")
    return 0


def _data(args) -> int:
    from .data import prepare_data
    from .data.info import describe, describe_dict

    cfg = api.load_config(args.config, args.overrides)
    prepared = prepare_data(cfg.data, cfg.task, cfg.image_size, resolve_data_root(args.data_root),
                            cfg.train.n_train, cfg.train.seed, progress=not args.json)
    print(json.dumps(describe_dict(prepared), indent=2) if args.json else describe(prepared))
    return 0


def _radiomics(args) -> int:
    from .radiomics import extract_to_parquet, radiomics_run

    cfg = api.load_config(args.config, args.overrides)
    if args.radiomics_command == "extract":
        print(extract_to_parquet(cfg, args.out, resolve_data_root(args.data_root)))
        return 0
    metrics = radiomics_run(cfg, args.out, resolve_data_root(args.data_root), overwrite=args.overwrite,
                            echo=not args.quiet, progress=not args.quiet)
    from .runs.folder_protocol import verdict_lines

    for line in verdict_lines(metrics):
        print(line)
    print(_test_line(args.out, metrics, f" (radiomics + LR, C={metrics.details['chosen_C']:g})"))
    return 0


def _study(args) -> int:
    if args.study_command == "status":
        print(api.study.status(args.study_dir))
        return 0
    if args.study_command == "best":
        print(api.study.best(args.study_dir, args.out, n=args.n, task=args.task, retrain=args.retrain,
                             data_root=args.data_root, overwrite=args.overwrite, echo=not args.quiet))
        return 0
    summary = api.study.run(args.spec, args.out, overrides=args.overrides, data_root=args.data_root,
                            executor=args.executor, workers=args.workers, ray_address=args.ray_address,
                            retry_failed=args.retry_failed, dry_run=args.dry_run, mlflow=_mlflow(args.mlflow),
                            pack=args.pack, console=Console(stderr=True))
    print(summary)
    return 0


def _report(args) -> int:
    print(f"wrote {api.report(args.study_dir, all_versions=args.all_versions, force=args.force)}")
    return 0


def _advise(args) -> int:
    from .advise.command import advice_summary

    path = api.advise(args.config, args.out, sources=args.sources, study=args.study, budget=args.budget,
                      overrides=args.overrides, data_root=args.data_root, echo=not args.quiet, backbones=args.backbone)
    print(advice_summary(path))
    return 0


def _predict(args) -> int:
    from .inference import read_truth

    truth = read_truth(args.truth) if args.truth is not None else None
    result = api.predict(args.run, args.images, threshold=args.threshold, sensitivity=args.sensitivity, cam=args.cam,
                         truth=truth, device=args.device)
    if result.run_warning:
        print(f"predict: warning: {result.run_warning}", file=sys.stderr)
    for note in result.notes:
        print(f"note: threshold {note}", file=sys.stderr)
    for small in result.warnings:
        print(f"predict: warning: {small.path}: {small.reason}", file=sys.stderr)
    if args.cam is not None:
        print(f"wrote {len(result.cam_files)} Grad-CAM overlays ({result.cam_layer}) to {args.cam}", file=sys.stderr)
    if result.cam_warning:
        print(f"predict: warning: {result.cam_warning}", file=sys.stderr)
    frame = result.frame
    if args.out:
        frame.to_csv(args.out, index=False, float_format="%.6f")
        print(f"wrote {len(frame)} rows to {args.out}")
    else:
        frame.to_csv(sys.stdout, index=False, float_format="%.6f")
    if result.failures:   # after writing: the readable images' scores are kept, the exit status still says 2
        for failed in result.failures:
            print(f"predict: skipped {failed.path}: {failed.reason}", file=sys.stderr)
        where = args.out if args.out else "the CSV on stdout"
        raise MedtransferError(f"{len(result.failures)} of {result.n_images} images could not be read; "
                               f"predictions for the other {len(frame)} are in {where}")
    return 0


COMMANDS = {"train": _train, "pretrain": _train, "lr-find": _lr_find, "data": _data, "radiomics": _radiomics,
            "study": _study, "report": _report, "advise": _advise, "predict": _predict}


if __name__ == "__main__":
    sys.exit(main())

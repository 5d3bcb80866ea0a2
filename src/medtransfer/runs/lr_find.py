"""``medtransfer lr-find``: the learning-rate range test of a recipe's model on its training subset."""
from __future__ import annotations

import sys
from pathlib import Path

from ..config import RunConfig, resolve_data_root
from ..data import prepare_data
from ..models import create_model
from ..models.init_resolve import resolve_init
from ..run_folder import write_json_atomic
from ..train import lr_find, plot_lr_find, resolve_device
from ..train.device import seed_everything


def lr_find_run(cfg: RunConfig, out: Path, data_root: Path | None = None):
    """Range-test the recipe's model on its training subset; writes lr_find.png / lr_find.json; returns the
    ``LRSuggestion`` (its warnings are logged too)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cfg.data, cfg.task, cfg.image_size, data_root or resolve_data_root(None),
                        cfg.train.n_train, cfg.train.seed)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    model = create_model(cfg.model.arch, len(data.label_names), init=resolve_init(cfg.model.init),
                         dropout=cfg.model.dropout, log=lambda line: print(line, file=sys.stderr))
    idx = data.train_subset
    lrs, losses, suggestion = lr_find(model, data.images[idx], data.labels[idx], task_kind=cfg.task.kind,
                                      cfg=cfg.train, device=device, log=lambda line: print(line, file=sys.stderr))
    plot_lr_find(lrs, losses, suggestion, out / "lr_find.png")
    write_json_atomic(out / "lr_find.json", {"suggested_lr": suggestion.suggested, "steepest_lr": suggestion.steepest,
                                             "minimum_tenth_lr": suggestion.minimum_tenth,
                                             "valley": list(suggestion.valley), "warnings": suggestion.warnings,
                                             "lrs": [float(v) for v in lrs],
                                             "losses": [float(v) for v in losses]})
    return suggestion

"""Training: fit a classifier with a transfer strategy and LR policy, predict, find an LR."""
from .device import resolve_device
from .loop import fit, predict
from .lr_find import lr_find, plot_lr_find
from .lr_policies import group_lrs, make_scheduler
from .strategies import set_trainable
from .tracks import FitResult

__all__ = ["FitResult", "fit", "predict", "resolve_device", "lr_find", "plot_lr_find",
           "group_lrs", "make_scheduler", "set_trainable"]

"""Models: one ``Classifier`` shape over registered backbone families, and where weights come from.

Importing the package registers the families (torchvision here; timm on demand via
``timm:NAME``), timm style: ``create_model("resnet18", num_outputs=14, init="imagenet")``.
"""
from . import timm_family, torchvision_family  # noqa: F401  (registers the families)
from .classifier import Backbone, Classifier
from .init import load_checkpoint_into, load_weights, save_weights
from .registry import create_model, list_archs, register_family

__all__ = [
    "Backbone", "Classifier", "create_model", "list_archs", "load_checkpoint_into",
    "load_weights", "register_family", "save_weights",
]

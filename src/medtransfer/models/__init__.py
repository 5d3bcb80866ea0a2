"""Models: one ``Classifier`` shape over registered backbone families, and where weights come from.

Importing the package registers the families, timm style:
``create_model("resnet18", num_outputs=14, init="imagenet")``. Every module of this package whose name
ends in ``_family`` is imported here (torchvision's; timm's, whose models load on demand via
``timm:NAME``), so a new backbone family is one new file, ``models/<name>_family.py``, with a builder
decorated ``@register_family``: nothing else lists the families.
"""
import importlib
import pkgutil

from .classifier import Backbone, Classifier
from .init import load_checkpoint_into, load_weights, save_weights
from .registry import create_model, list_archs, register_family

FAMILY_MODULES = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_family"))
for _module in FAMILY_MODULES:   # importing a family module registers its builders
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "Backbone", "Classifier", "create_model", "list_archs", "load_checkpoint_into",
    "load_weights", "register_family", "save_weights",
]

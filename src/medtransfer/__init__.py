"""medtransfer: which transfer-learning recipe should I use on my small medical dataset, and how much does it buy?

The Python API, for notebooks and scripts (the command line runs the same functions; docs/python-api.md
walks through it):

    import medtransfer as mt
    summary = mt.study.run("examples/quickstart.yaml", "studies/quickstart")  # the grid, then report.html
    answer = mt.read_answer("studies/quickstart")      # answer.json as a typed Answer
    table = mt.summary("studies/quickstart")           # one row per recipe and N, a pandas DataFrame
    cfg = mt.load_config("examples/pneumoniamnist.yaml", overrides={"train.n_train": 200})
    metrics = mt.train(cfg, "runs/one")                # one recipe, trained and tested
    mt.advise("mydata.yaml", "advice", budget="10m")   # the recipe for your own data in 10 minutes
    prediction = mt.predict("advice/best", ["a.png"], cam="heatmaps")

Entry points: load_config, load_spec, train, study.run / study.status / study.best, report, summary,
read_answer, advise, predict. Importing medtransfer imports no torch, pandas or matplotlib: each entry point
imports what it runs when it runs.
"""
import sys
import types

from . import api
from .api import (Answer, AnswerPanel, BestRecipe, Studies, load_config, load_spec, predict, read_answer, study,
                  summary)

__version__ = "0.1.0"
__all__ = ["Answer", "AnswerPanel", "BestRecipe", "Studies", "advise", "load_config", "load_spec", "predict",
           "read_answer", "report", "study", "summary", "train"]

# Four API names are also subpackages' names; each is an object that hands the subpackage's names on.
train = api.EntryPoint(api.train, "medtransfer.train")
advise = api.EntryPoint(api.advise, "medtransfer.advise")
report = api.EntryPoint(api.report, "medtransfer.report")


class Package(types.ModuleType):
    """The ``medtransfer`` module itself. The import system binds a subpackage to its name here the first time
    it is imported, and ``mt.train(...)`` imports ``medtransfer.train``: ``mt.train`` would become a module and
    the next call fail. A subpackage is therefore not bound over an API name (``mt.study``, ``mt.train``,
    ``mt.advise``, ``mt.report``); the API object hands the subpackage's names on (``api.SubpackageNames``)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and isinstance(self.__dict__.get(name), api.SubpackageNames):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = Package

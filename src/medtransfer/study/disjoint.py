"""A pretraining source must not hold the target's images or patients.

If the same-site source is trained on the target's own pool (the seed paper's design, read
naively: pretrain on NIH ChestX-ray14, then study N on NIH ChestX-ray14), every "N = 50"
run has already seen thousands of labelled target images, some of them test images, and the
measured transfer gain is there by construction. So before any run (``study run`` and its dry
run), each source is compared with every target it initialises: by patient id where both use
the same id space, and by pixels always (``data.leaks``), so a 1024 px release and its 64 px
subset, or a renamed copy, are caught as well as a second config of the same files.

The source's whole pool is compared (every image its config reads), not only the subset it will
train on: its validation images steer its weights too, its split is not known before it runs,
and a source sharing its test images with the target is still a setup to question.
"""
from __future__ import annotations

from ..errors import SharedDataError
from .grid import Plan
from .opened import OpenedSources


def overlap(source_cfg, target_cfg, opened: OpenedSources):
    """What the source config's images share with the target config's (patients where comparable, pixels
    always): a ``data.leaks.Overlap``."""
    # imported here, as OpenedSources.get imports medtransfer.data: `medtransfer --help` imports this package
    from ..data.leaks import find_overlap

    return find_overlap(opened.get(source_cfg), source_cfg.data, opened.get(target_cfg), target_cfg.data,
                        opened.data_root)


def check_sources_disjoint(plan: Plan, opened: OpenedSources) -> list[str]:
    """SharedDataError (a ConfigError) naming the first source that shares images or patients with a target it
    initialises, unless that source says ``allow_overlap: true``; returns notes on what the comparison could not do."""
    from ..data.leaks import dataset_label   # lazily, as in overlap()

    sources = plan.source_by_id()
    checked, notes = set(), []
    for run in plan.runs:
        if run.is_baseline or run.source not in sources:
            continue
        source = sources[run.source]
        name = source.source
        pair = (source.run_id, OpenedSources.key(run.config))
        if pair in checked or plan.spec.sources.get(name, {}).get("allow_overlap"):
            continue
        checked.add(pair)
        found = overlap(source.config, run.config, opened)
        notes.extend(line for line in (f"source {name}: {note}" for note in found.notes) if line not in notes)
        if found:
            raise SharedDataError(
                f"source {name} ({dataset_label(source.config.data)}) shares {found.counts()} with the target "
                f"{run.task}: {found.examples()}; a source that has seen the target's patients or images measures "
                f"memory, not transfer: give both the same data.partition "
                f"(e.g. {{source: 0.5, target: 0.5}}) with data.pool: source / target, or set "
                f"sources.{name}.allow_overlap: true to allow it (the report marks it)")
    return notes

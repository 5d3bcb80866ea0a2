"""One run of a method, end to end, and the run folder it leaves behind.

This is the edge where files are written: everything below it takes arrays and returns values.

- ``folder_protocol``: what every run's folder goes through (config.yaml first, train.log
  throughout, metrics.json last and atomically, failed.json with the reason when it fails).
- ``data_split``: the split and N-subset a run uses, the same for every method (so runs pair).
- ``scoring``: the tail every method ends with (predictions, metrics, the test interval, the
  validation thresholds and their operating points).
- ``cnn``: one CNN run (``train_run``) and its stages, which a pack reuses.
- ``outer_cv``: a small test split's estimate by patient-grouped outer cross-validation (``train.test_estimate``).
- ``packs``: CNN runs trained together as one fused model (``train_pack``).
- ``lr_find``: the learning-rate range test of a recipe (``lr_find_run``).

The package imports none of them, so a caller pays only for the module it uses (``cnn`` imports torch).
"""

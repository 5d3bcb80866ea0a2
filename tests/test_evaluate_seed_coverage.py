"""A one-seed cell's interval must cover the recipe's true AUROC even when seed luck dominates the test set's.

Simulated (normal model, no real bootstrap): a recipe with known true AUROC at several N; the test set
adds one shared error (SE ``TEST_SE``) to every run, each run adds its own seed error (SD ``SEED_SD``
= 3 x ``TEST_SE``), and a run's bootstrap draws are its point plus normal noise of the test SE, the
same resample noise for every run (same patient resamples). Three N have 3 seeds, one has 1 seed.
"""
import numpy as np

from medtransfer.evaluate.uncertainty import NOT_COVERED, SeedSpread, combined_interval

TRUE = 0.80
TEST_SE = 0.01
SEED_SD = 3 * TEST_SE
REPLICATES = 400
N_BOOT = 400
OTHER_N = (100, 200, 800)


def _cell(rng, test_error, resample, n_seeds):
    """(draws (S, B), points (S,)) of one cell: shared test error and resample noise, own seed errors."""
    points = TRUE + test_error + rng.normal(0, SEED_SD, n_seeds)
    return points[:, None] + resample[None, :], points


def _replicate(rng, borrow: bool):
    test_error = rng.normal(0, TEST_SE)
    resample = rng.normal(0, TEST_SE, N_BOOT)            # column b: the same patient resample for every run
    cells = {n: _cell(rng, test_error, resample, 3) for n in OTHER_N}
    draws, points = _cell(rng, test_error, resample, 1)  # the one-seed cell, at N = 400
    lender = cells[200 if abs(np.log(400 / 200)) <= abs(np.log(800 / 400)) else 800][1]
    spread = SeedSpread(float(lender.var(ddof=1)), len(lender) - 1, "N=200 (3 seeds)") if borrow else None
    return combined_interval(draws, points, seed=int(rng.integers(1 << 30)), borrowed=spread)


def _coverage(borrow: bool) -> float:
    rng = np.random.default_rng(2024)
    hits = 0
    for _ in range(REPLICATES):
        got = _replicate(rng, borrow)
        hits += got.low <= TRUE <= got.high
    return hits / REPLICATES


def test_borrowed_seed_variance_covers_a_one_seed_cell():
    with_borrowing, without = _coverage(True), _coverage(False)
    assert with_borrowing >= 0.93, with_borrowing
    assert without < 0.6, without               # the test-set interval alone: about 0.46 at 3x


def test_the_interval_says_where_its_seed_variance_came_from():
    rng = np.random.default_rng(0)
    draws = 0.8 + rng.normal(0, TEST_SE, (1, 200))
    alone = combined_interval(draws, [0.8])
    lent = combined_interval(draws, [0.8], borrowed=SeedSpread(SEED_SD ** 2, 2, "N=800 of this recipe (3 seeds)"))
    assert alone.seed_variance == NOT_COVERED and NOT_COVERED in alone.method
    assert lent.seed_variance == "borrowed from N=800 of this recipe (3 seeds)" and "borrowed" in lent.method
    assert lent.high - lent.low > 3 * (alone.high - alone.low)
    three = combined_interval(np.repeat(draws, 3, axis=0), [0.78, 0.8, 0.82], borrowed=SeedSpread(1.0, 2, "x"))
    assert three.seed_variance == "from 3 seeds"     # cells with their own seeds never borrow

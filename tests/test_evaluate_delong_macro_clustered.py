"""The patient-clustered macro DeLong test (Obuchowski per label, averaged): wider when a patient's images are
correlated, the unclustered test when every patient has one image, the binary clustered test for one label."""
import numpy as np
import pytest

from medtransfer.evaluate.delong import (delong_paired_clustered, delong_paired_macro,
                                         delong_paired_macro_clustered)


def _clustered_data(n_patients=150, images=4, labels=5, seed=0):
    """Multi-label targets and two methods' scores with a strong per-patient effect shared by its images."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), images)
    prevalence = rng.uniform(0.2, 0.5, labels)
    disease = rng.random((n_patients, labels)) < prevalence              # a patient's images share findings
    y = (disease[patients] & (rng.random((len(patients), labels)) < 0.9)).astype(int)
    patient_effect = rng.normal(0, 1.5, (n_patients, labels))[patients]
    base = 1.2 * y + patient_effect
    a = base + rng.normal(0, 0.5, y.shape) + 0.3 * y + rng.normal(0, 1.0, (n_patients, labels))[patients]
    b = base + rng.normal(0, 0.5, y.shape)             # a's own per-patient error makes the difference clustered
    return y, a, b, patients


def test_correlated_images_of_a_patient_widen_the_macro_test():
    y, a, b, patients = _clustered_data()
    clustered = delong_paired_macro_clustered(y, a, b, patients)
    plain = delong_paired_macro(y, a, b)
    assert clustered["diff"] == pytest.approx(plain["diff"], abs=1e-12)
    assert clustered["n_labels"] == plain["n_labels"] == 5 and clustered["n_patients"] == 150
    assert clustered["se"] > 1.2 * plain["se"]


def test_one_image_per_patient_is_the_unclustered_macro_test():
    y, a, b, _ = _clustered_data()
    ids = np.array([f"p{i}" for i in range(len(y))])
    clustered = delong_paired_macro_clustered(y, a, b, ids)
    plain = delong_paired_macro(y, a, b)
    assert clustered["se"] ** 2 == pytest.approx(plain["se"] ** 2, abs=1e-12, rel=0)
    assert clustered["p_value"] == pytest.approx(plain["p_value"], abs=1e-9)


@pytest.mark.parametrize("images", [1, 3])
def test_one_label_is_the_binary_clustered_test(images):
    y, a, b, patients = _clustered_data(images=images, labels=1, seed=3)
    macro = delong_paired_macro_clustered(y, a, b, patients)
    binary = delong_paired_clustered(y[:, 0], a[:, 0], b[:, 0], patients)
    assert macro["se"] ** 2 == pytest.approx(binary["se"] ** 2, abs=1e-12, rel=0)
    assert macro["diff"] == pytest.approx(binary["diff"], abs=1e-12)

"""CKA between two models from the Gram matrices their comparison jobs store (so that neither model's weights are
needed later) against `interp.compare.layer_cka` on the representations themselves."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.jobs.kinds import GRAM, cka_between, grams, model_dir
from interp.compare import ShapeMismatchError, layer_cka
from interp.store import atomic_write_npz


def _store(run, mid, rep):
    atomic_write_npz(run / model_dir(mid) / GRAM, grams(rep))


def test_cka_from_stored_grams_equals_cka_of_the_representations(tmp_path):
    """Related representations (b = a rotated, scaled and noised, differently per layer) give CKA values spread
    over (0, 1); a layer constant across trials (up to rounding) is undefined in both. Catches a Gram matrix rebuilt
    from half its triangle, layers out of order, and too little precision kept (float16 fails)."""
    rng = np.random.default_rng(0)
    L, n, d = 5, 40, 24
    a = rng.normal(size=(L, n, d))
    noise = np.linspace(0.2, 3.0, L)[:, None, None]
    b = np.einsum("ltd,de->lte", a, np.linalg.qr(rng.normal(size=(d, d)))[0]) * 2 + noise * rng.normal(size=(L, n, d))
    a[0] = a[0, :1] + 1e-9 * rng.normal(size=(n, d))  # layer 0 of model a: the same for every trial up to rounding
    _store(tmp_path, "a", a)
    _store(tmp_path, "b", b)
    want = layer_cka({"resid": {"answer": a}}, {"resid": {"answer": b}}, debiased=True)["resid"]["answer"]
    got = np.array(cka_between(tmp_path, "a", "b"))
    assert np.isnan(want[0]) and np.isnan(got[0])
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-5, atol=1e-6)
    assert np.ptp(want[1:]) > 0.3 and np.all(np.diff(want[1:]) < 0)  # the layers differ: an order swap would show
    np.testing.assert_allclose(cka_between(tmp_path, "b", "b")[1:], 1.0, atol=1e-6)


def test_grams_of_different_trial_counts_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    _store(tmp_path, "a", rng.normal(size=(3, 10, 4)))
    _store(tmp_path, "b", rng.normal(size=(3, 12, 4)))
    with pytest.raises(ShapeMismatchError, match="same trials"):
        cka_between(tmp_path, "a", "b")

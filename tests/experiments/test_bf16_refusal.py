"""bf16 autocast on a CPU that would emulate it is refused before anything is written (measured: ~40x slower than
float32 on an AVX2-only CPU, with other rounding than a native one)."""

from __future__ import annotations

import pytest

from experiments.training import start as start_mod
from experiments.training import train as train_mod
from experiments.training.start import check_bf16


def test_bf16_on_a_cpu_without_native_bf16_is_refused_and_writes_nothing(monkeypatch, tmp_path, tiny_base):
    """Catches a silent emulated run (hours instead of minutes) and a refusal that comes after the output folder
    was made."""
    from tests.conftest import tiny_train_config

    monkeypatch.setattr(start_mod, "native_bf16_cpu", lambda: False)
    out = tmp_path / "ckpt"
    with pytest.raises(ValueError, match="no native bf16"):
        train_mod.train(tiny_train_config(tiny_base, "pretrained", steps=10, bf16=True, device="cpu"), out,
                        progress=False)
    assert not out.exists()


def test_float32_and_native_bf16_and_other_devices_pass(monkeypatch):
    """Catches a check that refuses float32, a CPU that has bf16, or a GPU (whose bf16 is native)."""
    monkeypatch.setattr(start_mod, "native_bf16_cpu", lambda: False)
    check_bf16(False, "cpu")
    check_bf16(True, "cuda")
    monkeypatch.setattr(start_mod, "native_bf16_cpu", lambda: True)
    check_bf16(True, "cpu")

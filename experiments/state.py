"""Training state that survives SIGKILL: model, optimizer, scheduler and RNG states as safetensors + JSON.

No pickle anywhere: optimizer tensors are flattened into a safetensors file and the rest is JSON. A state folder
is complete only when its `state.json` exists (written last, atomically); `latest` is swapped atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp.store import atomic_write_json, atomic_write_text


def _optim_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().to("cpu", copy=True).contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optim_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for key, v in info["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def save_state(folder: Path, step: int, model_state: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
               sched: Any, extra: dict[str, Any]) -> Path:
    """Save a resumable state under folder/step-N and point folder/latest at it; keeps only the newest two."""
    folder = Path(folder)
    target = folder / f"step-{step:08d}"
    if target.exists():
        shutil.rmtree(target)
    tmp = folder / f".tmp-step-{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    otensors, oinfo = _optim_to_flat(opt)
    save_file(otensors, str(tmp / "optimizer.safetensors"))
    save_file({"torch_rng": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    body = {"step": step, "optimizer": oinfo, "scheduler": sched.state_dict() if sched is not None else None, **extra}
    atomic_write_json(tmp / "state.json", body)
    os.replace(tmp, target)
    atomic_write_text(folder / "latest", target.name)
    for old in sorted(p for p in folder.glob("step-*") if p.name != target.name)[:-1]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_state(folder: Path) -> Path | None:
    folder = Path(folder)
    pointer = folder / "latest"
    if not pointer.exists():
        return None
    target = folder / pointer.read_text().strip()
    return target if (target / "state.json").exists() else None


def load_state(target: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any) -> dict[str, Any]:
    body = json.loads((target / "state.json").read_text())
    model.load_state_dict(load_file(str(target / "model.safetensors")), strict=True)
    _optim_from_flat(opt, load_file(str(target / "optimizer.safetensors")), body["optimizer"])
    if sched is not None and body.get("scheduler") is not None:
        sched.load_state_dict(body["scheduler"])
    torch.set_rng_state(load_file(str(target / "rng.safetensors"))["torch_rng"])
    return body


def lr_lambda(warmup: int, total: int, min_frac: float):  # noqa: ANN201
    """Linear warmup, then cosine decay to `min_frac` of the peak learning rate."""
    import math

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress))

    return f

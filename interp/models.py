"""The one adapter between this project and TransformerLens / Hugging Face models.

Every construction and loading of a model happens here: GPT-2-architecture `HookedTransformer`s built from an
`Arch` (from scratch, GPT-2 initialisation), converted from a Hugging Face GPT-2 (a local directory, fully offline,
or a hub name when the user asks for one), and the project's own checkpoints (safetensors + JSON, never pickle).

Weight processing: NONE. `fold_ln`, `center_writing_weights`, `center_unembed` and `fold_value_biases` are all
off for every model (pretrained, fine-tuned and scratch alike). Weights stay in the parametrisation they were
trained in, so weight reversion and relative weight change compare like with like; analyses that need the final
LayerNorm (direct logit attribution) apply its scale and weight explicitly.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp.store import atomic_write_json, file_sha256

CHECKPOINT_JSON = "checkpoint.json"
WEIGHTS = "model.safetensors"
TOKENIZER_DIR = "tokenizer"


SHIPPED_BASES = ("cogbase-6l",)


class ModelLoadError(RuntimeError):
    """A model, tokenizer or checkpoint could not be loaded; the message names the file and the problem."""


def resolve_base(name_or_path: str | Path) -> str | Path:
    """A shipped base's name -> its installed folder; anything else is returned unchanged (a local directory, a
    checkpoint or a hub name)."""
    if str(name_or_path) in SHIPPED_BASES:
        from importlib import resources

        return Path(str(resources.files("checkpoints").joinpath(str(name_or_path))))
    return name_or_path


@dataclass(frozen=True)
class Arch:
    """A GPT-2-architecture transformer: learned positions, pre-LN blocks, GELU MLP."""

    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    d_vocab: int = 50257
    n_ctx: int = 64
    act_fn: str = "gelu_new"
    eps: float = 1e-5

    def __post_init__(self) -> None:
        for f in ("n_layers", "d_model", "n_heads", "d_mlp", "d_vocab", "n_ctx"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise ValueError(f"arch.{f} must be a positive integer, got {getattr(self, f)!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"arch.d_model ({self.d_model}) must be divisible by arch.n_heads ({self.n_heads})")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Arch:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown arch key(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def from_hf_config(cls, cfg: Any) -> Arch:
        if getattr(cfg, "model_type", None) != "gpt2":
            raise ModelLoadError(f"only GPT-2 architecture models are supported, got model_type={cfg.model_type!r}")
        return cls(n_layers=cfg.n_layer, d_model=cfg.n_embd, n_heads=cfg.n_head, d_mlp=cfg.n_inner or 4 * cfg.n_embd,
                   d_vocab=cfg.vocab_size, n_ctx=cfg.n_positions, act_fn=cfg.activation_function,
                   eps=cfg.layer_norm_epsilon)

    def to_hf_config(self, bos_token_id: int, eos_token_id: int) -> Any:
        from transformers import GPT2Config

        return GPT2Config(vocab_size=self.d_vocab, n_positions=self.n_ctx, n_embd=self.d_model, n_layer=self.n_layers,
                          n_head=self.n_heads, n_inner=self.d_mlp, activation_function=self.act_fn,
                          layer_norm_epsilon=self.eps, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                          bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=True)


def _tl_config(arch: Arch, device: str, seed: int | None = None):  # noqa: ANN202
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        n_layers=arch.n_layers, d_model=arch.d_model, d_head=arch.d_head, n_heads=arch.n_heads, d_mlp=arch.d_mlp,
        d_vocab=arch.d_vocab, n_ctx=arch.n_ctx, act_fn=arch.act_fn, eps=arch.eps, normalization_type="LN",
        positional_embedding_type="standard", original_architecture="GPT2LMHeadModel", init_mode="gpt2",
        default_prepend_bos=True, device=device, seed=seed)


def _hooked(arch: Arch, tokenizer: Any, device: str, seed: int | None, init: bool):  # noqa: ANN202
    from transformer_lens import HookedTransformer

    cfg = _tl_config(arch, device, seed)
    cfg.init_weights = init
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.to(device, print_details=False)
    model.eval()
    return model


def build_scratch(arch: Arch, tokenizer: Any, seed: int, device: str = "cpu"):  # noqa: ANN201
    """A randomly initialised GPT-2-architecture HookedTransformer (GPT-2's initialisation, seeded)."""
    return _hooked(arch, tokenizer, device, seed, init=True)


def build_hf_gpt2(arch: Arch, tokenizer: Any, seed: int):  # noqa: ANN201
    """A randomly initialised transformers `GPT2LMHeadModel` (tied embeddings), used for pretraining the base."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(arch.to_hf_config(tokenizer.bos_token_id, tokenizer.eos_token_id))


def _quiet_transformers() -> None:
    """Library code prints nothing: no transformers progress bars or warnings on loading."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(path_or_name: str | Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path_or_name))
    except Exception as e:  # transformers raises many types here
        raise ModelLoadError(f"cannot load a tokenizer from {path_or_name}: {e}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _looks_local(name: str | Path) -> bool:
    s = str(name)
    return os.path.sep in s or s.startswith(".") or Path(s).exists()


def load_hf_gpt2(path_or_name: str | Path) -> tuple[Any, Any]:
    """A transformers GPT-2 and its tokenizer from a local directory (offline) or a hub name."""
    from transformers import GPT2LMHeadModel

    if _looks_local(path_or_name):
        p = Path(path_or_name)
        if not p.is_dir():
            raise ModelLoadError(f"base model directory {p} does not exist")
        for need in ("config.json",):
            if not (p / need).exists():
                raise ModelLoadError(f"{p} is not a Hugging Face model directory: {need} missing")
        has_st = (p / "model.safetensors").exists() or (p / "model.safetensors.index.json").exists()
        if not has_st and (p / "pytorch_model.bin").exists():
            raise ModelLoadError(f"{p} holds only pickled weights (pytorch_model.bin); convert them to safetensors")
        if not has_st:
            raise ModelLoadError(f"{p} holds no weights (model.safetensors missing)")
    _quiet_transformers()
    try:
        hf = GPT2LMHeadModel.from_pretrained(str(path_or_name), use_safetensors=True)
    except Exception as e:
        raise ModelLoadError(f"cannot load GPT-2 weights from {path_or_name}: {e}") from None
    hf.eval()
    return hf, load_tokenizer(path_or_name)


def hf_to_hooked(hf_model: Any, tokenizer: Any, device: str = "cpu"):  # noqa: ANN201
    """Convert a transformers GPT-2 to a HookedTransformer through TransformerLens's GPT-2 weight conversion."""
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    arch = Arch.from_hf_config(hf_model.config)
    model = _hooked(arch, tokenizer, device, None, init=False)
    state = convert_gpt2_weights(hf_model, model.cfg)
    state["unembed.b_U"] = torch.zeros(arch.d_vocab)
    model.load_and_process_state_dict({k: v.detach().clone() for k, v in state.items()}, fold_ln=False,
                                      center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False, refactor_factored_attn_matrices=False)
    model.to(device, print_details=False)
    model.eval()
    return model


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / CHECKPOINT_JSON).exists()


def save_checkpoint(model: Any, out: Path, meta: dict[str, Any], tokenizer: Any) -> None:
    """Write weights (safetensors), tokenizer files and checkpoint.json (arch + `meta`). Each file atomically;
    checkpoint.json is written last, so a folder without it is not a checkpoint."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = out / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out / WEIGHTS)
    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    arch = arch_of(model)
    body = {"format": "cogcircuits-checkpoint-1", "arch": asdict(arch), "weights_sha256": file_sha256(out / WEIGHTS),
            "weight_processing": "none", **meta}
    atomic_write_json(out / CHECKPOINT_JSON, body)


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    p = Path(path) / CHECKPOINT_JSON
    if not p.exists():
        raise ModelLoadError(f"{path} is not a checkpoint: {CHECKPOINT_JSON} missing")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{p} is not valid JSON: {e}") from None


def load_checkpoint(path: str | Path, device: str = "cpu"):  # noqa: ANN201
    """(model, tokenizer, meta) from a checkpoint directory; checks weights against the recorded hash and arch."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"checkpoint directory {path} does not exist")
    meta = read_checkpoint_meta(path)
    wpath = path / WEIGHTS
    if not wpath.exists():
        raise ModelLoadError(f"checkpoint {path}: weights file {WEIGHTS} missing")
    if meta.get("weights_sha256") and file_sha256(wpath) != meta["weights_sha256"]:
        raise ModelLoadError(f"checkpoint {path}: {WEIGHTS} does not match the hash in {CHECKPOINT_JSON} "
                             "(truncated or modified)")
    try:
        arch = Arch.from_dict(meta["arch"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"checkpoint {path}: bad arch in {CHECKPOINT_JSON}: {e}") from None
    tokenizer = load_tokenizer(path / TOKENIZER_DIR)
    if len(tokenizer) > arch.d_vocab:
        raise ModelLoadError(f"checkpoint {path}: tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                             f"is {arch.d_vocab}: the tokenizer does not match the model")
    try:
        state = load_file(str(wpath))
    except Exception as e:  # safetensors raises SafetensorError / OSError on bad files
        raise ModelLoadError(f"checkpoint {path}: cannot read {WEIGHTS}: {e}") from None
    model = _hooked(arch, tokenizer, device, None, init=False)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    bad = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or bad:
        detail = f"missing {missing[:3]}" if missing else f"shape mismatch in {bad[:3]}"
        raise ModelLoadError(f"checkpoint {path}: weights do not match the config ({detail})")
    model.load_state_dict(state, strict=False)
    model.to(device, print_details=False)
    model.eval()
    return model, tokenizer, meta


def load_model(path_or_name: str | Path, device: str = "cpu"):  # noqa: ANN201
    """Any model this project uses: a shipped base by name, a project checkpoint, a local HF GPT-2 directory, or a
    hub name. Returns (model, tokenizer, info) where info says what was loaded (never an absolute path)."""
    name = str(path_or_name)
    path_or_name = resolve_base(path_or_name)
    if is_checkpoint(path_or_name):
        model, tok, meta = load_checkpoint(path_or_name, device)
        return model, tok, {"kind": "checkpoint", "name": Path(name).name, **meta}
    hf, tok = load_hf_gpt2(path_or_name)
    model = hf_to_hooked(hf, tok, device)
    info: dict[str, Any] = {"kind": "hf", "name": name if name in SHIPPED_BASES or not _looks_local(name)
                            else Path(name).name}
    if _looks_local(path_or_name):
        weights = Path(path_or_name) / "model.safetensors"
        if weights.exists():
            info["weights_sha256"] = file_sha256(weights)
    return model, tok, info


def base_arch_and_tokenizer(base: str | Path) -> tuple[Arch, Any]:
    """Architecture and tokenizer of a base (shipped name, checkpoint, local HF directory or hub name) without its
    weights."""
    from transformers import AutoConfig

    base = resolve_base(base)
    if is_checkpoint(base):
        meta = read_checkpoint_meta(base)
        return Arch.from_dict(meta["arch"]), load_tokenizer(Path(base) / TOKENIZER_DIR)
    if Path(base).exists() and not Path(base).is_dir():
        raise ModelLoadError(f"base {base} is a file, not a model directory")
    if _looks_local(base) and not Path(base).exists():
        raise ModelLoadError(f"base model directory {base} does not exist")
    try:
        cfg = AutoConfig.from_pretrained(str(base))
    except Exception as e:
        raise ModelLoadError(f"cannot read the config of base {base!r}: {e}") from None
    return Arch.from_hf_config(cfg), load_tokenizer(base)


def arch_of(model: Any) -> Arch:
    c = model.cfg
    return Arch(n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads, d_mlp=c.d_mlp, d_vocab=c.d_vocab,
                n_ctx=c.n_ctx, act_fn=c.act_fn, eps=c.eps)


def state_sha256(model: Any) -> str:
    """A hash of a model's weights (every state-dict tensor, in name order, as float32 bytes)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def copy_model(model: Any):  # noqa: ANN201
    """An independent copy (same tokenizer, same device) for analyses that edit weights."""
    clone = _hooked(arch_of(model), model.tokenizer, str(model.cfg.device), None, init=False)
    clone.load_state_dict(model.state_dict())
    clone.to(model.cfg.device, print_details=False)
    clone.eval()
    return clone


def save_hf_dir(hf_model: Any, tokenizer: Any, out: Path) -> None:
    """A Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer files)."""
    import shutil
    import tempfile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _quiet_transformers()
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        hf_model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        for f in tmp.iterdir():  # each file replaced atomically
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

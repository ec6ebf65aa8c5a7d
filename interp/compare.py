"""Cross-model comparisons: how much a trained model relies on its pretrained base, layer by layer.

- CKA (linear; debiased and minibatch estimators) between representations of two models on the same inputs.
- Weight reversion: reset one layer component of a trained model to the base's weights; performance retained.
- Relative weight change per layer component: ||theta - theta_base|| / ||theta_base||.
- Cross-model activation patching (CMAP): the base's activation (same inputs) patched into the trained model.

Components: "embed" (W_E, W_pos), "L{l}.attn" (ln1 + attention), "L{l}.mlp" (ln2 + MLP), "unembed" (ln_final,
W_U, b_U). Axes: trials, layer, d_model (features).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from interp.metrics import as_ids, as_tokens, last_logits, logit_diff_from_logits
from interp.models import copy_model, is_derived_buffer
from interp.typing import TLModel

SITES = {"resid": "hook_resid_pre", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}


class ShapeMismatchError(ValueError):
    pass


# ---------------------------------------------------------------- CKA
def _center(x: np.ndarray) -> np.ndarray:
    return x - x.mean(0, keepdims=True)


def cka(x: Float[np.ndarray, "trials d1"], y: Float[np.ndarray, "trials d2"], debiased: bool = False) -> float:
    """Linear CKA (Kornblith et al. 2019); `debiased` uses the unbiased HSIC estimator (Song et al. 2012)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same trials for both representations: {x.shape[0]} vs {y.shape[0]}")
    if is_constant(x) or is_constant(y):  # e.g. the answer token before layer 0: the same for every trial
        return float("nan")
    if is_one_dimensional(x) or is_one_dimensional(y):  # e.g. the context cue: one of two prefixes per trial
        return float("nan")
    if debiased:
        return cka_from_grams(x @ x.T, y @ y.T)
    x, y = _center(x), _center(y)
    num = np.linalg.norm(y.T @ x) ** 2
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(num / den) if den > 0 else float("nan")


def cka_from_grams(k: Float[np.ndarray, "trials trials"], l_: Float[np.ndarray, "trials trials"]) -> float:
    """Debiased linear CKA from the Gram matrices X X^T and Y Y^T of two representations of the same trials (what
    `cka(x, y, debiased=True)` computes from X and Y; a model's Gram matrices can be stored instead of its
    representations)."""
    hxy, hxx, hyy = _hsic_u(k, l_), _hsic_u(k, k), _hsic_u(l_, l_)
    return float(hxy / np.sqrt(hxx * hyy)) if hxx > 0 and hyy > 0 else float("nan")


def is_constant(x: np.ndarray, rtol: float = 1e-6) -> bool:
    """True when a representation does not vary across trials beyond rounding (CKA is then undefined)."""
    return bool(np.linalg.norm(_center(x)) <= rtol * max(np.linalg.norm(x), 1e-30))


def is_one_dimensional(x: np.ndarray, rtol: float = 1e-5) -> bool:
    """True when a representation varies across trials along one direction only (its centred matrix has rank
    <= 1), e.g. at the context cue, where every trial shows one of two prefixes: CKA of two such representations
    is 1 whenever both separate the same two groups of trials, whatever else the models do, so it is undefined."""
    s = np.linalg.svd(_center(np.asarray(x, dtype=np.float64)), compute_uv=False)
    return bool(len(s) < 2 or s[1] <= rtol * max(s[0], 1e-30))


def _hsic_u(k: np.ndarray, l_: np.ndarray) -> float:
    n = k.shape[0]
    if n < 4:
        raise ValueError("the debiased CKA estimator needs at least 4 trials")
    k, l_ = k.copy(), l_.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l_, 0)
    ones = np.ones(n)
    term = np.trace(k @ l_) + (ones @ k @ ones) * (ones @ l_ @ ones) / ((n - 1) * (n - 2)) \
        - 2 / (n - 2) * (ones @ k @ l_ @ ones)
    return float(term / (n * (n - 3)))


def minibatch_cka(x: np.ndarray, y: np.ndarray, batch_size: int = 64, seed: int = 0) -> float:
    """Minibatch CKA (Nguyen et al. 2021): unbiased HSIC averaged over minibatches, then the ratio."""
    n = x.shape[0]
    idx = np.random.default_rng(seed).permutation(n)
    hxy = hxx = hyy = 0.0
    for i in range(0, n - batch_size + 1, batch_size):
        b = idx[i:i + batch_size]
        k, l_ = x[b] @ x[b].T, y[b] @ y[b].T
        hxy, hxx, hyy = hxy + _hsic_u(k, l_), hxx + _hsic_u(k, k), hyy + _hsic_u(l_, l_)
    return float(hxy / np.sqrt(hxx * hyy)) if hxx > 0 and hyy > 0 else float("nan")


@torch.no_grad()
def representations(model: TLModel, tokens: Any, positions: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
    """{site: {position name: [layer(+1), trials, d_model]}}; resid has n_layers + 1 points (after the last)."""
    t = as_tokens(tokens, model.cfg.device)
    L = model.cfg.n_layers
    _, cache = model.run_with_cache(t, names_filter=lambda n: any(n.endswith(h) for h in SITES.values())
                                    or n == f"blocks.{L - 1}.hook_resid_post", return_type=None)
    out: dict[str, dict[str, np.ndarray]] = {}
    for site, hook in SITES.items():
        out[site] = {}
        for pname, p in positions.items():
            if not -t.shape[1] <= p < t.shape[1]:
                raise ValueError(f"position {pname}={p} out of range for sequences of length {t.shape[1]}")
            acts = [cache[f"blocks.{l}.{hook}"][:, p] for l in range(L)]
            if site == "resid":
                acts.append(cache[f"blocks.{L - 1}.hook_resid_post"][:, p])
            out[site][pname] = torch.stack(acts).double().cpu().numpy()
    return out


def layer_cka(rep_a: dict, rep_b: dict, debiased: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """CKA per layer between two models' `representations` (layer counts must match)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for site in rep_a:
        out[site] = {}
        for pname in rep_a[site]:
            a, b = rep_a[site][pname], rep_b[site][pname]
            if a.shape[0] != b.shape[0]:
                raise ShapeMismatchError(f"models have {a.shape[0]} and {b.shape[0]} layers at {site}: per-layer CKA "
                                         "needs equal depth")
            out[site][pname] = np.array([cka(a[i], b[i], debiased) for i in range(a.shape[0])])
    return out


# ---------------------------------------------------------------- weights
def components(n_layers: int) -> list[str]:
    return ["embed"] + [f"L{l}.{c}" for l in range(n_layers) for c in ("attn", "mlp")] + ["unembed"]


def _is_weight(key: str) -> bool:
    return not is_derived_buffer(key)


def component_params(model: TLModel, name: str) -> list[str]:
    """The state-dict entries of one component, for any architecture: "embed" (token and, when learned, position
    embeddings), "L{l}.attn" (its normalisation and attention), "L{l}.mlp" (its normalisation and MLP, gated or
    not), "unembed" (final normalisation and unembedding)."""
    if name == "embed":
        prefixes: tuple[str, ...] = ("embed.", "pos_embed.")
    elif name == "unembed":
        prefixes = ("ln_final.", "unembed.")
    else:
        layer, kind = name[1:].split(".")
        prefixes = (f"blocks.{layer}.ln1.", f"blocks.{layer}.attn.") if kind == "attn" else \
            (f"blocks.{layer}.ln2.", f"blocks.{layer}.mlp.")
    return [k for k in model.state_dict() if k.startswith(prefixes) and _is_weight(k)]


def check_same_shape(a: Any, b: Any, what: str = "this comparison") -> None:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if not k.endswith(("IGNORE", "mask"))]
    bad = [k for k in keys if k not in sb or sa[k].shape != sb[k].shape]
    if bad:
        raise ShapeMismatchError(f"{what} needs models of the same shape; they differ at {bad[0]} "
                                 f"({tuple(sa[bad[0]].shape)} vs {tuple(sb[bad[0]].shape) if bad[0] in sb else 'absent'})")


def relative_weight_change(model: TLModel, base: TLModel) -> dict[str, float]:
    check_same_shape(model, base, "relative weight change")
    sm, sb = model.state_dict(), base.state_dict()
    out = {}
    for comp in components(model.cfg.n_layers):
        names = component_params(model, comp)
        diff = torch.sqrt(sum(((sm[n] - sb[n]).double() ** 2).sum() for n in names))
        norm = torch.sqrt(sum((sb[n].double() ** 2).sum() for n in names))
        out[comp] = float(diff / norm) if norm > 0 else float("inf")
    return out


@torch.no_grad()
def performance(model: TLModel, t: torch.Tensor, a: torch.Tensor, w: torch.Tensor, hooks: list | None = None) -> dict[str, float]:
    ld = logit_diff_from_logits(last_logits(model, t, hooks), a, w)
    return {"accuracy": float((ld > 0).float().mean()), "logit_diff": float(ld.mean())}


CHANCE = 0.5  # two answer words, on a set balanced by answer side (`chance_accuracy` measures it)
MIN_MARGIN = 0.1  # the unedited model must beat chance by this much for a retained accuracy to be defined
MIN_LOGIT_DIFF = 0.25  # ... and have at least this mean logit difference for a retained logit difference


def chance_accuracy(answer: Any, wrong: Any) -> float:
    """Chance measured on a trial set: the accuracy of the best constant-output reference (a stand-in model whose
    logits favour one answer word on every trial), scored by the same logit-difference code as the models. 0.5 on
    a set balanced by answer side; the majority side's share otherwise (39 of 64 trials: 0.609), which is what a
    model that collapsed to that answer scores."""
    a, w = as_ids(answer, "cpu"), as_ids(wrong, "cpu")
    words = torch.unique(torch.cat([a, w]))
    best = 0.0
    for word in words:
        logits = torch.zeros(len(a), int(max(a.max(), w.max())) + 1)
        logits[:, word] = 1.0
        best = max(best, float((logit_diff_from_logits(logits, a, w) > 0).float().mean()))
    return best


def retained(perf: dict[str, float], full: dict[str, float], chance: float = CHANCE) -> dict[str, float]:
    """Chance-corrected share of performance kept after an edit: (acc - chance) / (acc_full - chance), so a model
    that falls to chance keeps 0 and an unchanged one 1; and the share of the mean logit difference kept. NaN
    ("undefined") when the unedited model is too close to chance or its logit difference too small. Pass the
    chance measured on the trials (`chance_accuracy`): with a fixed 0.5 on an unbalanced set, a model that collapsed
    to the majority answer would keep a positive share."""
    margin = full["accuracy"] - chance
    return {**perf,
            "accuracy_retained": (perf["accuracy"] - chance) / margin if margin >= MIN_MARGIN else float("nan"),
            "logit_diff_retained": perf["logit_diff"] / full["logit_diff"]
            if abs(full["logit_diff"]) >= MIN_LOGIT_DIFF else float("nan")}


def weight_reversion(model: TLModel, base: TLModel, tokens: Any, answer: Any, wrong: Any, singles: bool = True,
                     bottom_up: bool = True) -> dict[str, Any]:
    """Performance retained (chance-corrected, see `retained`) when components are reset to the weights of
    `base` (the pretrained base, or any reference of the same shape such as a scratch model's own
    initialisation): each alone, each layer, cumulatively from the top layer down, and from the bottom layer up."""
    check_same_shape(model, base, "weight reversion")
    dev = model.cfg.device
    t, a, w = as_tokens(tokens, dev), as_ids(answer, dev), as_ids(wrong, dev)
    full, chance = performance(model, t, a, w), chance_accuracy(a, w)
    sb = base.state_dict()
    work = copy_model(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}

    def revert(comps: list[str]) -> dict[str, float]:
        work.load_state_dict(original)
        state = work.state_dict()
        with torch.no_grad():
            for c in comps:
                for n in component_params(model, c):
                    state[n].copy_(sb[n])
        return retained(performance(work, t, a, w), full, chance)

    L = model.cfg.n_layers
    layer_comps = lambda l: [f"L{l}.attn", f"L{l}.mlp"]  # noqa: E731
    out: dict[str, Any] = {"full": full, "chance": chance}
    if singles:
        out["single"] = {c: revert([c]) for c in components(L)}
    out["layer"] = {f"L{l}": revert(layer_comps(l)) for l in range(L)}
    out["top_down"] = [revert([c for j in range(k, L) for c in layer_comps(j)]) for k in range(L - 1, -1, -1)]
    if bottom_up:
        out["bottom_up"] = [revert([c for j in range(0, k + 1) for c in layer_comps(j)]) for k in range(L)]
    return out


def cross_model_patching(model: TLModel, base: TLModel, tokens: Any, answer: Any, wrong: Any,
                         sites: tuple[str, ...] = tuple(SITES)) -> dict[str, Any]:
    """Patch the base's activation (same inputs, all positions) into `model` at each layer's residual stream,
    attention output and MLP output (`sites`); performance retained (chance-corrected, see `retained`)."""
    check_same_shape(model, base, "cross-model activation patching")
    dev = model.cfg.device
    t, a, w = as_tokens(tokens, dev), as_ids(answer, dev), as_ids(wrong, dev)
    full, chance = performance(model, t, a, w), chance_accuracy(a, w)
    with torch.no_grad():
        _, bcache = base.run_with_cache(t, names_filter=lambda n: any(n.endswith(h) for h in SITES.values()),
                                        return_type=None)
    out: dict[str, Any] = {"full": full, "chance": chance}
    for site in sites:
        hook = SITES[site]
        rows = []
        for l in range(model.cfg.n_layers):
            name = f"blocks.{l}.{hook}"
            rows.append(retained(performance(model, t, a, w, [(name, lambda act, hook, s=bcache[name]: s)]), full,
                                 chance))
        out[site] = rows
    return out

"""A partial forward pass of a hooked model (`interp.hooked_lm.HookedLM`, GPT-2 or Llama) from layer L, position p.

Exact patching only needs to recompute what a patch can change: layers >= L (the earlier ones are read from the
target run's cache) and positions >= p (causal attention: earlier positions, and their keys and values, are
unchanged, so they are read from the cache too). Only the logit difference at the final position is needed, so
the unembedding is applied to two columns, not the vocabulary, and the last block is run for the final position
alone (its keys and values excepted: the final query attends to every position).

Architectures: the model's weights are read once into the layout this pass multiplies with (`Weights`: queries,
keys and values in one matrix, head outputs flattened); normalisation (LayerNorm or RMSNorm) and the MLP (GELU, or
gated SiLU) are computed with fused functions (PyTorch's norms; on CPUs oneDNN's linear layer with the activation
fused) when the model's module is one of TransformerLens's own (otherwise the model's module itself is called).
Attention is written here: learned positions (GPT-2) or rotary positions applied with the offset of the first
recomputed position (Llama), keys and values per query head (grouped-query attention: computed per key/value head,
then repeated per query head, as TransformerLens's `ungroup_grouped_query_attention` hooks them). Patched q / k / v
are the pre-rotary values TransformerLens hooks as `hook_q` / `hook_k` / `hook_v`; the cached keys of earlier
positions are the post-rotary ones (`hook_rot_k`).

Several patched variants of one trial batch are stacked along the batch ("variant-major": rows v * batch ..
(v + 1) * batch - 1 are variant v); the cached keys and values of earlier positions are shared by all of them.

Axes: batch (trials, possibly several patched variants stacked), pos (positions p..end), kpos (all key
positions 0..end), head, d_head, d_model.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float

from interp.models import attn_scale_of, kv_weights, rotary_of
from interp.typing import TLModel

# a patch receives (activation name, activation, start position) and returns the patched activation
Patch = Callable[[str, torch.Tensor, int], torch.Tensor]

_TANH_GELU = {"gelu_new", "gelu_fast", "gelu_pytorch_tanh"}  # TransformerLens's tanh approximations of GELU
_ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    **{k: (lambda x: F.gelu(x, approximate="tanh")) for k in _TANH_GELU},
    "gelu": F.gelu, "silu": F.silu, "relu": F.relu}
# the same activations as oneDNN post-operations of a linear layer (attr, algorithm)
_ONEDNN = {**{k: ("gelu", "tanh") for k in _TANH_GELU}, "gelu": ("gelu", "none"), "silu": ("swish", ""),
           "relu": ("relu", "")}


SUPPORTED = ("GPT2LMHeadModel", "LlamaForCausalLM")


def supported(cfg: Any) -> bool:
    """Whether this module's forward computes the model exactly: GPT-2 and Llama architectures, grouped keys and
    values ungrouped (one per query head, as every analysis here sees them)."""
    return cfg.original_architecture in SUPPORTED and not (cfg.n_key_value_heads and
                                                           not cfg.ungroup_grouped_query_attention)


def _norm(mod: Any, cfg: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """TransformerLens's LayerNorm / RMSNorm (and their weightless variants) as one fused call; anything else: the
    module itself."""
    name, eps, d = type(mod).__name__, getattr(mod, "eps", None), cfg.d_model
    if cfg.dtype != torch.float32 or eps is None:
        return mod
    if name == "LayerNorm":
        return lambda x: F.layer_norm(x, (d,), mod.w, mod.b, eps)
    if name == "LayerNormPre":
        return lambda x: F.layer_norm(x, (d,), None, None, eps)
    if name == "RMSNorm" and hasattr(F, "rms_norm"):
        return lambda x: F.rms_norm(x, (d,), mod.w, eps)
    if name == "RMSNormPre" and hasattr(F, "rms_norm"):
        return lambda x: F.rms_norm(x, (d,), None, eps)
    return mod


def _linear_act(W: torch.Tensor, b: torch.Tensor | None, act_fn: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """x @ W + b followed by the activation, for [rows, d_in] inputs.

    On CPUs, oneDNN's linear layer with the activation as its post-operation (measured on 2 cores for [1280, 256] x
    [256, 1024] with tanh GELU: 2.3 ms against 3.2 to 5.5 ms for the product and PyTorch's tanh-GELU kernel, which is
    slow on CPUs). Used only where it agrees with the separate operations on a probe input (float32 products: not
    under a reduced float32 matmul precision)."""
    act = _ACTS[act_fn]
    plain = (lambda x: act(torch.addmm(b, x, W))) if b is not None else (lambda x: act(x @ W))
    if (W.device.type != "cpu" or W.dtype != torch.float32 or not torch.backends.mkldnn.is_available()
            or torch.get_float32_matmul_precision() != "highest"):
        return plain
    attr, algo = _ONEDNN[act_fn]
    Wt = W.T.contiguous()  # [d_out, d_in], nn.Linear's layout
    fused = lambda x: torch.ops.mkldnn._linear_pointwise(x, Wt, b, attr, [], algo)  # noqa: E731
    try:
        probe = torch.randn(4, W.shape[0], generator=torch.Generator().manual_seed(0)) * 2
        ok = torch.allclose(fused(probe), plain(probe), rtol=1e-4, atol=1e-4 * float(W.abs().max()))
    except (RuntimeError, AttributeError, NotImplementedError):
        ok = False
    return fused if ok else plain


def _mlp(mlp: Any, cfg: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """TransformerLens's MLP / GatedMLP as two (gated: three) matrix products with the activation fused into the
    first; anything else (other activations, an MLP with its own normalisation): the module itself."""
    name, d = type(mlp).__name__, cfg.d_model
    if cfg.act_fn not in _ACTS or cfg.is_layer_norm_activation() or cfg.dtype != torch.float32:
        return mlp
    if name == "MLP":
        hidden = _linear_act(mlp.W_in, mlp.b_in, cfg.act_fn)
        W_out, b_out = mlp.W_out, mlp.b_out

        def f(x: torch.Tensor) -> torch.Tensor:
            return torch.addmm(b_out, hidden(x.reshape(-1, d)), W_out).view(x.shape)

        return f
    if name == "GatedMLP":
        gate = _linear_act(mlp.W_gate, None, cfg.act_fn)
        W_in, b_in, W_out, b_out = mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out

        def g(x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, d)
            return torch.addmm(b_out, (gate(flat) * (flat @ W_in)).add_(b_in), W_out).view(x.shape)

        return g
    return mlp


class _Block:
    """One block's weights in the layout of the partial forward."""

    def __init__(self, block: Any, cfg: Any) -> None:
        a = block.attn
        d, h, e = cfg.d_model, cfg.n_heads, cfg.d_head
        W_K, W_V, b_K, b_V = kv_weights(a)  # grouped-query attention: per kv head
        self.n_kv = W_K.shape[0]
        self.rotate, self.scale, self.n_heads, self.d_head = rotary_of(a), attn_scale_of(a), h, e
        # [head, d_model, d_head] -> [d_model, head * d_head]
        flat = lambda W: W.permute(1, 0, 2).reshape(d, -1)  # noqa: E731
        self.W_qkv = torch.cat([flat(a.W_Q), flat(W_K), flat(W_V)], dim=1).contiguous()
        self.b_qkv = torch.cat([a.b_Q.reshape(-1), b_K.reshape(-1), b_V.reshape(-1)])
        self.W_O, self.b_O = a.W_O.reshape(h * e, d), a.b_O
        self.attn = a
        self.ln1, self.ln2, self.mlp = _norm(block.ln1, cfg), _norm(block.ln2, cfg), _mlp(block.mlp, cfg)


class Weights:
    """A model's weights read once into the layout of `run_from`; `Weights.of(model)` reuses them until a parameter
    of the model changes (in place or replaced)."""

    _cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model: TLModel) -> Weights:
        key = tuple((p.data_ptr(), p._version, p.device) for p in model.parameters())
        hit = cls._cache.get(model)
        if hit is None or hit[0] != key:
            hit = (key, cls(model))
            cls._cache[model] = hit
        return hit[1]

    @torch.no_grad()
    def __init__(self, model: TLModel) -> None:
        c = model.cfg
        # the model's parts, not the model (the cache of `of` holds no reference to the model it is keyed by)
        self.embed, self.pos_embed, self.unembed = model.embed, getattr(model, "pos_embed", None), model.unembed
        self.n_layers, self.n_heads, self.d_head, self.d_model = c.n_layers, c.n_heads, c.d_head, c.d_model
        self.rotary = c.positional_embedding_type == "rotary"
        self.blocks = [_Block(b, c) for b in model.blocks]
        self.ln_final = _norm(model.ln_final, c)

    def direction(self, answer: torch.Tensor, wrong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unembedding of the logit difference: ([batch, d_model] directions, [batch] bias differences)."""
        W_U, b_U = self.unembed.W_U, self.unembed.b_U
        return (W_U[:, answer] - W_U[:, wrong]).T.contiguous(), b_U[answer] - b_U[wrong]


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis, in place: the same operations as torch.softmax (subtract the maximum,
    exponentiate, divide by the sum), several times faster than its kernel on the short rows of attention scores
    on CPUs (measured: 0.97 ms against 0.17 ms for [128, 8, 10, 12] on 2 cores)."""
    if x.dtype != torch.float32:  # reduced precision: PyTorch's kernel (it accumulates in float32)
        return torch.softmax(x, dim=-1)
    x = x.sub_(x.amax(-1, keepdim=True)).exp_()
    return x.div_(x.sum(-1, keepdim=True))


def _stack(prefix: torch.Tensor, new: torch.Tensor, variants: int) -> torch.Tensor:
    """Cached [batch, head, start, d_head] prefix (shared by every variant) followed by the recomputed
    [variants * batch, head, pos, d_head] positions, along the position axis."""
    s, n = prefix.shape[2], new.shape[2]
    if s == 0:
        return new
    out = new.new_empty(new.shape[0], new.shape[1], s + n, new.shape[3])
    out.view(variants, prefix.shape[0], *out.shape[1:])[:, :, :, :s] = prefix
    out[:, :, s:] = new
    return out


def _attention(blk: _Block, x_ln: Float[torch.Tensor, "batch pos d_model"], k_prev: torch.Tensor,
               v_prev: torch.Tensor, start: int, variants: int, patch: Patch | None, last_only: bool = False,
               rec: dict[str, torch.Tensor] | None = None, name: str = "") -> torch.Tensor:
    """Attention output of positions start.. (or the last position alone when `last_only`); k_prev / v_prev: the
    cached [batch, head, start, d_head] keys (post-rotary) and values of earlier positions. `rec` (a full forward):
    records q, k, v, rot_k, pattern and z under TransformerLens's hook names prefixed by `name`, and the keys and
    values as "kT" / "vT" ([batch, head, pos, d_head])."""
    B, n, d = x_ln.shape
    h, e, hk = blk.n_heads, blk.d_head, blk.n_kv
    flat = x_ln.reshape(B * n, d)
    if last_only:  # keys and values of every position, the query of the last one
        kv = torch.addmm(blk.b_qkv[h * e:], flat, blk.W_qkv[:, h * e:])
        k, v = kv.view(B, n, 2 * hk, e).split(hk, dim=2)
        q = torch.addmm(blk.b_qkv[:h * e], x_ln[:, -1], blk.W_qkv[:, :h * e]).view(B, 1, h, e)
    else:
        q, k, v = torch.addmm(blk.b_qkv, flat, blk.W_qkv).view(B, n, h + 2 * hk, e).split([h, hk, hk], dim=2)
    if hk != h:
        k, v = k.repeat_interleave(h // hk, dim=2), v.repeat_interleave(h // hk, dim=2)
    if patch is not None:
        q, k, v = patch("q", q, start), patch("k", k, start), patch("v", v, start)
    if rec is not None:
        rec[name + "hook_q"], rec[name + "hook_k"], rec[name + "hook_v"] = q, k, v
    if blk.rotate is not None:
        q, k = blk.rotate(q, start + n - 1 if last_only else start), blk.rotate(k, start)
        if rec is not None:
            rec[name + "hook_rot_k"] = k
    q = q.transpose(1, 2).contiguous()  # [batch, head, pos, d_head]
    k_all = _stack(k_prev, k.transpose(1, 2), variants)
    v_all = _stack(v_prev, v.transpose(1, 2), variants)
    if rec is not None:
        rec[name + "kT"], rec[name + "vT"] = k_all.contiguous(), v_all.contiguous()
    scores = torch.matmul(q, k_all.transpose(-1, -2)).div_(blk.scale)
    if not last_only:
        qpos = torch.arange(start, start + n, device=q.device)[:, None]
        kpos = torch.arange(start + n, device=q.device)[None, :]
        scores.masked_fill_(kpos > qpos, float("-inf"))
    pattern = softmax(scores)
    if patch is not None:
        pattern = patch("pattern", pattern, start)
    z = torch.matmul(pattern, v_all).transpose(1, 2)  # [batch, pos, head, d_head]
    if patch is not None:
        z = patch("z", z, start)
    if rec is not None:
        rec[name + "hook_pattern"], rec[name + "hook_z"] = pattern, z.contiguous()
    return attn_out(blk, z)


def attn_out(blk: _Block, z: Float[torch.Tensor, "... head d_head"]) -> Float[torch.Tensor, "... d_model"]:
    """A block's attention output from its heads' z (any leading axes)."""
    lead = z.shape[:-2]
    return torch.addmm(blk.b_O, z.reshape(-1, blk.W_O.shape[0]), blk.W_O).view(*lead, blk.W_O.shape[1])


def run_block(blk: _Block, x: Float[torch.Tensor, "batch pos d_model"], last_only: bool = False
              ) -> Float[torch.Tensor, "batch pos d_model"]:
    """One block on a whole residual stream (causal attention from position 0); `last_only`: the last position's
    output alone ([batch, 1, d_model])."""
    empty = x.new_empty(x.shape[0], blk.n_heads, 0, blk.d_head)
    a_out = _attention(blk, blk.ln1(x), empty, empty, 0, 1, None, last_only=last_only)
    x = (x[:, -1:] if last_only else x) + a_out
    return x + blk.mlp(blk.ln2(x))


def final_logit_diff(w: Weights, x_last: Float[torch.Tensor, "batch d_model"], direction: torch.Tensor,
                     bias: torch.Tensor) -> Float[torch.Tensor, " batch"]:
    """Logit difference from the final residual stream of the last position (variants stacked along the batch)."""
    b = direction.shape[0]
    final = w.ln_final(x_last).view(-1, b, x_last.shape[-1])
    return ((final * direction).sum(-1) + bias).reshape(-1)


def run_from(w: Weights, layer: int, start: int, resid: Float[torch.Tensor, "batch pos d_model"],
             kv_prefix: list[tuple[torch.Tensor, torch.Tensor]], direction: torch.Tensor, bias: torch.Tensor,
             patch: Patch | None = None, patch_layer: int | None = None,
             cached: dict[str, torch.Tensor] | None = None) -> Float[torch.Tensor, " batch"]:
    """Logit difference at the last position after running blocks layer.. on `resid` (positions start..end, patched
    variants of the trials stacked along the batch).

    kv_prefix[l] holds the target's cached keys (post-rotary when rotary) and values at layer l, shape [trials,
    head, pos, d_head] (all positions: those < start are used, shared by every variant). `direction` / `bias`:
    `Weights.direction` of the trials. `patch` is applied inside block `patch_layer` (default: `layer`); `cached`
    holds the patched block's cached z, or attention (and MLP) output, for positions start.. (stacked)."""
    patch_layer = layer if patch_layer is None else patch_layer
    b = direction.shape[0]
    variants = resid.shape[0] // b
    x = resid
    if patch is not None and patch_layer == layer:
        x = patch("resid_pre", x, start)
    last = w.n_layers - 1
    for l in range(layer, w.n_layers):
        blk = w.blocks[l]
        p = patch if l == patch_layer else None
        k_prev, v_prev = kv_prefix[l]
        c = cached if (cached and l == layer) else {}
        last_only = l == last and p is None and not c  # only the last position's output is read
        if "z" in c:
            z = p("z", c["z"], start) if p is not None else c["z"]
            a_out = attn_out(blk, z)
        elif "attn_out" in c or "mlp_out" in c:
            a_out = p("attn_out", c["attn_out"], start) if p is not None else c["attn_out"]
        else:
            a_out = _attention(blk, blk.ln1(x), k_prev[:, :, :start], v_prev[:, :, :start], start, variants, p,
                               last_only=last_only)
        if last_only:
            x = x[:, -1:]
        x = x + a_out
        if "mlp_out" in c:
            mlp_out = c["mlp_out"]
        else:
            mlp_out = blk.mlp(blk.ln2(x))
        if p is not None:
            mlp_out = p("mlp_out", mlp_out, start)
        x = x + mlp_out
    return final_logit_diff(w, x[:, -1], direction, bias)


@torch.no_grad()
def record(w: Weights, tokens: torch.Tensor) -> tuple[Float[torch.Tensor, "batch d_model"], dict[str, torch.Tensor]]:
    """A full forward of `tokens` with this module's operations: the final residual stream of the last position and
    the activations patching reads, under TransformerLens's hook names ("blocks.{l}.hook_resid_pre", ".hook_attn_out",
    ".hook_mlp_out", ".attn.hook_q" / "hook_k" / "hook_v" / "hook_rot_k" / "hook_pattern" / "hook_z"), plus
    "blocks.{l}.attn.kT" / "vT": the keys (post-rotary) and values as [batch, head, pos, d_head]. Equal to
    TransformerLens's `run_with_cache` up to float rounding (no attention mask: tokens are not left-padded)."""
    x = w.embed(tokens)
    if not w.rotary:
        x = x + w.pos_embed(tokens)
    rec: dict[str, torch.Tensor] = {}
    empty = x.new_empty(x.shape[0], w.n_heads, 0, w.d_head)
    for l, blk in enumerate(w.blocks):
        rec[f"blocks.{l}.hook_resid_pre"] = x
        a_out = _attention(blk, blk.ln1(x), empty, empty, 0, 1, None, rec=rec, name=f"blocks.{l}.attn.")
        rec[f"blocks.{l}.hook_attn_out"] = a_out
        x = x + a_out
        mlp_out = blk.mlp(blk.ln2(x))
        rec[f"blocks.{l}.hook_mlp_out"] = mlp_out
        x = x + mlp_out
    return x[:, -1], rec

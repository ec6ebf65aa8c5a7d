"""TransformerLens's own habits on this project's `HookedLM`: its tokenizer helpers (`to_str_tokens`, `to_string`,
`to_single_token`), `tokens_to_residual_directions`, `accumulated_bias`, and `ActivationCache`'s residual-stream
tools (`logit_attrs`, `decompose_resid`, `stack_head_results`, `accumulated_resid`, `apply_ln_to_stack`,
`get_full_resid_decomposition`; under TransformerLens 4 also `logit_lens`), for the GPT-2 kind (LayerNorm, learned
positions) and the Llama kind (RMSNorm, rotary, grouped-query attention: 4 query heads share 2 key/value heads).

Under any TransformerLens version each is checked against a reference computed by hand from the weights and the
cached activations (the tokenizer itself, the W_U columns, a sum of b_O / b_out, the model's own normalised
residual and logits). Under TransformerLens 3.x (`TL3`) each is also compared with a real `HookedTransformer`
holding the same weights. Biases and norm weights are random (non-zero): a bias left out changes every number."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformer_lens import ActivationCache

from interp.arch import Arch
from interp.hooked_lm import HookedLM, gelu_tanh
from interp.models import _lm_config

TL3 = importlib.util.find_spec("transformer_lens.HookedTransformer") is not None
needs_tl3 = pytest.mark.skipif(not TL3, reason="TransformerLens 3 (HookedTransformer) is not installed")

PROMPTS = [" context color. motion 50 58 color 73 98. answer", " context motion. color 12 40 motion 81 7. answer"]


def _arch(family: str, d_vocab: int) -> Arch:
    common = {"n_layers": 2, "d_model": 16, "n_heads": 4, "d_mlp": 32, "d_vocab": d_vocab, "n_ctx": 32, "eps": 1e-5}
    if family == "gpt2":
        return Arch(**common, act_fn="gelu_new", family="gpt2")
    return Arch(**common, act_fn="silu", family="llama", n_key_value_heads=2, rotary_base=10000.0,
                initializer_range=0.2)


def _randomise_biases(model: torch.nn.Module, seed: int) -> None:
    """Every bias and norm weight drawn at random: zeros would hide a bias left out or added twice."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("b", "w") or leaf.startswith(("b_", "_b_")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if leaf == "w" else 0.0))


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request, tokenizer) -> HookedLM:
    m = HookedLM(_lm_config(_arch(request.param, len(tokenizer)), "cpu", seed=11), tokenizer=tokenizer)
    _randomise_biases(m, 4)
    return m.eval()


@pytest.fixture(scope="module")
def run(model):
    """Logits and cache of two prompts of one length (token ids [2, pos])."""
    tokens = model.to_tokens(PROMPTS)
    assert len({len(model.tokenizer.encode(p, add_special_tokens=False)) for p in PROMPTS}) == 1  # no padding
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return tokens, logits, cache


def _normalised(model: HookedLM, resid: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """A residual through a norm's cached scale, by hand: centred first for LayerNorm, not for RMSNorm."""
    centred = resid - resid.mean(-1, keepdim=True) if model.cfg.normalization_type == "LN" else resid
    return centred / scale


# -- under any TransformerLens: hand references

def test_to_str_tokens_and_to_string_round_trip_through_the_tokenizer(model, tokenizer):
    """Catches: the BOS dropped or doubled, ids decoded together instead of one by one (characters or one merged
    string instead of tokens), a [1, pos] batch dimension not squeezed, to_string cleaning up spaces."""
    ids = tokenizer.encode(PROMPTS[0], add_special_tokens=False)
    expected = [tokenizer.decode([i]) for i in ids]
    assert len(expected) > 5 and "".join(expected) == PROMPTS[0]
    assert model.to_str_tokens(PROMPTS[0]) == [tokenizer.bos_token] + expected
    assert model.to_str_tokens(PROMPTS[0], prepend_bos=False) == expected
    tokens = model.to_tokens(PROMPTS[0])
    assert model.to_str_tokens(tokens) == model.to_str_tokens(tokens[0]) == [tokenizer.bos_token] + expected
    assert model.to_str_tokens(tokens[0].numpy()) == [tokenizer.bos_token] + expected
    assert model.to_str_tokens(PROMPTS) == [model.to_str_tokens(p) for p in PROMPTS]
    assert model.to_string(tokens[0, 1:]) == PROMPTS[0]
    assert model.to_string(model.to_tokens(PROMPTS, prepend_bos=False)) == PROMPTS
    assert model.to_string(ids) == PROMPTS[0]
    with pytest.raises(ValueError, match=r"\[pos\] or \[1, pos\]"):
        model.to_str_tokens(model.to_tokens(PROMPTS))


def test_to_single_token_is_the_tokenizers_one_id(model, tokenizer):
    """Catches: the BOS counted as part of the string, a multi-token string silently cut to its first token."""
    for word in (" context", " motion", ".", " answer"):
        (expected,) = tokenizer.encode(word, add_special_tokens=False)
        assert model.to_single_token(word) == expected and isinstance(model.to_single_token(word), int)
    with pytest.raises(ValueError, match="not a single token"):
        model.to_single_token(" context color")
    with pytest.raises(ValueError, match="not a single token"):
        model.to_single_token("")


def test_tokens_to_residual_directions_are_the_unembedding_columns(model):
    """Catches: rows of W_E (an untied embedding differs) or W_U's rows instead of its columns, the output axes in
    the wrong order for a [batch, pos] tensor, a single token given a stray leading axis."""
    W_U = model.W_U.detach()
    assert not torch.allclose(model.W_E.T, W_U)  # untied: W_E would give other numbers
    t = model.to_single_token(" motion")
    for one in (t, " motion", torch.tensor(t), torch.tensor([t])):
        assert torch.equal(model.tokens_to_residual_directions(one), W_U[:, t])
    ids = torch.tensor([[3, 17, 99], [5, 5, 4000]])
    dirs = model.tokens_to_residual_directions(ids)
    assert dirs.shape == (2, 3, model.cfg.d_model)
    assert all(torch.equal(dirs[b, p], W_U[:, ids[b, p]]) for b in range(2) for p in range(3))
    with pytest.raises(ValueError, match="single-token string"):
        model.tokens_to_residual_directions([3, 4])


def test_accumulated_bias_is_the_sum_of_earlier_output_biases(model):
    """Catches: a layer off by one (blocks 0..layer instead of 0..layer-1), the MLP bias left out or always added,
    the current block's b_O missing (or another block's) with mlp_input; asks for impossible layers by name."""
    b_O, b_out = model.b_O.detach(), model.b_out.detach()
    n = model.cfg.n_layers
    for layer in range(n + 1):
        assert torch.allclose(model.accumulated_bias(layer), b_O[:layer].sum(0) + b_out[:layer].sum(0), atol=1e-6)
        assert torch.allclose(model.accumulated_bias(layer, include_mlp_biases=False), b_O[:layer].sum(0), atol=1e-6)
        if layer < n:
            expected = b_O[:layer + 1].sum(0) + b_out[:layer].sum(0)
            assert torch.allclose(model.accumulated_bias(layer, mlp_input=True), expected, atol=1e-6)
    assert torch.count_nonzero(model.accumulated_bias(0)) == 0
    for bad in ({"layer": n + 1}, {"layer": -1}, {"layer": n, "mlp_input": True}):
        with pytest.raises(ValueError, match="layer must be in"):
            model.accumulated_bias(**bad)


def test_logit_attrs_sum_to_the_logit_difference_of_the_normalised_residual(model, run):
    """Catches: a component missing from decompose_resid (embeddings, or the attention / MLP biases inside
    attn_out / mlp_out), the residual left un-normalised (no cached final-norm scale), LayerNorm's centring left out
    (GPT-2) or wrongly applied to RMSNorm (Llama), per-example directions broadcast across the batch."""
    tokens, logits, cache = run
    right, wrong = tokens[:, 3], tokens[:, 5]  # per example: [batch]
    stack, labels = cache.decompose_resid(pos_slice=-1, return_labels=True)
    has_pos = model.cfg.positional_embedding_type == "standard"
    assert labels == ["embed"] + ["pos_embed"] * has_pos + ["0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    attrs = cache.logit_attrs(stack, tokens=right, incorrect_tokens=wrong, pos_slice=-1)
    assert attrs.shape == (len(labels), 2)
    resid, scale = cache["resid_post", -1][:, -1], cache["ln_final.hook_scale"][:, -1]
    assert torch.allclose(stack.sum(0), resid, atol=1e-5)
    direction = model.W_U[:, right].T - model.W_U[:, wrong].T
    normalised = _normalised(model, resid, scale)
    assert torch.allclose(attrs.sum(0), (normalised * direction).sum(-1), atol=1e-4)
    # the hand reference is what the model unembeds: with the final norm's weight and bias, its logit difference
    w, b = model.ln_final.w, getattr(model.ln_final, "b", 0.0)
    by_hand = ((normalised * w + b) * direction).sum(-1) + model.b_U[right] - model.b_U[wrong]
    assert torch.allclose(by_hand, logits[:, -1].gather(-1, right[:, None])[:, 0]
                          - logits[:, -1].gather(-1, wrong[:, None])[:, 0], atol=1e-4)


def test_stack_head_results_has_every_query_head_and_rebuilds_attn_out(model, run):
    """Catches: heads counted as key/value heads under grouped-query attention (2 per layer instead of 4), a
    head's result through another head's W_O (or the model's own hook_result with its heads out of order, which
    leaves attn_out unchanged), attn_out rebuilt without b_O, a remainder that misses a term."""
    _, _, cache = run
    cache = type(cache)(dict(cache.cache_dict), model)  # the head results are added to a copy only
    n, h = model.cfg.n_layers, model.cfg.n_heads
    heads, labels = cache.stack_head_results(return_labels=True)
    assert heads.shape == (n * h, 2, cache["embed"].shape[1], model.cfg.d_model)
    assert labels == [f"L{layer}H{head}" for layer in range(n) for head in range(h)]
    for layer in range(n):
        z = cache["z", layer]  # [batch, pos, head, d_head]
        by_hand = torch.einsum("bphd,hdm->hbpm", z, model.blocks[layer].attn.W_O)
        assert torch.allclose(heads[layer * h:(layer + 1) * h], by_hand, atol=1e-5)
        rebuilt = heads[layer * h:(layer + 1) * h].sum(0) + model.blocks[layer].attn.b_O
        assert torch.allclose(rebuilt, cache["attn_out", layer], atol=1e-5)
    with_rest = cache.stack_head_results(incl_remainder=True, pos_slice=-1)
    assert torch.allclose(with_rest.sum(0), cache["resid_post", -1][:, -1], atol=1e-5)
    model.set_use_attn_result(True)  # the model's own per-head results (hook_result), used as they are
    try:
        with torch.no_grad():
            _, own = model.run_with_cache(run[0], names_filter=lambda name: name.endswith("hook_result"))
    finally:
        model.set_use_attn_result(False)
    assert torch.allclose(type(own)(own.cache_dict, model).stack_head_results(), heads, atol=1e-5)


def test_apply_ln_to_stack_rebuilds_each_norms_own_input(model, run):
    """Catches: the scale of the wrong norm (ln1 for ln2, a layer off by one, the last block's for ln_final), the
    current block's attention output left out of an MLP input, a stack left un-normalised: the normalised
    decomposition must sum to the normalised input each norm cached in the forward."""
    _, _, cache = run
    for layer in range(model.cfg.n_layers):
        for mlp_input, norm in ((False, "ln1"), (True, "ln2")):
            stack = cache.decompose_resid(layer=layer, mlp_input=mlp_input, apply_ln=True)
            assert torch.allclose(stack.sum(0), cache[f"blocks.{layer}.{norm}.hook_normalized"], atol=1e-5)
            raw = cache.decompose_resid(layer=layer, mlp_input=mlp_input)
            again = cache.apply_ln_to_stack(raw, layer=layer, mlp_input=mlp_input)
            assert torch.equal(again, stack)
    final = cache.decompose_resid(apply_ln=True)
    assert torch.allclose(final.sum(0), cache["ln_final.hook_normalized"], atol=1e-5)


def test_accumulated_resid_is_the_logit_lens(model, run):
    """Catches: an entry off by one layer, the final entry not the stream the model unembeds (its logits must come
    back through unembed), intermediate entries normalised with the final forward's scale instead of their own."""
    _, logits, cache = run
    stack, labels = cache.accumulated_resid(apply_ln=True, incl_mid=True, return_labels=True)
    assert labels == ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    with torch.no_grad():
        assert torch.allclose(model.unembed(stack[-1]), logits, atol=1e-4)
        for i, key in enumerate(["resid_pre", "resid_mid"] * 2):
            assert torch.allclose(stack[i], model.ln_final(cache[key, i // 2]), atol=1e-5)
    to_block_1 = cache.accumulated_resid(layer=1, apply_ln=True)  # into block 1: block 1's ln1 scale
    by_hand = _normalised(model, cache.accumulated_resid(layer=1), cache["blocks.1.ln1.hook_scale"])
    assert torch.allclose(to_block_1, by_hand, atol=1e-6)


@pytest.mark.skipif(not hasattr(ActivationCache, "logit_lens"), reason="TransformerLens 4's ActivationCache.logit_lens")
def test_transformerlens_4_logit_lens_reads_the_models_own_logits(model, run):
    """Catches: blocks that do not declare one residual stream (TransformerLens 4 refuses them), an entry read
    without the final norm or through another layer's stream: each entry is unembed(ln_final(its stream))."""
    _, logits, cache = run
    lens = cache.logit_lens()
    assert lens.labels == ["0_pre", "1_pre", "final_post"]
    assert torch.allclose(lens.values[-1], logits[:, -1], atol=1e-5)
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            by_hand = model.unembed(model.ln_final(cache["resid_pre", layer]))[:, -1]
            assert torch.allclose(lens.values[layer], by_hand, atol=1e-5)


def test_full_resid_decomposition_with_accumulated_bias_rebuilds_the_residual(model, run):
    """Catches: accumulated_bias short of a block or a block too many (head and neuron parts hold no b_O / b_out:
    the bias row must hold them), without the MLP biases, or with mlp_input ignored, in TransformerLens's own use."""
    _, _, cache = run
    cache = type(cache)(dict(cache.cache_dict), model)
    cases = [(model.cfg.n_layers, False, False), (1, True, False), (1, False, False), (model.cfg.n_layers, False, True)]
    for layer, mlp_input, neurons in cases:  # per neuron (no b_out in a neuron's part): the bias row holds b_out too
        parts, labels = cache.get_full_resid_decomposition(layer=layer, mlp_input=mlp_input, expand_neurons=neurons,
                                                           return_labels=True)
        assert labels[-1] == "bias"
        target = cache["resid_mid", layer] if mlp_input else cache.accumulated_resid(layer)[-1]
        assert torch.allclose(parts.sum(0), target, atol=1e-5)


# -- under TransformerLens 3.x: the same numbers as its HookedTransformer with the same weights

def _reference(model: HookedLM):  # noqa: ANN202
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    arch = Arch.from_tl_config(model.cfg)
    ref = HookedTransformer(HookedTransformerConfig(**arch.tl_kwargs(), device="cpu"), tokenizer=model.tokenizer,
                            move_to_device=False)
    if arch.family == "gpt2":  # as tests/interp/test_hooked_lm.py builds it: the fused tanh GELU
        for block in ref.blocks:
            block.mlp.act_fn = gelu_tanh
    ref.load_state_dict(model.state_dict())
    return ref.eval()


def max_abs_differences(model: HookedLM) -> dict[str, float]:
    """Each habit's largest absolute difference from TransformerLens 3's HookedTransformer with the same weights
    (the tests below assert them; scripts can print them)."""
    ref, out = _reference(model), {}
    tokens = model.to_tokens(PROMPTS)
    with torch.no_grad():
        (_, c_ours), (_, c_ref) = model.run_with_cache(tokens), ref.run_with_cache(tokens)
        calls = {
            "tokens_to_residual_directions": lambda m, c: m.tokens_to_residual_directions(tokens),
            "accumulated_bias": lambda m, c: torch.stack([m.accumulated_bias(layer, mlp, mlps) for layer in range(2)
                                                          for mlp in (False, True) for mlps in (False, True)]),
            "logit_attrs": lambda m, c: c.logit_attrs(c.decompose_resid(pos_slice=-1), tokens=tokens[:, 3],
                                                      incorrect_tokens=tokens[:, 5], pos_slice=-1),
            "logit_attrs (per position)": lambda m, c: c.logit_attrs(c.decompose_resid(), tokens=tokens),
            "decompose_resid": lambda m, c: c.decompose_resid(layer=1, mlp_input=True, apply_ln=True),
            "stack_head_results": lambda m, c: c.stack_head_results(apply_ln=True, incl_remainder=True),
            "accumulated_resid": lambda m, c: c.accumulated_resid(apply_ln=True, incl_mid=True),
            "apply_ln_to_stack": lambda m, c: c.apply_ln_to_stack(c.decompose_resid(), layer=-1),
            "get_full_resid_decomposition": lambda m, c: c.get_full_resid_decomposition(apply_ln=True),
        }
        for name, call in calls.items():  # each on a fresh copy of each cache (head results are added to it)
            a = call(model, type(c_ours)(dict(c_ours.cache_dict), model))
            b = call(ref, type(c_ref)(dict(c_ref.cache_dict), ref))
            assert a.shape == b.shape, name
            out[name] = float((a - b).abs().max())
    return out


@needs_tl3
def test_tokenizer_helpers_equal_transformerlens(model):
    """Catches any difference from HookedTransformer in how text and ids map to strings (BOS handling, per-token
    decoding, squeezing, space clean-up), with TransformerLens's own tokenizer set-up as the reference."""
    ref = _reference(model)
    ids = model.to_tokens(PROMPTS)
    for args in ((PROMPTS[0],), (PROMPTS[0], False), (PROMPTS,), (ids[:1],), (ids[0],), (ids[0].numpy(),)):
        assert model.to_str_tokens(*args) == ref.to_str_tokens(*args)
    for tokens in (ids, ids[0], ids[0, 3], ids[0].tolist()):
        assert model.to_string(tokens) == ref.to_string(tokens)
    assert torch.equal(model.to_tokens(PROMPTS), ref.to_tokens(PROMPTS))
    assert [model.to_single_token(w) for w in (" context", ".")] == [ref.to_single_token(w) for w in (" context", ".")]


@needs_tl3
def test_residual_tools_equal_transformerlens(model):
    """Catches any difference from HookedTransformer's own results for directions, accumulated biases and every
    cache tool above (a normalisation, bias or head count TransformerLens's code reads from the model differently)."""
    diffs = max_abs_differences(model)
    assert diffs == {k: 0.0 for k in diffs}, diffs

"""Writes quickstart.ipynb (nbformat 4, outputs cleared) next to this file from the cells below.

Edit the cells here and rerun `python experiments/notebooks/make_quickstart.py`; a test checks that the committed
notebook is what this script writes, and another executes it.
"""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOK = Path(__file__).with_name("quickstart.ipynb")

CELLS: list[tuple[str, str]] = [
    ("markdown", """# cogcircuits quickstart

A tour of the Python API (`experiments.api`, imported as `cc`) on the shipped base model `cogbase-6l`, in about
a minute and a half on 2 CPU cores (most of it fine-tuning): fine-tune it on the context-dependent decision task,
evaluate it, patch its attention heads, attribute its answer to components, look at the attention of the heads
that matter, and find a circuit with its faithfulness curve.

Every analysis returns a typed result (`interp.results`) with `.to_frame()` (a tidy pandas DataFrame with
labelled columns) and `.plot()` (a plotly figure). The same computations back the `cogcircuits` commands."""),
    ("code", """import tempfile
from pathlib import Path

from experiments import api as cc

work = Path(tempfile.mkdtemp(prefix="cogcircuits-quickstart-"))  # everything this notebook writes goes here"""),
    ("markdown", """## The task and the base

A trial shows two modalities (`motion`, `color`), each with two numbers (evidence for `left` and `right`), and a
context cue naming the relevant one; the answer is the side with the larger number in the relevant modality.
`cc.load` takes a shipped base by name (offline), a checkpoint folder or a Hugging Face folder. The base is a
generic language model: it answers at chance."""),
    ("code", """base = cc.load("cogbase-6l")
t = cc.trials(base, 3, seed=0)  # a TrialBatch: tokens [trial, pos], answer_ids, wrong_ids, meta, named positions
for i in range(3):
    print(repr(base.tokenizer.decode(t.tokens[i])), "->", repr(base.tokenizer.decode([t.answer_ids[i]])))
print("base accuracy:", cc.evaluate(base, 256).accuracy)"""),
    ("markdown", """## Fine-tune the base

`cc.train` wraps the project's trainer (answer-token cross-entropy, AdamW with a cosine schedule, evaluation
every `eval_every` steps) and returns the trained model, loaded. Its keyword options are the `[train]` fields of
a config file, its `task` the `[task]` fields. These are the settings of the default run's fine-tuned seed 0
(`experiments/configs/default.toml`): training stops once validation accuracy reaches the criterion (98% overall,
95% on incongruent trials), here after about 300 steps, about a minute on 2 CPU cores. Numbers 70-99 are held
out of training for the `gen` split."""),
    ("code", """ft = cc.train(work / "ft", init="pretrained", base="cogbase-6l",
              task={"heldout_number_range": (70, 99)},
              steps=1000, batch_size=64, lr=3e-4, warmup=30, eval_every=25, eval_size=256, checkpoint_every=1000)
print({k: ft.metrics[k] for k in ("steps", "met_criterion", "test_accuracy", "test_incongruent_accuracy")})"""),
    ("code", """ev = cc.evaluate(ft, 512, seed=1)  # accuracy per context x coherence x congruency
print("numbers never seen in training (gen split):", cc.evaluate(ft, 512, seed=1, split="gen").accuracy)
ev.to_frame()"""),
    ("code", """ev.plot()"""),
    ("markdown", """## Activation patching

Clean/corrupted pairs: `context-flip` gives the same stimuli with the other cue, so the answer flips. Denoising
patches each head's clean output into the corrupted run: 1 means the head alone restores the clean answer, 0
means it changes nothing."""),
    ("code", """pairs = cc.pairs(ft, 16, seed=0, corruption="context-flip")
patching = cc.patch(ft, pairs, what="heads", direction="denoise")
patching.plot()"""),
    ("code", """patching.to_frame().sort_values("effect", ascending=False).head()"""),
    ("markdown", """## Direct logit attribution

How much each component (embeddings, each head, each MLP, biases) writes directly to the answer-minus-wrong
logit difference at the answer position. The components sum to the model's logit difference exactly."""),
    ("code", """attribution = cc.attribute(ft, cc.trials(ft, 64, seed=1))
attribution.plot("components")"""),
    ("code", """frame = attribution.to_frame()
print("sum of components:", frame["value"].sum(), "  logit diff:", attribution.logit_diff.mean())
frame[frame["kind"] == "head"].sort_values("value", key=abs, ascending=False).head()"""),
    ("markdown", """## Attention of the heads that matter

The three heads with the largest patching effect, on the first pair: the clean trial on the left, the
corrupted one on the right (circuitsvis: select a head in the grid to zoom in). `.save(path)` writes the same
view as one offline HTML file."""),
    ("code", """view = cc.attention(ft, pairs, patching.top_heads(3), trial=0)
view.save(work / "attention.html")
view"""),
    ("markdown", """## A circuit and its faithfulness

EAP-IG scores every edge between heads and MLPs; the circuit's faithfulness (MIB's definition: 0 = everything
ablated, 1 = the full model) is measured for the top-ranked nodes and edges at each size, beside random circuits
of the same sizes (a few per size here; `cogcircuits discover` draws 20)."""),
    ("code", """circuit = cc.discover(ft, cc.pairs(ft, 16, seed=2), method="eap-ig", n_random=4)
circuit.plot("graph")"""),
    ("code", """circuit.plot("node")"""),
    ("code", """circuit.curve_frame().query("level == 'node'")"""),
    ("markdown", """## Where next

- `cc.ablate(ft, trials, method="mean")`, `cc.neurons(ft, trials)` and `cc.compare({"finetuned-s0": ft}, base,
  trials)` work the same way; `cc.attention(model, "any text", "L0H1,L2H3")` shows any prompt.
- `ft.model` is a hooked model with TransformerLens's `HookedTransformer` interface (`interp.hooked_lm.HookedLM`,
  under TransformerLens 3 or 4): hooks, `run_with_cache` and TransformerLens's `patching` work as usual.
- The `cogcircuits` commands (README) write the same analyses to disk with figures and provenance.

The outputs of this notebook are in `work`; remove them when done:"""),
    ("code", """import shutil

shutil.rmtree(work, ignore_errors=True)"""),
]


def notebook() -> dict:
    cells = []
    for i, (kind, text) in enumerate(CELLS):
        lines = text.split("\n")
        cell = {"cell_type": kind, "id": f"cell-{i:02d}", "metadata": {},
                "source": [line + "\n" for line in lines[:-1]] + [lines[-1]]}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"},
                                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def render() -> str:
    return json.dumps(notebook(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    NOTEBOOK.write_text(render(), encoding="utf-8")

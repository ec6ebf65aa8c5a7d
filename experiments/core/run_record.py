"""The typed record of a run: one record type per results file (`results/<name>.json`), each saved and loaded
the one way `experiments.core.record` gives. The steps of `cogcircuits run` write them; contrasts, claims,
figures, the report and the suite read them by attribute.

    evaluate.json   RunEvaluation     accuracy of every model and the base; which models met the criterion
    analyses.json   RunAnalyses       per model: each analysis's summary and the trials it covers
    compare.json    RunComparison     CKA with the base and between models, reliance on the base, weight change
    circuits.json   RunCircuits       per model: circuit ranking, faithfulness curves with random baselines
    contrasts.json  Contrasts         every fine-tuned vs scratch contrast beside its null
    claims.json     ClaimsRecord      the claims, their parts and verdicts, and the rule
    attention.json  AttentionRecord   the attention pages written
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from experiments.core.record import Record, RecordError
from interp.results import Comparison
from interp.stats import GroupContrast, PairContrast

R = TypeVar("R", bound=Record)
record = dataclass(frozen=True, kw_only=True)


# -- what several records share --------------------------------------------------------------------------------

@record
class Trials(Record):
    """Which trials an analysis covers: split, count and seed (and, for patching, the corruption and its pairs)."""
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"corruption", "pairs", "reference", "top_neurons_ablated_on",
                                                     "balanced"})
    split: str
    n: int
    seed: int
    corruption: str | None = None
    pairs: str | None = None
    reference: Trials | None = None  # ablation: the trials whose activations replace the ablated ones
    top_neurons_ablated_on: Trials | None = None  # neurons: where the top neurons were ablated
    balanced: bool | None = None  # True: equal trials per answer side (and congruence); None: drawn as they came


# -- evaluate.json ---------------------------------------------------------------------------------------------

@record
class TaskInfo(Record):
    name: str
    shortcut: str
    answer_words: tuple[str, ...]
    group: str | None
    corruption: str
    corruption_description: str


@record
class Criterion(Record):
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"max_steps"})
    split: str
    n_trials: int
    accuracy: float
    incongruent_accuracy: float
    checked_every: int
    max_steps: int | None = None  # the arm's step budget (None: records before it)


@record
class SplitScore(Record):
    accuracy: float
    incongruent_accuracy: float
    n_correct: int
    logit_diff: float
    by_condition: tuple[dict[str, Any], ...]  # rows of the accuracy-by-condition table (the task's own columns)
    trials: Trials


@record
class PsychometricCurve(Record):
    x: tuple[float, ...]
    p: tuple[float, ...]
    n: tuple[int, ...]


@record
class TrainingSummary(Record):
    steps: int
    met_criterion: bool
    steps_to_criterion: int | None


@record
class CurvePoint(Record):
    step: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    val_incongruent_accuracy: float
    val_logit_diff: float
    lr: float


@record
class ModelEvaluation(Record):
    """One model (or the base: no training, no curve) on the test split and, when the task has one, the
    generalisation split; psychometric curves {evidence: {group value: curve}}."""
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"gen", "training", "curve"})
    test: SplitScore
    psychometric: dict[str, dict[str, PsychometricCurve]]
    gen: SplitScore | None = None
    training: TrainingSummary | None = None
    curve: tuple[CurvePoint, ...] | None = None


@record
class BaseInfo(Record):
    name: str
    n_layers: int
    d_model: int
    n_heads: int


@record
class RunEvaluation(Record):
    bayes_optimal_accuracy: float
    chance: float
    task: TaskInfo
    criterion: dict[str, Criterion]  # "finetuned", "scratch"
    models: dict[str, ModelEvaluation]  # every trained model, then "base"
    eligible: tuple[str, ...]  # the models that met the criterion: the only ones analysed
    excluded: dict[str, str]  # model -> why
    base: BaseInfo


# -- analyses.json ---------------------------------------------------------------------------------------------

@record
class ModelAnalyses(Record):
    detailed: bool
    results: dict[str, dict[str, Any]]  # stem -> the typed result's own summary (the result: per_model/<id>/<stem>)
    trials: dict[str, Trials]


@record
class RunAnalyses(Record):
    corruption: str
    n_pairs: int
    ablation: str
    models: dict[str, ModelAnalyses]


# -- compare.json ----------------------------------------------------------------------------------------------

@record
class Retained(Record):
    """A performance with part of the model replaced, and the share of the model's own margin over chance kept."""
    accuracy: float
    logit_diff: float
    accuracy_retained: float
    logit_diff_retained: float


@record
class Score(Record):
    accuracy: float
    logit_diff: float


@record
class Reliance(Record):
    """Per layer: reverting it (and, top-down, it and every later one) to the reference's weights; the
    reference's residual stream patched in (absent for a scratch model's own initialisation)."""
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"cmap_resid", "chance", "n_by_answer"})
    reversion_layer: tuple[Retained, ...]
    reversion_top_down: tuple[Retained, ...]
    full: Score
    cmap_resid: tuple[Retained, ...] | None = None
    chance: float | None = None  # measured on the trials (`interp.compare.chance_accuracy`); None: records before it
    n_by_answer: tuple[int, ...] | None = None  # trials per answer side (balanced sets: equal)


CKAProfiles = dict[str, dict[str, dict[str, tuple[float, ...]]]]  # estimator -> site -> position -> per layer


@record
class ModelComparison(Record):
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"reliance_init", "weight_change_start"})
    cka_base: CKAProfiles
    reliance_base: Reliance
    weight_change: dict[str, float]  # component -> relative change from the base
    reliance_init: Reliance | None = None  # scratch models: reliance on their own initialisation
    weight_change_start: dict[str, float] | None = None  # component -> relative change from its own start (the
    # base, a scratch draw, a shuffled base: what it was trained from); None in records before it

    def cka_answer(self) -> np.ndarray:
        """Debiased CKA with the base, residual stream at the answer position, per layer."""
        return np.asarray(self.cka_base["debiased"]["resid"]["answer"], float)


@record
class CKAPair(Record):
    a: str
    b: str
    cka: tuple[float, ...]  # debiased, residual stream at the answer, per layer


def kept(rows: tuple[Retained, ...] | None) -> np.ndarray:
    """The chance-corrected accuracy kept, per layer."""
    return np.array([r.accuracy_retained for r in rows or ()], float)


@record
class RunComparison(Record):
    """The comparison of every analysed model with the base, stored once (results/compare.json); its typed
    interp result (what its figures draw) is derived from it by `to_result`."""
    per_model: dict[str, ModelComparison]
    pairs: tuple[CKAPair, ...]
    components: tuple[str, ...]
    trials: dict[str, Trials]  # "cka", "reliance"

    def to_result(self, base_name: str) -> Comparison:
        pm = self.per_model
        return Comparison(base_name, cka={m: p.cka_answer() for m, p in pm.items()},
                          reversion={m: kept(p.reliance_base.reversion_layer) for m, p in pm.items()},
                          top_down={m: kept(p.reliance_base.reversion_top_down) for m, p in pm.items()},
                          cmap={m: kept(p.reliance_base.cmap_resid) for m, p in pm.items()},
                          weight_change={m: p.weight_change for m, p in pm.items()}, n_trials=self.trials["cka"].n,
                          full={m: p.reliance_base.full.to_dict() for m, p in pm.items()},
                          n_reliance_trials=self.trials["reliance"].n,
                          reversion_init={m: kept(p.reliance_init.reversion_layer) for m, p in pm.items()
                                          if p.reliance_init is not None})


# -- circuits.json ---------------------------------------------------------------------------------------------

@record
class LevelReached(Record):
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"random_share_reaching"})
    level: float
    size: int | None
    fraction: float | None
    random_share_reaching: float | None = None
    cpr_percentile_among_random: float | None


@record
class FaithfulnessCurve(Record):
    """`interp.faithfulness.CircuitCurve` as stored: f over the size grid, beside random circuits."""
    level: str
    n_items: int
    grid: tuple[float, ...]
    sizes: tuple[int, ...]
    faithfulness: tuple[float, ...]
    cpr: float
    cmd: float
    random_faithfulness: tuple[tuple[float, ...], ...]  # [size][draw]
    random_cpr: tuple[float, ...]
    random_cmd: tuple[float, ...]
    m_full: float
    m_empty: float
    gap_se: float
    defined: bool
    ablation: str
    level_reached: LevelReached
    f_empty: float
    f_full: float


@record
class ExactCheck(Record):
    nodes: tuple[str, ...]
    eap: tuple[float, ...]
    exact: tuple[float, ...]
    spearman: float


@record
class ModelCircuit(Record):
    method: str
    ablation: str
    corruption: str
    n_pairs: int
    clean_logit_diff: float
    corrupt_logit_diff: float
    node_scores: dict[str, float]
    ranked: tuple[str, ...]
    n_nodes: int
    overlap_set: tuple[str, ...]  # the top nodes compared between models
    node_curve: FaithfulnessCurve
    edge_curve: FaithfulnessCurve
    exact_check: ExactCheck
    trials: Trials

    def curve(self, level: str) -> FaithfulnessCurve:
        return self.node_curve if level == "node" else self.edge_curve


@record
class RunCircuits(Record):
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"n_nodes"})
    models: dict[str, ModelCircuit]
    method: str
    ablation: str
    level: float
    n_random: int
    n_nodes: int | None = None
    base_ranked: tuple[str, ...]


# -- contrasts.json --------------------------------------------------------------------------------------------

@record
class PairValue(Record):
    a: str
    b: str
    value: float
    relation: str  # "within" or "between"


@record
class Contrast(Record):
    """One fine-tuned vs scratch contrast: a group contrast (one value per model) or a pair contrast (the
    similarity of two models); `result` is None, with a `note` saying why, when it is undefined."""
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"per_model", "pairs"})
    key: str
    kind: str  # "group" or "pair"
    measure: str
    per_model: dict[str, float] | None = None
    pairs: tuple[PairValue, ...] | None = None
    chance: float | None
    result: GroupContrast | PairContrast | None
    note: str | None


@record
class Contrasts(Record):
    """Every contrast by key (the file is the bare mapping key -> contrast)."""
    entries: dict[str, Contrast]

    def to_dict(self) -> dict[str, Any]:
        return {k: e.to_dict() for k, e in self.entries.items()}

    @classmethod
    def from_dict(cls, d: Any, where: str | None = None) -> Contrasts:
        if not isinstance(d, dict):
            raise RecordError(f"{where or 'Contrasts'}: expected an object")
        return cls(entries={k: Contrast.from_dict(v, f"{where or 'Contrasts'}.{k}") for k, v in d.items()})

    def get(self, key: str) -> Contrast | None:
        return self.entries.get(key)


# -- claims.json -----------------------------------------------------------------------------------------------

OUTCOMES = ("in favour", "against", "inconclusive", "undefined")  # of a claim's part (experiments.run.claims)


@record
class Part(Record):
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"validation", "p", "p_holm"})
    contrast: str  # key in contrasts.json
    says: str  # what the part asserts, in words
    expected: str  # "finetuned>scratch", "finetuned<scratch", "between<within", "above chance"
    outcome: str
    detail: str
    validation: str | None = None  # "validated" / "not validated" by the planted-reuse controls; None: not covered
    p: float | None = None  # permutation p in the claimed direction (with a multiplicity correction only)
    p_holm: float | None = None  # Holm-adjusted across the claim's parts


@record
class Claim(Record):
    key: str
    statement: str
    verdict: str
    parts: tuple[Part, ...]
    figures: tuple[str, ...]
    null: str
    caveats: tuple[str, ...]

    def tally(self, outcomes: tuple[str, ...]) -> str:
        """"2 in favour, 1 inconclusive": how many parts had each outcome (outcomes that occur only)."""
        counts = [(o, sum(p.outcome == o for p in self.parts)) for o in outcomes]
        return ", ".join(f"{n} {o}" for o, n in counts if n)


@record
class Validation(Record):
    """experiments/configs/metric-validation.json: which of the run's contrasts read a metric the planted-reuse
    controls validated (`cogcircuits controls`), and which controls run said so."""
    source: str
    architecture: str
    validated: dict[str, bool]  # the run's contrast key -> validated


@record
class ClaimsRecord(Record):
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"validation"})
    rule: str
    claims: tuple[Claim, ...]
    validation: Validation | None = None  # which metrics the planted-reuse controls validated (and which run)


# -- attention.json --------------------------------------------------------------------------------------------

@record
class AttentionPage(Record):
    model: str
    heads: tuple[tuple[int, int], ...]
    chosen_by: str


@record
class AttentionRecord(Record):
    pages: dict[str, AttentionPage]  # file name -> what it shows


# -- run.json and stages/<step>.json ---------------------------------------------------------------------------

@record
class BaseRef(Record):
    """The base as outputs record it: a name (never a path) and its weights' hash."""
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"source", "hub_revision"})
    name: str
    weights_sha256: str | None
    source: dict[str, Any] | None = None  # a shipped base's own description
    hub_revision: str | None = None  # a hub model: the revision it resolved to


@record
class JobBrief(Record):
    executor: str
    refs: tuple[str, ...]
    attempts: int
    wall_s: float | None
    state: str


@record
class Extension(Record):
    """Seeds added to a recorded run (`cogcircuits run --extend`): the config hash before and after, the models."""
    from_config_hash: str
    to_config_hash: str
    added: tuple[str, ...]
    at: str


@record
class RunMeta(Record):
    """run.json: the run's config (portable), its hash, the base, versions, device, where each job ran, and the
    seeds added after it was first recorded."""
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"executor", "jobs", "extensions"})
    config: dict[str, Any]  # the run config as written (`experiments.run.context.portable_config`)
    config_hash: str
    base: BaseRef
    versions: dict[str, Any]
    device: str
    created: str
    executor: str | None = None
    jobs: dict[str, JobBrief] | None = None
    extensions: tuple[Extension, ...] | None = None


@record
class StageMark(Record):
    """stages/<step>.json: a finished step, under which config, in how long, and the hash of each file it wrote."""
    config_hash: str
    seconds: float
    outputs: dict[str, str] = field(default_factory=dict)


RESULTS: dict[str, type[Record]] = {
    "evaluate": RunEvaluation, "analyses": RunAnalyses, "compare": RunComparison, "circuits": RunCircuits,
    "contrasts": Contrasts, "claims": ClaimsRecord, "attention": AttentionRecord}


def load_step(run: str | Path, name: str, cls: type[R]) -> R | None:
    """The record `results/<name>.json` of a run folder as `cls`, or None when the step has not written it."""
    p = Path(run) / "results" / f"{name}.json"
    return cls.load(p) if p.exists() else None


@dataclass(frozen=True)
class RunRecord:
    """A run folder's whole record, typed: run.json and each step's results file (None: that step has not run).

        rec = RunRecord.load("runs/default")
        rec.claims.claims[0].verdict; rec.evaluate.models["finetuned-s0"].gen.accuracy
    """
    meta: RunMeta
    evaluate: RunEvaluation | None
    analyses: RunAnalyses | None
    compare: RunComparison | None
    circuits: RunCircuits | None
    contrasts: Contrasts | None
    claims: ClaimsRecord | None
    attention: AttentionRecord | None

    @classmethod
    def load(cls, run: str | Path) -> RunRecord:
        run = Path(run)
        if not (run / "run.json").is_file():
            raise FileNotFoundError(f"{run.name}: not a run folder (no run.json)")
        return cls(RunMeta.load(run / "run.json"), *(load_step(run, n, c) for n, c in RESULTS.items()))

"""Complete typed run records for tests that plant a few numbers: every field the planted numbers do not set is
filled with a neutral value (so a test states only what it plants)."""

from __future__ import annotations

from experiments.core.run_record import (BaseInfo, CKAPair, Criterion, ExactCheck, FaithfulnessCurve, LevelReached,
                                         ModelCircuit, ModelComparison, ModelEvaluation, Reliance, Retained,
                                         RunCircuits, RunComparison, RunEvaluation, Score, SplitScore, TaskInfo,
                                         TrainingSummary, Trials)


def split_score(acc: float, n: int = 200, split: str = "test") -> SplitScore:
    return SplitScore(accuracy=acc, incongruent_accuracy=acc, n_correct=int(acc * n), logit_diff=0.0,
                      by_condition=(), trials=Trials(split=split, n=n, seed=0))


def model_eval(acc: float, gen: float | None, steps: int | None) -> ModelEvaluation:
    """A model with test accuracy `acc`, held-out accuracy `gen` (None: no such split) and `steps` to the
    criterion (None: the base, never trained)."""
    training = TrainingSummary(steps=steps, met_criterion=True, steps_to_criterion=steps) if steps else None
    return ModelEvaluation(test=split_score(acc), psychometric={},
                           gen=split_score(gen, split="gen") if gen is not None else None, training=training)


def evaluation(models: dict[str, ModelEvaluation], eligible: list[str]) -> RunEvaluation:
    crit = Criterion(split="val", n_trials=256, accuracy=0.98, incongruent_accuracy=0.95, checked_every=25)
    return RunEvaluation(bayes_optimal_accuracy=1.0, chance=0.5,
                         task=TaskInfo(name="cdm", shortcut="", answer_words=("", ""), group=None, corruption="",
                                       corruption_description=""),
                         criterion={"finetuned": crit, "scratch": crit}, models=models, eligible=tuple(eligible),
                         excluded={}, base=BaseInfo(name="base", n_layers=2, d_model=8, n_heads=4))


def retained(values: list[float]) -> tuple[Retained, ...]:
    return tuple(Retained(accuracy=0.0, logit_diff=0.0, accuracy_retained=v, logit_diff_retained=0.0)
                 for v in values)


def model_comparison(cka: list[float], cmap: list[float], reversion: list[float], init_reversion: list[float] | None
                     ) -> ModelComparison:
    def rel(rev: list[float], cm: list[float] | None) -> Reliance:
        return Reliance(reversion_layer=retained(rev), reversion_top_down=retained(rev),
                        full=Score(accuracy=1.0, logit_diff=1.0), cmap_resid=retained(cm) if cm else None)

    return ModelComparison(cka_base={"debiased": {"resid": {"answer": tuple(cka)}}}, reliance_base=rel(reversion, cmap),
                           weight_change={}, reliance_init=rel(init_reversion, None) if init_reversion else None)


def comparison(per_model: dict[str, ModelComparison], pairs: dict[tuple[str, str], list[float]]) -> RunComparison:
    return RunComparison(per_model=per_model, components=(),
                         pairs=tuple(CKAPair(a=a, b=b, cka=tuple(v)) for (a, b), v in pairs.items()), trials={"cka": Trials(split="test", n=8, seed=0),
                                                "reliance": Trials(split="test", n=8, seed=0)})


def _curve(cpr: float) -> FaithfulnessCurve:
    return FaithfulnessCurve(level="node", n_items=10, grid=(), sizes=(), faithfulness=(), cpr=cpr, cmd=0.0,
                             random_faithfulness=(), random_cpr=(), random_cmd=(), m_full=1.0, m_empty=0.0,
                             gap_se=0.0, defined=True, ablation="mean",
                             level_reached=LevelReached(level=0.8, size=None, fraction=None,
                                                        cpr_percentile_among_random=None),
                             f_empty=0.0, f_full=1.0)


def model_circuit(overlap_set: list[str], cpr: float, nodes: list[str]) -> ModelCircuit:
    return ModelCircuit(method="eap", ablation="mean", corruption="", n_pairs=8, clean_logit_diff=1.0,
                        corrupt_logit_diff=0.0, node_scores={n: 0.0 for n in nodes}, ranked=tuple(nodes),
                        n_nodes=len(nodes), overlap_set=tuple(overlap_set), node_curve=_curve(cpr),
                        edge_curve=_curve(cpr), exact_check=ExactCheck(nodes=(), eap=(), exact=(), spearman=0.0),
                        trials=Trials(split="test", n=8, seed=0))


def circuits(models: dict[str, ModelCircuit], base_ranked: list[str], n_nodes: int) -> RunCircuits:
    return RunCircuits(models=models, method="eap", ablation="mean", level=0.8, n_random=2, n_nodes=n_nodes,
                       base_ranked=tuple(base_ranked))


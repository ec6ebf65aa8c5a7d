"""`cogcircuits run`: the run config (`config`), the shared context (`context`), the steps (`steps`) and their
driver (`pipeline`), contrasts between the groups (`contrasts`), verdicts by rule (`claims`), the task suite
(`suite`). Imports `experiments.report` and below."""

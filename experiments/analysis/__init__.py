"""Analyses of trained models: the notebook API's functions (`analyses`), the per-model bundles of a run
(`stages`), reliance on the base (`reliance`), attention views (`attention`). Imports `experiments.training` and
below."""

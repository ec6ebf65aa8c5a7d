"""Training: fine-tuning and scratch training to a criterion (`train`), pretraining the shipped base (`pretrain`,
its corpus and model card). Imports `experiments.core`, `interp`, `tasks`."""

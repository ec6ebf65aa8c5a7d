"""Planted-reuse controls for the reuse metrics (`cogcircuits controls CONFIG`): a base that holds a sub-skill of
the task (positive control), the same base with its weights shuffled and the scratch arm (negative controls), each
fine-tuned / trained over several seeds, every reuse metric scored on each, and a validation table saying which
metrics separate the positive control from the negative ones by the seeds' spread."""

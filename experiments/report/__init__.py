"""A run's figures (`figures`) and its HTML report (`report`), from the files the run wrote. Imports
`experiments.jobs` and below."""

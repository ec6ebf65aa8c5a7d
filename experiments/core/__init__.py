"""The bottom layer of `experiments`: config files read and checked (`config`), resumable training states
(`state`). Imports nothing of `experiments`."""

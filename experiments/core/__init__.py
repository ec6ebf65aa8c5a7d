"""The bottom layer of `experiments`: config files read and checked (`config`), resumable training states
(`state`), the typed records kept as JSON (`record`) and the run's record built from them (`run_record`). Imports
nothing of `experiments`."""

"""Jobs: a run's independent units as files (`spec`), what runs one (`runner`, `kinds`), where they run
(`executors`) and the coordinator's submit / watch / retry loop (`dispatch`). Imports `experiments.analysis` and
below."""

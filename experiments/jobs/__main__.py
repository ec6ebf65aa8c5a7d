"""`python -m experiments.jobs RUN_DIR JOB_ID`: run one job (what a cluster worker does)."""

import sys

from experiments.jobs.runner import main

sys.exit(main())

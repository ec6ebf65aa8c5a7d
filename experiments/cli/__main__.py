"""`python -m experiments.cli`: the `cogcircuits` command."""

import sys

from experiments.cli.main import main

sys.exit(main())

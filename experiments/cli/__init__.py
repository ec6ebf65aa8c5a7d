"""The `cogcircuits` command line: argument parsing and printing only (`main`; the analysis commands in
`analyses`, `attention`, `figures`). The top layer."""

from experiments.cli.main import main

__all__ = ["main"]

"""Writing the analysis commands' figures (each typed result's `.figures()`, `interp.results`) with the run's
export code (`experiments.report.figures.export_run`): under OUT/figures/, HTML pages sharing one plotly.min.js from that
folder (offline), PNG / SVG through kaleido and a Chromium, CSV of the numbers behind each figure; and refusing,
before anything is computed, formats that cannot be written here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp import viz

FORMATS = ("html", "png", "svg", "csv")


def check_formats(formats: Sequence[str]) -> None:
    """Refuse, before anything is computed, a format that is unknown or that this machine cannot write."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown figure format(s) {', '.join(map(repr, bad))} (choose from {', '.join(FORMATS)})")
    images = [f for f in formats if f in ("png", "svg")]
    if images and (importlib.util.find_spec("kaleido") is None or not viz.chromium_available()):
        raise RuntimeError(f"cannot write {' and '.join(images)} figures: they need kaleido and a Chromium (install "
                           "the Debian package `chromium`); use --figures html")


def write(out: Path, figs: dict[str, Any], formats: Sequence[str]) -> list[str]:
    """Every figure in `formats` under out/figures (with figures/index.json); returns the files written."""
    from experiments.report.figures import export_run  # lazy: CLI start-up (no torch before a command needs it)

    return export_run(out, figs, list(dict.fromkeys(formats)), strict=True)["written"]

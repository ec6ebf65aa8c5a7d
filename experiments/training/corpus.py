"""Generic English pretraining corpus from freely licensed Debian packages.

Each source is a Debian package whose text is extracted into plain UTF-8 documents. The corpus is generic: it
holds no decision task and nothing shaped like one (`check_no_task_text` verifies this on the prepared files).

Numbers matter for this project (the task is a numerical comparison), so the sources are chosen and rendered to
keep natural uses of numbers: the Bible with its chapter and verse numbers inline (a natural counting signal),
dictionary entries with dates and quantities, Python's documentation with versions, tables and code.
"""

from __future__ import annotations

import gzip
import html
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from interp.store import atomic_write_text


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    licence: str
    copyright_file: str


SOURCES: tuple[Source, ...] = (
    Source("bible", "bible-kjv-text", "KJV text: public domain (copyright expired); BRS data format: free use",
           "/usr/share/doc/bible-kjv-text/copyright"),
    Source("gcide", "dict-gcide", "GPL-2+ (GNU Collaborative International Dictionary of English)",
           "/usr/share/doc/dict-gcide/copyright"),
    Source("wordnet", "wordnet-base", "WordNet 3.0 licence (permissive, Princeton University)",
           "/usr/share/doc/wordnet-base/copyright"),
    Source("fortunes", "fortunes", "BSD (fortune-mod data files)", "/usr/share/doc/fortunes/copyright"),
    Source("pydoc", "python3.11-doc", "PSF License Version 2", "/usr/share/doc/python3.11-doc/copyright"),
)
EXTRA_PACKAGES = ("bible-kjv",)  # the `bible` program that reads the bible-kjv-text data file

_BOOK = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


class CorpusError(RuntimeError):
    pass


def install_packages() -> None:
    """apt-get install the source packages (needs root and a reachable Debian mirror)."""
    pkgs = [s.package for s in SOURCES] + list(EXTRA_PACKAGES)
    if shutil.which("apt-get") is None:
        raise CorpusError("apt-get not found: install these Debian packages by hand: " + " ".join(pkgs))
    subprocess.run(["apt-get", "install", "-y", "-q", *pkgs], check=True, capture_output=True)


def _bible() -> str:
    if shutil.which("bible") is None:
        raise CorpusError("the `bible` program (Debian package bible-kjv) is not installed")
    out = subprocess.run(["bible", "-f", "Ge1:1-Re22:21"], check=True, capture_output=True, text=True).stdout
    chapters: list[str] = []
    current, parts = None, []
    for line in out.splitlines():
        m = _BOOK.match(line.strip())
        if not m:
            if parts and line.strip():
                parts[-1] += " " + line.strip()
            continue
        book, chap, verse, text = m.groups()
        if (book, chap) != current:
            if parts:
                chapters.append(" ".join(parts))
            current, parts = (book, chap), [f"{book} chapter {chap}.\n"]
        parts.append(f"{verse} {text}")
    if parts:
        chapters.append(" ".join(parts))
    return "\n\n".join(chapters)


def _gcide() -> str:
    raw = gzip.decompress(Path("/usr/share/dictd/gcide.dict.dz").read_bytes()).decode("utf-8", "replace")
    raw = re.sub(r"[ \t]+", " ", raw)
    return re.sub(r"\n\s+", "\n", raw)


def _wordnet() -> str:
    lines = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in Path(f"/usr/share/wordnet/data.{pos}").read_text("utf-8", "replace").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            fields = head.split()
            n = int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(n)]
            lines.append(f"{', '.join(words)}: {gloss.strip()}")
    return "\n".join(lines)


def _fortunes() -> str:
    root = Path("/usr/share/games/fortunes")
    docs = []
    for f in sorted(root.glob("*")):
        if f.suffix in (".dat", ".u8") or f.is_dir() or f.is_symlink():
            continue
        docs.extend(d.strip() for d in f.read_text("utf-8", "replace").split("\n%\n") if d.strip())
    return "\n\n".join(docs)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if tag in ("script", "style", "nav"):
            self.skip += 1
        elif tag in ("p", "div", "br", "li", "tr", "h1", "h2", "h3", "pre", "dt", "dd"):
            self.out.append("\n")

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag in ("script", "style", "nav") and self.skip:
            self.skip -= 1

    def handle_data(self, data):  # noqa: ANN001
        if not self.skip:
            self.out.append(data)


def _pydoc() -> str:
    root = Path("/usr/share/doc/python3.11/html")
    docs = []
    for f in sorted(root.rglob("*.html")):
        if "_static" in f.parts or f.name in ("genindex-all.html",) or f.name.startswith("genindex"):
            continue
        p = _Text()
        p.feed(html.unescape(f.read_text("utf-8", "replace")))
        text = re.sub(r"\n\s*\n+", "\n\n", "".join(p.out)).strip()
        docs.append(text.replace("\u00b6", ""))
    return "\n\n".join(docs)


EXTRACTORS = {"bible": _bible, "gcide": _gcide, "wordnet": _wordnet, "fortunes": _fortunes, "pydoc": _pydoc}
TASK_SHAPE = re.compile(r"\b(motion|color)\b\s+\d+\s+\d+\s+\b(motion|color)\b\s+\d+\s+\d+", re.IGNORECASE)


def check_no_task_text(text: str) -> int:
    """Number of passages shaped like the decision task (two modality words each followed by two numbers)."""
    return len(TASK_SHAPE.findall(text))


def prepare(out: Path, install: bool = False) -> dict:
    """Extract every source into out/<name>.txt and write out/manifest.json; returns the manifest."""
    if install:
        install_packages()
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"sources": []}
    for src in SOURCES:
        text = EXTRACTORS[src.name]()
        if check_no_task_text(text):
            raise CorpusError(f"source {src.name} contains text shaped like the decision task")
        atomic_write_text(out / f"{src.name}.txt", text)
        digits = sum(c.isdigit() for c in text)
        manifest["sources"].append({
            "name": src.name, "package": src.package, "licence": src.licence,
            "copyright_file": src.copyright_file, "chars": len(text), "digit_chars": digits,
        })
    manifest["total_chars"] = sum(s["chars"] for s in manifest["sources"])
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    return manifest


def read_corpus(corpus_dir: Path) -> dict[str, str]:
    manifest_path = corpus_dir / "manifest.json"
    if not manifest_path.exists():
        raise CorpusError(f"no corpus at {corpus_dir} (manifest.json missing): run `cogcircuits corpus --out {corpus_dir}`")
    manifest = json.loads(manifest_path.read_text())
    return {s["name"]: (corpus_dir / f"{s['name']}.txt").read_text("utf-8") for s in manifest["sources"]}

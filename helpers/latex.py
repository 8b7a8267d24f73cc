"""Building a LaTeX document and reading its log: the part of the report that knows about TeX tools.

`compile_pdf` copies the sources and the generated includes into a fresh temporary folder (so that
LaTeX sees only plain relative names, whatever the checkout's path), links the figures there as
`plots/`, runs latexmk and copies the PDF and the log back. Its failures are `LatexError`s carrying
what the log says: an undefined result key (the message `\\res` raises), a file not found, the first
error lines; `log_problems` lists the undefined references a finished log still reports.
`helpers.report` decides what these mean for the study's report.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from . import store

DEBIAN_PACKAGES = "latexmk texlive-latex-recommended texlive-fonts-recommended lmodern"

_MISSING_KEY = re.compile(r"Result key `([^']*)' is not defined")
_NO_WORDS = re.compile(r"Verdict `([^']*)' of `([^']*)' has no words in `([^']*)'")
_NOT_FOUND = re.compile(r"File `([^']*)' not found")
_UNDEFINED = re.compile(r"(Reference|Citation) `([^']*)' on page \d+ undefined")
_ERROR_LINE = re.compile(r"!|[^\s:]+\.tex:\d+: ")  # "! ..." or, with -file-line-error, "./report.tex:12: ..."


class LatexError(RuntimeError):
    """latexmk failed or is missing. `missing_key`: the result key an `\\res` found undefined;
    `no_words`: (verdict, key, family) a `\\verdict` found no words for; `missing_file`: a file
    LaTeX could not find; `log`: the log's path, where there is one."""

    def __init__(
        self,
        message: str,
        log: Path | None = None,
        missing_key: str | None = None,
        no_words: tuple[str, str, str] | None = None,
        missing_file: str | None = None,
    ):
        super().__init__(message)
        self.log, self.missing_key, self.no_words, self.missing_file = log, missing_key, no_words, missing_file


def find_latexmk() -> str:
    exe = shutil.which("latexmk")
    if exe is None or shutil.which("pdflatex") is None:
        raise LatexError(
            "latexmk and pdflatex are needed to build the report; install the Debian "
            f"packages: apt-get install --no-install-recommends {DEBIAN_PACKAGES}"
        )
    return exe


def log_problems(log: str) -> list[str]:
    """Undefined references or citations left in a finished LaTeX log."""
    found = [f"undefined {kind.lower()} {name!r}" for kind, name in _UNDEFINED.findall(log)]
    if not found and "There were undefined references" in log:
        found.append("undefined references")
    return found


def log_failure(log: str, log_path: Path, output: str, returncode: int) -> LatexError:
    """The error of a failed run, from its log: the first undefined result key, verdict without
    words or missing file, else the first error lines (or the end of latexmk's output)."""
    keys, words, files = _MISSING_KEY.findall(log), _NO_WORDS.findall(log), _NOT_FOUND.findall(log)
    if keys:
        return LatexError(f"result key {keys[0]!r} is not defined", log_path, missing_key=keys[0])
    if words:
        verdict, key, family = words[0]
        return LatexError(
            f"verdict {verdict!r} of {key!r} has no words in family {family!r}", log_path, no_words=words[0]
        )
    if files:
        return LatexError(
            f"LaTeX could not find the file {files[0]!r} (see {log_path})", log_path, missing_file=files[0]
        )
    errors = [line for line in log.splitlines() if _ERROR_LINE.match(line) or " Error:" in line]
    detail = "\n".join(errors[:5]) or output[-2000:]
    return LatexError(f"latexmk failed (exit code {returncode}); see {log_path}:\n{detail}", log_path)


def compile_pdf(
    main: str, sources: Iterable[Path], figures: Path, out: Path, timeout: float = 600, figures_link: str = "plots"
) -> Path:
    """Compile `main` (one of `sources`, all copied side by side) to out/<stem>.pdf, with the folder
    `figures` linked as `figures_link`; out/<stem>.log is kept. Raises LatexError on any failure, and
    when the finished log still has undefined references."""
    latexmk = find_latexmk()
    stem = Path(main).stem
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        # LaTeX sees only plain relative names: the sources, the generated includes and a link to the
        # figures in a fresh folder, so a checkout under a path with spaces, brackets or non-ASCII
        # letters builds like any other.
        work = Path(tmp)
        for f in sources:
            shutil.copy2(f, work / f.name)
        (work / figures_link).symlink_to(Path(figures).resolve(), target_is_directory=True)
        # max_print_line: TeX wraps log lines at 79 characters, which would split a key in its message
        env = dict(os.environ, max_print_line="10000")
        env.pop("TEXINPUTS", None)
        cmd = [latexmk, "-norc", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error", main]
        try:
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise LatexError(f"latexmk did not finish within {timeout:g} s") from exc
        out.mkdir(parents=True, exist_ok=True)
        for name in (f"{stem}.log", f"{stem}.pdf"):
            if (work / name).is_file():
                store.atomic_write_bytes(out / name, (work / name).read_bytes())
            elif name.endswith(".pdf"):
                (out / name).unlink(missing_ok=True)
    log_path = out / f"{stem}.log"
    log = log_path.read_text(errors="replace") if log_path.is_file() else ""
    if proc.returncode != 0:
        raise log_failure(log, log_path, proc.stdout + proc.stderr, proc.returncode)
    problems = log_problems(log)
    if problems:
        raise LatexError(f"the report built with {', '.join(problems)} (see {log_path})", log_path)
    pdf = out / f"{stem}.pdf"
    if not pdf.is_file():
        raise LatexError(f"latexmk reported success but {pdf} is missing", log_path)
    return pdf

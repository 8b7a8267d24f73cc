"""No number is typed into the report's prose: every quantity the text states is a generated value.

`prose_numbers` reads a LaTeX source the way the rule of report/README.md ("Numbers in the text")
puts it: comments, the result machinery between \\makeatletter and \\makeatother, mathematics
($...$, \\(...\\), \\[...\\], equation-like environments), macro parameters (#1), result keys given to
any macro ({02-hyperparams/first/final}: a braced word with a slash) and the arguments that are names
rather than prose (keys, labels, file names, lengths, column specifications, the optional arguments of
those commands, `\\named{...}`) are set aside; a digit anywhere else is a typed number.
"""

from __future__ import annotations

import re

import pytest

from helpers import report

# command -> how many of its brace arguments are names, not prose; their optional [...] arguments
# (placement, widths, argument counts) are names too. Any other command's arguments are prose.
NAME_ARGS = {
    "res": 1,
    "ifres": 1,
    "resif": 2,
    "resfig": 1,
    "verdict": 2,
    "words": 2,
    "named": 1,
    "label": 1,
    "ref": 1,
    "eqref": 1,
    "pageref": 1,
    "input": 1,
    "include": 1,
    "usepackage": 1,
    "documentclass": 1,
    "end": 1,
    "vspace": 1,
    "hspace": 1,
    "setlength": 2,
    "multicolumn": 2,
    "newcommand": 1,
    "renewcommand": 1,
    "newenvironment": 1,
    "DeclareCaptionType": 1,
    "captionsetup": 1,
    "hypersetup": 1,
    "includegraphics": 1,
}
# environments whose \begin takes names after the environment's own (widths, column specifications)
ENV_ARGS = {"tabular": 1, "tabularx": 2, "minipage": 1, "subfigure": 1}
MATH_ENVS = ("equation", "equation*", "align", "align*", "gather", "gather*", "multline", "multline*", "cases")


def _blank(text: str, start: int, end: int) -> str:
    """text with [start, end) replaced by spaces, line breaks kept (so line numbers stay true)."""
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def _group_end(text: str, i: int, open_: str, close: str) -> int:
    """The index after the group that opens at text[i] (== open_), nested groups counted."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {open_}{close} group")


def prose(text: str) -> str:
    """The prose of a LaTeX source: everything the rule sets aside replaced by spaces."""
    text = re.sub(r"(?<!\\)%[^\n]*", lambda m: " " * len(m.group()), text)
    for pattern in (
        r"\\makeatletter.*?\\makeatother",
        r"\$\$.*?\$\$",
        r"(?<!\\)\$.*?(?<!\\)\$",
        r"\\\(.*?\\\)",
        r"\\\[.*?\\\]",
        *(rf"\\begin\{{{re.escape(env)}\}}.*?\\end\{{{re.escape(env)}\}}" for env in MATH_ENVS),
        r"#\d",
        r"(?<=\{)[\w#./-]*/[\w#./-]*(?=\})",  # a result key or a key's prefix: {02-hyperparams/first/final}
    ):
        text = re.sub(pattern, lambda m: re.sub(r"[^\n]", " ", m.group()), text, flags=re.S)
    i = 0
    while True:
        m = re.compile(r"\\([A-Za-z@]+)\*?").search(text, i)
        if not m:
            return text
        name, i = m.group(1), m.end()
        names, options = NAME_ARGS.get(name, 0), name in NAME_ARGS or name == "begin"
        if name == "begin":
            env = re.match(r"\s*\{([^}]*)\}", text[i:])
            names = 1 + (ENV_ARGS.get(env.group(1), 0) if env else 0)
        while True:  # the command's arguments: [optional] always set aside, {braced} while `names` lasts
            j = i
            while j < len(text) and text[j] in " \t":
                j += 1
            if j < len(text) and text[j] == "[" and options:
                end = _group_end(text, j, "[", "]")
                text, i = _blank(text, j, end), end
            elif j < len(text) and text[j] == "{" and names:
                end = _group_end(text, j, "{", "}")
                text, i, names = _blank(text, j, end), end, names - 1
            else:
                break


# A size typed as numbers is a quantity even in mathematics: $3\times3$ (what appendix C once said of
# a network with 7x7 kernels).
TYPED_SIZE = re.compile(r"\d\s*\\times\s*\d")


def prose_numbers(text: str) -> list[tuple[int, str]]:
    """(line number, the line) of every line whose prose holds a digit, or whose text outside comments
    types a size such as $3\times3$."""
    lines = text.splitlines()
    code = re.sub(r"(?<!\\)%[^\n]*", "", text).splitlines()
    return [
        (n, lines[n - 1].strip())
        for n, line in enumerate(prose(text).splitlines(), start=1)
        if re.search(r"\d", line) or TYPED_SIZE.search(code[n - 1])
    ]


def test_the_report_types_no_number_into_its_prose():
    found = {
        f"{path.name}:{n}": line
        for path in sorted(report.SOURCE_DIR.glob("*.tex"))
        for n, line in prose_numbers(path.read_text())
    }
    assert not found, "numbers typed into the report's prose (make them generated keys or math):\n" + "\n".join(
        f"{where}: {line}" for where, line in found.items()
    )


@pytest.mark.parametrize(
    "sentence",
    [
        r"Its four convolutions each see a $3\times3$ neighbourhood, so after 4 layers a pixel has seen a patch.",
        r"\ifres{has/networks}{The U-Net has 3 resolutions.}{}",
        r"\caption{Samples at epoch 100.}",
        r"each seeing a $3\times3$ neighbourhood",
        r"\newcommand{\claim}[1]{#1 is ahead by more than 2 standard errors}",
        r"\fidclaim{claim/x}{The default set, 100 epochs}{a/final}{b}{b/final}{ends}",
        r"The draft trained for 1,000 steps (\res{profile/epochs} here).",
    ],
)
def test_a_typed_number_is_found(sentence):
    assert prose_numbers(sentence), sentence


@pytest.mark.parametrize(
    "sentence",
    [
        r"The CNN sees $\res{arch/cnn/receptive-field}\times\res{arch/cnn/receptive-field}$ pixels.",
        r"Sampling runs for $t = T, \dots, 1$ % 1000 steps in the draft",
        r"\res{02-hyperparams/first/config/t} time steps; see Table~\ref{tab:hparams-first}.",
        r"\resfig[width=0.8\linewidth]{ddpm-loss}\label{fig:x2}",
        r"\begin{tabularx}{0.9\linewidth}{@{}p{0.3\linewidth}X@{}}",
        r"\named{Algorithm~2} of Bansal et al.\ (\named{2022}) and \named{Inception-v3} features",
        r"\verdict{fid}{claim/second-set-fid}{The second set}{a}{the first}{b}{ends}",
        "\\begin{equation}\n\\beta_t = 10^{-4}\n\\end{equation}",
        r"\resif{profile/epochs}{1}{}{s} and \words{trend}{falls}[2]{The #1 fell.}",
    ],
)
def test_values_math_names_and_markup_are_not_prose(sentence):
    assert prose_numbers(sentence) == [], prose(sentence)


def _args(text: str, i: int, n: int) -> list[str]:
    """The n brace arguments that start at text[i] (white space between them skipped)."""
    out = []
    for _ in range(n):
        while text[i] in " \t\n":
            i += 1
        end = _group_end(text, i, "{", "}")
        out.append(text[i + 1 : end - 1])
        i = end
    return out


def test_the_tex_has_no_loops_and_no_nested_switches():
    """Rows and lists come ready from helpers.report; a verdict's words come from one flat family of
    \\words, so no \\resif chooses between branches that hold another \\resif."""
    for path in sorted(report.SOURCE_DIR.glob("*.tex")):
        text = re.sub(r"(?<!\\)%[^\n]*", "", path.read_text())
        for loop in (r"\@whilenum", r"\@for", r"\loop", r"\resjoin", r"\resrows", r"\foreach"):
            assert loop not in text, f"{path.name}: {loop}"
        for m in re.finditer(r"\\resif(?=\{)", text):
            key, _, then, else_ = _args(text, m.end(), 4)
            assert r"\resif" not in then + else_, f"{path.name}: \\resif{{{key}}} holds another \\resif"
        assert r"\verdict" in text or path.name != "report.tex"

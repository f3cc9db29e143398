"""MyST markdown -> plain Jupyter markdown: what the book's .ipynb files carry in place of MyST-only syntax.

The HTML book is built from the MyST chapters; Jupyter, Colab, VS Code and GitHub render plain markdown only. For
every markdown cell of a chapter, :meth:`BookIndex.markdown` rewrites

* admonitions (``:::{admonition}``, ``{note}``, ``{tip}``, ``{exercise}``, ...) as a blockquote with a bold title,
  and dropdowns and solutions (class ``dropdown``, ``{solution}``, ``{dropdown}``) as ``<details>`` so that they
  stay folded;
* ``{literalinclude}`` as the included code, inline (same ``:pyobject:``/``:lines:``/... selection as Sphinx,
  read from the repository's files when sync runs: the package version the notebook installs);
* ``{math}``, ``{code-block}``, ``{figure}``/``{image}`` (the image as a cell attachment), ``{glue}``, ``{raw}``;
* roles: ``{cite:p}`` -> "(Ainam et al., 2018)", ``{cite:t}`` -> "Ainam et al. (2018)" (from references.bib),
  ``{numref}`` -> "[Fig. 5.1](05_grid_softmax.ipynb#fig-...)", ``{ref}``/``{doc}`` -> the target's title as a
  link, ``{eq}`` -> "(3)", ``{download}`` -> a link into the repository; any other role -> its text;
* ``(label)=`` targets as HTML anchors, MyST ``%`` comment lines dropped.

A directive without a plain form stops sync with an error that names it, instead of leaving MyST in a notebook.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jupytext
import yaml

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
LABEL = re.compile(r"^[ \t]*\((?P<label>[^()\s]+)\)=[ \t]*$")
COMMENT = re.compile(r"^[ \t]*%.*$")
ROLE = re.compile(r"(?:\{(?P<role>[A-Za-z][\w:+.-]*)\})?(?P<ticks>`+)(?P<body>.+?)(?<!`)(?P=ticks)(?!`)", re.S)
LABELLED_MATH = re.compile(r"\$\$(?P<body>.+?)\$\$[ \t]*\((?P<label>[^()\s]+)\)", re.S)
MATH = re.compile(r"\$\$.+?\$\$|(?<![\\$])\$(?![\s$]).+?(?<![\s\\])\$", re.S)
EXPLICIT = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)  # "text <target>" of a role
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")

ADMONITIONS = {  # directive -> default title
    "admonition": "",
    "attention": "Attention",
    "caution": "Caution",
    "danger": "Danger",
    "error": "Error",
    "hint": "Hint",
    "important": "Important",
    "note": "Note",
    "seealso": "See also",
    "tip": "Tip",
    "warning": "Warning",
    "todo": "To do",
    "topic": "",
    "sidebar": "",
    "margin": "",
    "epigraph": "",
    "exercise": "Exercise",
    "solution": "Solution",
    "dropdown": "",
}
FOLDED = {"solution", "dropdown"}  # directives shown folded (``<details>``), like class ``dropdown``/``toggle``
DROPPED = {"bibliography", "toctree", "tableofcontents"}  # directives with nothing to show in a notebook
FIGURE_FORMAT = "Fig. {}"  # Sphinx's numfig_format for figures
CODE_ROLES = {"code", "literal", "file", "command", "samp", "kbd", "program", "envvar", "option", "mimetype"}


@dataclass
class Target:
    """Something a role can point at: a section label, a figure, an equation or a whole document."""

    doc: str  # the document's name, e.g. "05_grid_softmax"
    title: str  # the heading, caption or equation label
    kind: str  # "section" | "figure" | "equation" | "document"
    number: str = ""  # "5.1" for a figure, "3" for an equation, "5" for a numbered chapter
    top: bool = False  # a label on the document's title (links to the document itself)


@dataclass
class Cell:
    """State of one conversion: the document, attachments and citations it produced."""

    doc: str
    folder: Path
    attachments: dict[str, dict[str, str]] = field(default_factory=dict)
    cited: list[str] = field(default_factory=list)


class BookIndex:
    """Every target, number and bibliography entry of a book, and the MyST -> Jupyter markdown conversion."""

    def __init__(self, book: Path, config: dict[str, Any]) -> None:
        self.book, self.root, self.config = book, book.parent, config
        self.targets: dict[str, Target] = {}
        self.documents: dict[str, Target] = {}
        self.notebooks: set[str] = set()
        for doc, number in _toc_documents(book):
            self._index(doc, number)
        self.bib = _read_bib([book / name for name in config.get("bibtex_bibfiles", [])])

    # --- index ----------------------------------------------------------------------------------------------------

    def _index(self, doc: str, number: str) -> None:
        """Record the title, labels, figures and labelled equations of one document."""
        path = self.book / f"{doc}.md"
        if not path.is_file():
            raise FileNotFoundError(f"_toc.yml lists {doc}, but {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if text.startswith("---") and "jupytext:" in text.split("\n---", 1)[0]:
            self.notebooks.add(doc)
            cells = [(c.cell_type, c.source, c.get("metadata", {})) for c in jupytext.read(path).cells]
        else:
            cells = [("markdown", re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S), {})]
        figures = equations = 0
        title, pending = "", None
        for kind, source, metadata in cells:
            if kind == "code":
                figure = (metadata.get("mystnb") or {}).get("figure") or {}
                if figure.get("name"):
                    figures += 1
                    caption = str(figure.get("caption", ""))
                    self._add(figure["name"], Target(doc, caption, "figure", _number(number, figures)))
                continue
            for segment, is_code in _split_code(source):
                if is_code:
                    opener = FENCE.match(segment.split("\n", 1)[0])
                    name = _directive_head(opener["info"])[0] if opener else ""
                    options = _parse_directive(segment.split("\n")[1:-1])[0] if name else {}
                    if name == "figure" and options.get("name"):
                        figures += 1
                        self._add(options["name"], Target(doc, "", "figure", _number(number, figures)))
                    elif name == "math" and options.get("label"):
                        equations += 1
                        self._add(options["label"], Target(doc, options["label"], "equation", str(equations)))
                    continue
                for match in LABELLED_MATH.finditer(segment):
                    equations += 1
                    self._add(match["label"], Target(doc, match["label"], "equation", str(equations)))
                for line in segment.split("\n"):
                    if label := LABEL.match(line):
                        pending = label["label"]
                    elif heading := HEADING.match(line):
                        title = title or heading[2]
                        if pending:
                            top = len(heading[1]) == 1
                            self._add(pending, Target(doc, heading[2], "section", number if top else "", top))
                            pending = None
        self.documents[doc] = Target(doc, title or doc, "document", number, True)

    def _add(self, label: str, target: Target) -> None:
        if label in self.targets:
            raise ValueError(f"label {label!r} is defined in both {self.targets[label].doc} and {target.doc}")
        self.targets[label] = target

    def figure_caption(self, doc: str, name: str) -> tuple[str, list[str]]:
        """A code cell's figure caption as markdown (an anchor, the number, the caption) and the keys it cites."""
        target = self.targets[name]
        cell = Cell(doc, self.book)
        caption = self._inline(target.title.strip(), cell)
        return f'<a id="{name}"></a>**{FIGURE_FORMAT.format(target.number)}.** {caption}'.rstrip(), cell.cited

    def references(self, keys: list[str]) -> str:
        """A markdown "References" section listing the bibliography entries ``keys``."""
        items = [f"- {self.bib[key]['reference']}" for key in keys]
        return "## References\n\n" + "\n".join(items)

    # --- conversion -----------------------------------------------------------------------------------------------

    def markdown(self, doc: str, source: str) -> tuple[str, dict[str, dict[str, str]], list[str]]:
        """Plain Jupyter markdown for one MyST markdown cell of ``doc``: (text, attachments, cited keys)."""
        cell = Cell(doc, self.book)
        text = "\n".join(
            part if is_code else re.sub(r"\n{3,}", "\n\n", part)  # code keeps its blank lines
            for part, is_code in _split_code(self._blocks(source, cell))
        )
        return text.strip("\n"), cell.attachments, cell.cited

    def _blocks(self, source: str, cell: Cell) -> str:
        """Convert text and directives of a (part of a) cell; plain code fences pass unchanged."""
        out = []
        for segment, is_code in _split_code(source):
            if not is_code:
                out.append(self._inline(segment, cell))
                continue
            lines = segment.split("\n")
            opener = FENCE.match(lines[0])
            name, argument = _directive_head(opener["info"])
            if not name:
                out.append(segment)
                continue
            indent = opener["indent"]
            body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[1:-1]]
            converted = self._directive(name, argument, body, cell)
            out.append("\n".join(indent + line if line else line for line in converted.split("\n")))
        return "\n".join(out)

    def _directive(self, name: str, argument: str, body: list[str], cell: Cell) -> str:
        """Plain markdown for one directive."""
        options, content = _parse_directive(body)
        if name in ADMONITIONS:
            return self._admonition(name, argument, options, content, cell)
        if name == "literalinclude":
            return self._literalinclude(argument, options, cell)
        if name in ("code-block", "code", "sourcecode"):
            return _fenced("\n".join(content), argument or options.get("language", ""), options.get("caption"))
        if name == "math":
            tag = f" \\tag{{{self.targets[options['label']].number}}}" if options.get("label") else ""
            anchor = f'<a id="{options["label"]}"></a>\n\n' if options.get("label") else ""
            return f"{anchor}$$\n" + "\n".join(content).strip("\n") + f"{tag}\n$$"
        if name in ("figure", "image"):
            return self._image(argument, options, content, cell)
        if name in ("glue:", "glue", "glue:any", "glue:figure", "glue:math", "glue:text"):
            return f"*(the value `{argument}`, shown in the output of the cell that computes it)*"
        if name == "raw":
            return "\n".join(content) if argument.strip() == "html" else ""
        if name == "table":
            title = f"**{self._inline(argument, cell)}**\n\n" if argument else ""
            return title + self._blocks("\n".join(content), cell)
        if name in DROPPED:
            return ""
        raise ValueError(
            f"{cell.doc}: the MyST directive {{{name}}} has no plain Jupyter form; use one of "
            f"{', '.join(sorted([*ADMONITIONS, 'literalinclude', 'math', 'figure', 'code-block']))} or teach "
            f"book/_tools/notebook_markdown.py how to write it"
        )

    def _admonition(self, name: str, argument: str, options: dict, content: list[str], cell: Cell) -> str:
        title = self._inline(argument.strip(), cell) if argument.strip() else ADMONITIONS[name] or name.title()
        classes = str(options.get("class", "")).split()
        body = self._blocks("\n".join(content), cell).strip("\n")
        if name in FOLDED or {"dropdown", "toggle"} & set(classes):
            return f"<details>\n<summary>{title}</summary>\n\n{body}\n\n</details>"
        lines = [f"**{title}**", "", *_one_line_math(body).split("\n")]
        return "\n".join(f"> {line}".rstrip() for line in lines)

    def _literalinclude(self, argument: str, options: dict, cell: Cell) -> str:
        from sphinx.config import Config
        from sphinx.directives.code import LiteralIncludeReader

        path = (cell.folder / argument.strip()).resolve()
        if not path.is_file() or self.root.resolve() not in path.parents:
            raise FileNotFoundError(f"{cell.doc}: literalinclude {argument.strip()!r} is not a file of the repository")
        reader_options = {k: int(v) if k in ("dedent", "tab-width") else v for k, v in options.items()}
        code, _ = LiteralIncludeReader(str(path), reader_options, Config({}, {})).read()
        language = options.get("language") or ("python" if path.suffix == ".py" else "")
        return _fenced(code.rstrip("\n"), language, options.get("caption"))

    def _image(self, argument: str, options: dict, content: list[str], cell: Cell) -> str:
        path = (cell.folder / argument.strip()).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{cell.doc}: image {argument.strip()!r} not found (looked at {path})")
        mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
        if path.suffix.lower() not in mime:
            raise ValueError(f"{cell.doc}: image {path.name} must be .png, .jpg or .svg to be attached to a notebook")
        cell.attachments[path.name] = {mime[path.suffix.lower()]: base64.b64encode(path.read_bytes()).decode()}
        alt = options.get("alt", path.stem)
        image = f"![{alt}](attachment:{path.name})"
        caption = self._blocks("\n".join(content), cell).strip()
        if options.get("name") and options["name"] in self.targets:
            number = FIGURE_FORMAT.format(self.targets[options["name"]].number)
            caption = f'<a id="{options["name"]}"></a>**{number}.** {caption}'.rstrip()
        return f"{image}\n\n{caption}" if caption else image

    def _inline(self, text: str, cell: Cell) -> str:
        """Labels, comments, labelled equations and roles of a text segment (code spans are left alone)."""
        lines = []
        for line in text.split("\n"):
            if label := LABEL.match(line):
                target = self.targets.get(label["label"])
                if not (target and target.top):  # a link to a document's title label opens the notebook itself
                    lines.append(f'<a id="{label["label"]}"></a>')
            elif not COMMENT.match(line):
                lines.append(line)
        text = "\n".join(lines)

        def labelled(match: re.Match) -> str:
            number = self.targets[match["label"]].number
            return f'<a id="{match["label"]}"></a>\n$${match["body"].rstrip()} \\tag{{{number}}}$$'

        text = LABELLED_MATH.sub(labelled, text)
        return ROLE.sub(lambda m: self._role(m, cell) if m["role"] else m[0], text)

    def _role(self, match: re.Match, cell: Cell) -> str:
        """Readable text or a link for one role."""
        role, body = match["role"], match["body"]
        explicit = EXPLICIT.match(body)
        text, target = (explicit["text"], explicit["target"]) if explicit else ("", body)
        if role.startswith("cite"):
            return self._cite(role, target, cell)
        if role in ("numref", "ref", "eq", "doc"):
            return self._reference(role, text, target.strip(), cell)
        if role == "download":
            url = self._repository_url(cell.folder / target.strip())
            return f"[{text or Path(target).name}]({url})"
        if role == "math":
            return f"${body}$"
        if role in ("sub", "sup"):
            return f"<{role}>{body}</{role}>"
        if role in CODE_ROLES:
            return f"`{body}`"
        if role.startswith("glue"):
            return f"`{target}`"
        return text or body

    def _cite(self, role: str, keys: str, cell: Cell) -> str:
        entries = []
        for key in (k.strip() for k in keys.split(",")):
            if key not in self.bib:
                files = ", ".join(self.config.get("bibtex_bibfiles", [])) or "no bibliography (bibtex_bibfiles)"
                raise KeyError(f"{cell.doc}: citation {key!r} is not in {files}")
            if key not in cell.cited:
                cell.cited.append(key)
            entries.append(self.bib[key])
        if role in ("cite:t", "cite:ts"):
            return "; ".join(f"{e['authors']} ({e['year']})" for e in entries)
        if role in ("cite:author", "cite:authors"):
            return "; ".join(e["authors"] for e in entries)
        if role in ("cite:year", "cite:yearpar"):
            return "; ".join(e["year"] for e in entries)
        return "(" + "; ".join(f"{e['authors']}, {e['year']}" for e in entries) + ")"

    def _reference(self, role: str, text: str, label: str, cell: Cell) -> str:
        if role == "doc":
            name = str((cell.folder / label).resolve().relative_to(self.book.resolve())).removesuffix(".md")
            target = self.documents.get(name)
            if target is None:
                raise KeyError(f"{cell.doc}: {{doc}}`{label}` names no document of _toc.yml")
        else:
            target = self.targets.get(label)
            if target is None:
                raise KeyError(f"{cell.doc}: {{{role}}}`{label}` names no label, figure or equation of the book")
        if role == "eq":
            return f"([{target.number}]({self._href(target, label, cell)}))"
        if role == "numref":
            shown = FIGURE_FORMAT.format(target.number) if target.kind == "figure" else f"Section {target.number}"
            if text:
                shown = text.replace("%s", target.number).replace("{number}", target.number)
                shown = shown.replace("{name}", target.title)
        else:
            shown = text or target.title
        return f"[{self._inline(shown, cell)}]({self._href(target, label, cell)})"

    def _href(self, target: Target, label: str, cell: Cell) -> str:
        """Where a link to ``target`` goes: an anchor here, another notebook, or the repository for other pages."""
        anchor = "" if target.top else f"#{label}"
        if target.doc == cell.doc:
            return anchor or "#"
        if target.doc in self.notebooks:
            return f"{target.doc}.ipynb{anchor}"
        return self._repository_url(self.book / f"{target.doc}.md") + anchor

    def _repository_url(self, path: Path) -> str:
        repo = self.config.get("repository") or {}
        relative = path.resolve().relative_to(self.root.resolve()).as_posix()
        return f"{str(repo.get('url', '')).rstrip('/')}/blob/{repo.get('branch', 'main')}/{relative}"


# --- helpers ----------------------------------------------------------------------------------------------------


def _toc_documents(book: Path) -> list[tuple[str, str]]:
    """(document, chapter number or "") in _toc.yml order; numbered parts count on across parts."""
    toc = yaml.safe_load((book / "_toc.yml").read_text(encoding="utf-8"))
    docs, count = [(toc["root"], "")], 0
    for part in toc.get("parts", [{"chapters": toc.get("chapters", []), "numbered": toc.get("numbered")}]):
        for entry in part.get("chapters", []):
            if part.get("numbered"):
                count += 1
            docs.append((entry["file"], str(count) if part.get("numbered") else ""))
    return docs


def _number(chapter: str, index: int) -> str:
    return f"{chapter}.{index}" if chapter else str(index)


def _split_code(source: str) -> list[tuple[str, bool]]:
    """The cell as (segment, is_fenced_block) in order; a fence closes at the first line of >= as many fence chars."""
    lines, out, text = source.split("\n"), [], []
    i = 0
    while i < len(lines):
        opener = FENCE.match(lines[i])
        if not opener:
            text.append(lines[i])
            i += 1
            continue
        char, size = opener["fence"][0], len(opener["fence"])
        close = re.compile(rf"^[ \t]*{re.escape(char)}{{{size},}}[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), len(lines) - 1)
        if text:
            out.append(("\n".join(text), False))
            text = []
        out.append(("\n".join(lines[i : end + 1]), True))
        i = end + 1
    if text:
        out.append(("\n".join(text), False))
    return out


def _directive_head(info: str) -> tuple[str, str]:
    """(name, argument) of a fence info string ``{name} argument``; name "" for a plain code fence."""
    match = re.match(r"^\{(?P<name>[\w:.-]+)\}[ \t]*(?P<argument>.*)$", info.strip())
    return (match["name"], match["argument"]) if match else ("", "")


def _parse_directive(body: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(options, content lines) of a directive body: ``:key: value`` lines or a ``---`` YAML block first."""
    options: dict[str, Any] = {}
    if body and body[0].strip() == "---":
        end = next((i for i in range(1, len(body)) if body[i].strip() == "---"), None)
        if end is not None:
            return dict(yaml.safe_load("\n".join(body[1:end])) or {}), body[end + 1 :]
    i = 0
    while i < len(body) and (option := re.match(r"^:([\w-]+):(?:[ \t]+(.*))?$", body[i])):
        options[option[1]] = (option[2] or "").strip()
        i += 1
    return options, body[i:]


def _fenced(code: str, language: str, caption: str | None = None) -> str:
    """A markdown code fence long enough for ``code``, with an optional italic caption line above."""
    ticks = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`{3,}", code)), default=0))
    fence = f"{ticks}{language.strip()}\n{code}\n{ticks}"
    return f"*{caption}*\n\n{fence}" if caption else fence


def _one_line_math(text: str) -> str:
    """Math spans outside code kept on one line each (a blockquote's ``> `` would otherwise land inside TeX)."""
    parts = []
    for segment, is_code in _split_code(text):
        parts.append(segment if is_code else MATH.sub(lambda m: re.sub(r"\s*\n\s*", " ", m[0]), segment))
    return "\n".join(parts)


def _read_bib(paths: list[Path]) -> dict[str, dict[str, str]]:
    """key -> {"authors": "Ainam et al.", "year": "2018", "reference": full entry} from the BibTeX files."""
    from pybtex.database import parse_file

    entries: dict[str, dict[str, str]] = {}
    for path in paths:
        for key, entry in parse_file(str(path)).entries.items():
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            last = [_plain(" ".join(p.prelast_names + p.last_names)) for p in people]
            authors = last[0] if len(last) == 1 else " and ".join(last) if len(last) == 2 else f"{last[0]} et al."
            full = ", ".join(
                _plain(" ".join(p.first_names + p.middle_names + p.prelast_names + p.last_names)) for p in people
            )
            fields = entry.fields
            venue = fields.get("booktitle") or fields.get("journal") or fields.get("howpublished") or ""
            parts = [f"{full} ({fields.get('year', 'n.d.')}).", f"*{_plain(fields.get('title', key))}*."]
            if venue:
                parts.append(f"{_plain(venue)}.")
            if fields.get("url") or fields.get("doi"):
                parts.append(fields.get("url") or f"https://doi.org/{fields['doi']}")
            entries[key] = {
                "authors": authors or _plain(fields.get("title", key)),
                "year": fields.get("year", "n.d."),
                "reference": " ".join(parts),
            }
    return entries


def _plain(text: str) -> str:
    """BibTeX text without braces, LaTeX dashes as en dashes."""
    return text.replace("{", "").replace("}", "").replace("--", "–").replace("\\&", "&")

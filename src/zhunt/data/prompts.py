"""Paired prompt tables, few-shot exemplars and prompt templates.

A *prompt table* is a wide, tab-separated UTF-8 file with one problem per line::

    id  category  answer  en  zh  es  fr  de

``id`` is a unique slug (``add-01``), ``answer`` an integer that is the same in
every language, and every other column holds the problem posed in one language
(ISO codes of :data:`KNOWN_LANGUAGES`). Each row is validated against
``workflow/schemas/prompts.schema.yaml``; every problem found is reported as a
:class:`~zhunt.errors.ZhuntError` naming ``path:line`` (1-based file lines, the
header is line 1) and the column.

An *MGSM folder* holds the benchmark's own files (``mgsm_<lang>.tsv``, no
header, ``question<TAB>integer answer``, line ``i`` = problem ``i`` in every
language); :func:`load_mgsm` reads it into the same wide layout (ids
``mgsm-<i>``, 0-based) and the workflow writes that table once
(``results/prompts/<name>.tsv``), so every stage reads one format.

A *templates file* (``resources/prompts/templates.yaml``) says, per model
family, how a question becomes the text fed to a model: plain completion
markers (``"Question: {question}\\nAnswer:"``) or the tokenizer's chat
template. Its layout is documented at the top of the shipped file and in
:func:`load_templates`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import yaml

from zhunt.errors import ZhuntError
from zhunt.data.language_id import SUPPORTED_LANGUAGES

#: The languages a prompt table may carry, in canonical order: the languages whose
#: answers :mod:`zhunt.data.number_parsing` can read (one list for the whole project).
KNOWN_LANGUAGES: tuple[str, ...] = SUPPORTED_LANGUAGES

#: Columns every prompt table must have besides its language columns.
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "category", "answer")

#: Default JSON schema of one prompt-table row (repository checkout layout).
DEFAULT_ROW_SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "prompts.schema.yaml"

#: The shipped prompt templates (repository checkout layout); its ``organism`` family is the
#: organism's training format (:func:`zhunt.models.organism.prompt_templates`).
DEFAULT_TEMPLATES = Path(__file__).resolve().parents[3] / "resources" / "prompts" / "templates.yaml"

_TEMPLATE_KINDS = ("completion", "chat")
_FAMILY_KEYS = {"kind", "prompt", "shot", "system", "chat_kwargs"}
_INT_RE = re.compile(r"[+-]?[0-9]+")
#: Range of an answer: answers are stored as int64 (activation stores, behaviour tables).
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_PLACEHOLDER_RE = re.compile(r"\{(question|prompt|answer)\}")


# --------------------------------------------------------------------------- helpers


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 digest of a file's bytes.

    Parameters
    ----------
    path : str or os.PathLike
        File to hash.

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    ZhuntError
        If the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ZhuntError(str(path), f"cannot read file ({exc.strerror or exc})") from None
    return digest.hexdigest()


def _read_lines(path: Path) -> list[str]:
    """Read a UTF-8 text file (BOM tolerated) as lines without line terminators."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ZhuntError(str(path), "file not found") from None
    except OSError as exc:
        raise ZhuntError(str(path), f"cannot read file ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ZhuntError(f"{path}:{line}", "not valid UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    for i, ln in enumerate(lines):
        if "\r" in ln:
            what = ("the file uses CR-only (classic Mac) line endings" if len(lines) == 1
                    else "a carriage return (CR) that is not part of a CRLF line ending")
            raise ZhuntError(f"{path}:{i + 1}", f"{what}: save it with LF (or CRLF) line endings")
    return lines


def _invisible(ch: str) -> bool:
    """True for whitespace and zero-width/format characters (Unicode Z* and Cf categories)."""
    return ch.isspace() or unicodedata.category(ch) in ("Cf", "Zs", "Zl", "Zp")


def check_text(where: str, text: str, column: str = "text") -> None:
    """Reject a prompt text a model would be fed silently wrong.

    The rule shared by every prompt reader (wide tables here, other formats elsewhere): a text
    must not contain control characters (NUL, other C0/C1 controls; tab and newline cannot occur
    inside a TSV cell anyway), must hold at least one visible character (a text of only spaces
    and zero-width characters such as U+200B is empty), must not start or end with whitespace,
    and must not be wrapped in ASCII double quotes: prompt tables have no quoting, every
    character of a cell is fed to the model, so ``"What is 2 plus 3?"`` would reach the model
    with its quotes (write the cell without them; a quote inside a text is kept as is).

    Parameters
    ----------
    where : str
        ``path:line`` of the text, for the message.
    text : str
        The cell.
    column : str
        Its column (language code), for the message.

    Raises
    ------
    ZhuntError
        ``where: column 'zh': <what is wrong>``.
    """
    for ch in text:
        if unicodedata.category(ch) == "Cc":
            name = "NUL" if ch == "\0" else f"control character U+{ord(ch):04X}"
            raise ZhuntError(where, f"column '{column}': text contains a {name} character")
    if all(_invisible(ch) for ch in text):
        extra = sorted({f"U+{ord(ch):04X}" for ch in text if not ch.isspace()})
        raise ZhuntError(where, f"column '{column}': empty text" +
                         (f" (only invisible characters: {', '.join(extra)})" if extra else ""))
    if text != text.strip():
        raise ZhuntError(where, f"column '{column}': {text!r} starts or ends with whitespace")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        raise ZhuntError(where, f"column '{column}': quote-wrapped cell {text!r}: prompt tables have no "
                         "quoting and the quotes would reach the model; remove the surrounding quotes")


@functools.lru_cache(maxsize=8)
def _row_validator(schema_path: str):
    """Build (once per path) a JSON-schema validator for one prompt-table row."""
    import jsonschema

    path = Path(schema_path)
    if not path.is_file():
        raise ZhuntError(str(path), "prompt-table schema not found")
    try:
        schema = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ZhuntError(str(path), f"invalid YAML ({exc})") from None
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _describe_schema_error(err, header: Sequence[str]) -> tuple[int, str]:
    """Turn a jsonschema ``ValidationError`` into (column position, one-line message)."""
    col = str(err.path[0]) if len(err.path) else None
    pos = header.index(col) if col in header else len(header)
    value = err.instance
    if col is None:
        if err.validator == "additionalProperties":
            return pos, f"unexpected column(s): {err.message}"
        return pos, err.message
    if col == "answer" and err.validator == "type":
        return pos, f"column 'answer': {value!r} is not an integer"
    if col == "id" and err.validator == "pattern":
        return pos, (f"column 'id': {value!r} is not a valid id "
                     "(lowercase letters and digits joined by '-' or '_', e.g. 'add-01')")
    if err.validator in ("minLength", "pattern") and isinstance(value, str):
        if value.strip() == "":
            what = "text" if col in KNOWN_LANGUAGES else "value"
            return pos, f"column '{col}': empty {what}"
        return pos, f"column '{col}': {value!r} starts or ends with whitespace"
    return pos, f"column '{col}': {err.message}"


# --------------------------------------------------------------------------- prompt tables


def _header_languages(header: Sequence[str], languages: Sequence[str] | None, hwhere: str) -> list[str]:
    """The language columns of a prompt-table header (file order), once the header is checked:
    no empty, padded or repeated cell, every required column, only known languages, at least one,
    and every requested language present."""
    seen: set[str] = set()
    for col in header:
        if col == "":
            raise ZhuntError(hwhere, "empty column name in the header")
        if col != col.strip():
            raise ZhuntError(hwhere, f"header cell {col!r} has leading or trailing whitespace "
                             f"(write {col.strip()!r})")
        if col in seen:
            raise ZhuntError(hwhere, f"column '{col}' appears twice in the header")
        seen.add(col)
    for col in REQUIRED_COLUMNS:
        if col not in header:
            raise ZhuntError(hwhere, f"missing required column '{col}' (the header needs "
                             f"{', '.join(REQUIRED_COLUMNS)} and language columns)")
    file_langs = [c for c in header if c not in REQUIRED_COLUMNS]
    for col in file_langs:
        if col not in KNOWN_LANGUAGES:
            raise ZhuntError(hwhere, f"unknown language column '{col}' "
                             f"(expected one of {', '.join(KNOWN_LANGUAGES)})")
    if not file_langs:
        raise ZhuntError(hwhere, "no language column (expected at least one of "
                         f"{', '.join(KNOWN_LANGUAGES)})")
    for lang in languages or ():
        if lang not in file_langs:
            raise ZhuntError(hwhere, f"missing language column '{lang}'")
    return file_langs


def _table_row(where: str, line: str, header: Sequence[str], file_langs: Sequence[str], validator) -> dict:
    """One checked problem row ``{column: value}`` (``answer`` an int) of a prompt-table line."""
    fields = line.split("\t")
    if len(fields) != len(header):
        raise ZhuntError(where, f"malformed row: expected {len(header)} tab-separated fields "
                         f"({', '.join(header)}), found {len(fields)}")
    row: dict[str, Any] = dict(zip(header, fields))
    if _INT_RE.fullmatch(row["answer"]):
        value = int(row["answer"])
        if not INT64_MIN <= value <= INT64_MAX:
            raise ZhuntError(where, f"column 'answer': {row['answer']} is outside the range answers are "
                             "stored in (64-bit integers, -2^63 .. 2^63-1)")
        row["answer"] = value
    errors = list(validator.iter_errors(row))
    if errors:
        _, message = min((_describe_schema_error(e, header) for e in errors), key=lambda t: t[0])
        raise ZhuntError(where, message)
    for lang in file_langs:
        check_text(where, row[lang], lang)
    return row


def load_prompt_table(path: str | os.PathLike, languages: Sequence[str] | None = None,
                      schema: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read and validate a wide prompt table.

    Parameters
    ----------
    path : str or os.PathLike
        Tab-separated UTF-8 file with header ``id, category, answer`` plus one column per
        language (codes of :data:`KNOWN_LANGUAGES`, any order). Blank lines are ignored; line
        endings are LF or CRLF (a lone CR is an error). There is no quoting: a cell is fed to the
        model as written, so it can hold neither a tab nor a newline, and a text wrapped in
        double quotes is rejected (:func:`check_text` has the rule for texts).
    languages : sequence of str, optional
        Language columns required and returned, in this order. Default: every language column of
        the file, in file order.
    schema : str or os.PathLike, optional
        JSON schema (YAML) of one row; default :data:`DEFAULT_ROW_SCHEMA`.

    Returns
    -------
    pandas.DataFrame
        Columns ``id``, ``category``, ``answer`` (int64) and the language columns, one row per
        problem in file order. ``df.attrs`` holds ``path``, ``sha256`` (of the file) and
        ``lines`` (the file line of each row).

    Raises
    ------
    ZhuntError
        Naming ``path:line`` for: an unreadable or non-UTF-8 file, a header without a required
        column, with an unknown or repeated column, or without a requested language; a row with
        the wrong number of fields, an invalid id, an empty category or text, a non-integer
        answer or one outside int64, a text :func:`check_text` rejects, or an id already used on
        an earlier line; a lone CR, a header cell with surrounding whitespace; and a table without
        any problem.
    """
    path = Path(path)
    languages = _check_languages(languages, where="languages")
    lines = _read_lines(path)
    nonblank = [(i + 1, ln) for i, ln in enumerate(lines) if ln != ""]
    if not nonblank:
        raise ZhuntError(f"{path}:1", "empty file: expected a header 'id<TAB>category<TAB>answer<TAB>"
                         "<language columns>' and at least one problem")
    head_no, head_line = nonblank[0]
    header = head_line.split("\t")
    hwhere = f"{path}:{head_no}"
    file_langs = _header_languages(header, languages, hwhere)
    validator = _row_validator(str(Path(schema) if schema is not None else DEFAULT_ROW_SCHEMA))
    first_line: dict[str, int] = {}
    records: list[dict[str, Any]] = []
    row_lines: list[int] = []
    for line_no, line in nonblank[1:]:
        row = _table_row(f"{path}:{line_no}", line, header, file_langs, validator)
        if row["id"] in first_line:
            raise ZhuntError(f"{path}:{line_no}", f"duplicate id '{row['id']}' (first used on line "
                             f"{first_line[row['id']]})")
        first_line[row["id"]] = line_no
        records.append(row)
        row_lines.append(line_no)
    if not records:
        raise ZhuntError(hwhere, "empty table: the header is not followed by any problem")

    out_langs = list(languages) if languages else file_langs
    df = pd.DataFrame.from_records(records, columns=[*REQUIRED_COLUMNS, *out_langs])
    df["answer"] = df["answer"].astype("int64")
    df.attrs.update(path=str(path), sha256=file_sha256(path), lines=row_lines)
    return df


def _check_languages(languages: Sequence[str] | None, where: str) -> list[str] | None:
    """Validate a requested language list (known codes, no repeats)."""
    if languages is None:
        return None
    if isinstance(languages, str):
        languages = [languages]
    languages = list(languages)
    for lang in languages:
        if lang not in KNOWN_LANGUAGES:
            raise ZhuntError(where, f"unknown language '{lang}' (expected one of "
                             f"{', '.join(KNOWN_LANGUAGES)})")
    if len(set(languages)) != len(languages):
        raise ZhuntError(where, f"language listed twice in {languages}")
    if not languages:
        raise ZhuntError(where, "no language requested")
    return languages


def to_long(df: pd.DataFrame, languages: Sequence[str] | None = None) -> pd.DataFrame:
    """Reshape a wide prompt table to one row per (problem, language).

    Parameters
    ----------
    df : pandas.DataFrame
        A table from :func:`load_prompt_table`.
    languages : sequence of str, optional
        Languages to keep, in this order; default every language column of ``df``.

    Returns
    -------
    pandas.DataFrame
        Columns ``id``, ``category``, ``answer``, ``lang``, ``text``; problem-major order (the
        problems in file order, each followed by its languages in the given order). ``attrs``
        are carried over.

    Raises
    ------
    ZhuntError
        If a language is unknown or not a column of ``df``.
    """
    if languages is None:
        languages = [c for c in df.columns if c in KNOWN_LANGUAGES]
    languages = _check_languages(languages, where="languages")
    for lang in languages:
        if lang not in df.columns:
            raise ZhuntError("languages", f"language '{lang}' is not a column of the prompt table "
                             f"{df.attrs.get('path', '')}".rstrip())
    n, m = len(df), len(languages)
    text = df[languages].to_numpy(dtype=object).reshape(n * m)
    out = pd.DataFrame({
        "id": df["id"].to_numpy().repeat(m),
        "category": df["category"].to_numpy().repeat(m),
        "answer": df["answer"].to_numpy().repeat(m),
        "lang": languages * n,
        "text": text,
    })
    out.attrs.update(df.attrs)
    return out


# --------------------------------------------------------------------------- MGSM


#: Category written for every MGSM problem (the benchmark has none).
MGSM_CATEGORY = "mgsm"
#: File name of one MGSM language file inside the benchmark folder.
MGSM_FILE = "mgsm_{lang}.tsv"
_MGSM_ANSWER_RE = re.compile(r"[0-9]+")


def _read_mgsm_file(path: Path) -> tuple[list[str], list[int]]:
    """Questions and integer answers of one ``mgsm_<lang>.tsv`` (one problem a line)."""
    if not path.is_file():
        raise ZhuntError(str(path), "missing MGSM language file (expected mgsm_<lang>.tsv for every "
                         "requested language)")
    questions: list[str] = []
    answers: list[int] = []
    for i, line in enumerate(_read_lines(path)):
        where = f"{path}:{i + 1}"
        if line.strip() == "":
            raise ZhuntError(where, "blank line (every line is one problem: line i is problem i in every "
                             "language file)")
        fields = line.split("\t")
        if len(fields) != 2:
            raise ZhuntError(where, f"malformed MGSM line: expected 'question<TAB>integer answer' "
                             f"(2 tab-separated fields), found {len(fields)}")
        question, answer = fields
        if question.strip() == "":
            raise ZhuntError(where, "empty question")
        if not _MGSM_ANSWER_RE.fullmatch(answer):
            raise ZhuntError(where, f"answer {answer!r} is not a non-negative integer (digits only: "
                             "no sign, thousands separator or decimals)")
        questions.append(question.strip())
        answers.append(int(answer))
    if not questions:
        raise ZhuntError(f"{path}:1", "empty MGSM file: expected one 'question<TAB>answer' line per problem")
    return questions, answers


def load_mgsm(path: str | os.PathLike, languages: Sequence[str], limit: int | None = None) -> pd.DataFrame:
    """Read MGSM from the benchmark's own files into a wide prompt table.

    The folder holds one ``mgsm_<lang>.tsv`` per language: UTF-8, no header, one
    problem a line, ``question<TAB>answer`` with a non-negative integer answer
    (the published files write plain digits: no thousands separators, no
    decimals). Line ``i`` is the same problem in every language.

    Parameters
    ----------
    path : str or os.PathLike
        The folder (config ``prompts.<name>.path``).
    languages : sequence of str
        Languages to read (codes of :data:`KNOWN_LANGUAGES`), in output column order.
    limit : int, optional
        Keep the first ``limit`` problems (all when None).

    Returns
    -------
    pandas.DataFrame
        The layout of :func:`load_prompt_table`: ``id`` = ``mgsm-<i>`` with ``i``
        the **0-based** line index (the benchmark's own problem index: ``mgsm-0``
        is line 1 of every file), ``category`` = :data:`MGSM_CATEGORY`, ``answer``
        (int64) and one column per language; one row per problem in file order.
        A question's leading/trailing whitespace is stripped. ``df.attrs`` holds
        ``path``, ``sha256`` (of the language files' hashes, in language order)
        and ``lines`` (the 1-based file line of each row).

    Raises
    ------
    ZhuntError
        ``<file>:<line>`` for a missing language file, a line that is not two
        tab-separated fields, an empty question, a non-integer answer, files
        with different numbers of problems (ragged), or an answer that differs
        from the first language's on the same line (files not parallel);
        ``limit`` for a limit below 1.
    """
    folder = Path(path)
    langs = _check_languages(languages, where="languages")
    if limit is not None and int(limit) < 1:
        raise ZhuntError("limit", f"must be >= 1, got {limit}")
    if not folder.is_dir():
        raise ZhuntError(str(folder), "MGSM folder not found (expected a folder of mgsm_<lang>.tsv files)")
    files = {lang: folder / MGSM_FILE.format(lang=lang) for lang in langs}
    data = {lang: _read_mgsm_file(f) for lang, f in files.items()}
    first = langs[0]
    n = len(data[first][0])
    for lang in langs[1:]:
        m = len(data[lang][0])
        if m != n:
            raise ZhuntError(f"{files[lang]}:{min(m, n) + 1}",
                             f"ragged MGSM files: {m} problems here but {n} in {files[first].name} "
                             "(line i must be problem i in every language)")
        for i, (a, b) in enumerate(zip(data[first][1], data[lang][1])):
            if a != b:
                raise ZhuntError(f"{files[lang]}:{i + 1}",
                                 f"answer {b} differs from {files[first].name}:{i + 1} ({a}): "
                                 "the language files are not parallel")
    keep = n if limit is None else min(n, int(limit))
    for lang in langs:  # the same text rule as the hand-written tables
        for i, text in enumerate(data[lang][0][:keep]):
            check_text(f"{files[lang]}:{i + 1}", text, lang)
    df = pd.DataFrame({
        "id": [f"mgsm-{i}" for i in range(keep)],
        "category": [MGSM_CATEGORY] * keep,
        "answer": pd.array(data[first][1][:keep], dtype="int64"),
        **{lang: data[lang][0][:keep] for lang in langs},
    })
    digest = hashlib.sha256("".join(file_sha256(files[lang]) for lang in langs).encode()).hexdigest()
    df.attrs.update(path=str(folder), sha256=digest, lines=list(range(1, keep + 1)))
    return df


def write_prompt_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a wide prompt table (``id, category, answer, <languages>``) that
    :func:`load_prompt_table` reads back unchanged.

    Cells are written verbatim (no quoting: a double quote in a question stays
    a double quote), so a cell may hold neither a tab nor a newline.

    Raises
    ------
    ZhuntError
        If a cell holds a tab or a line break.
    """
    from zhunt.io import write_text

    cols = [*REQUIRED_COLUMNS, *[c for c in df.columns if c in KNOWN_LANGUAGES]]
    rows = ["\t".join(cols)]
    for r, values in enumerate(df[cols].astype(str).itertuples(index=False)):
        for col, v in zip(cols, values):
            if "\t" in v or "\n" in v or "\r" in v:
                raise ZhuntError(f"{path}", f"row {r + 1} column '{col}' holds a tab or line break")
        rows.append("\t".join(values))
    write_text(path, "\n".join(rows) + "\n")


# --------------------------------------------------------------------------- templates


def _yaml_line(root, keys: Sequence[str]) -> int:
    """1-based line of the deepest node reachable along ``keys`` in a composed YAML tree."""
    node, line = root, (root.start_mark.line + 1 if root is not None else 1)
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if getattr(k, "value", None) == key:
                node, line = v, k.start_mark.line + 1
                break
        else:
            break
    return line


def load_templates(path: str | os.PathLike) -> dict:
    """Read and validate a prompt-templates file.

    Layout (YAML)::

        version: 1
        families:
          <family>:
            kind: completion | chat
            prompt: {<lang>: "... {question} ..."}   # one per supported language
            shot: "..." | {<lang>: "..."}            # optional few-shot exemplar format
            system: "..." | {<lang>: "..."}          # chat only, optional
            chat_kwargs: {...}                       # chat only, optional

    For ``completion`` a shot holds ``{prompt}`` (the exemplar's own rendered prompt) and
    ``{answer}``; for ``chat`` a shot is the assistant reply and holds ``{answer}``.

    Parameters
    ----------
    path : str or os.PathLike
        The templates file.

    Returns
    -------
    dict
        ``{"path": str, "sha256": str, "families": {name: family}}``; each family has ``kind``,
        ``prompt`` (lang -> str), ``shot`` (lang -> str, or None), ``system`` (lang -> str, or
        None) and ``chat_kwargs`` (dict).

    Raises
    ------
    ZhuntError
        Naming ``path:line`` and the key for invalid YAML, a missing or empty ``families``, an
        unknown key or kind, a language that is not known, a prompt without exactly one
        ``{question}``, a shot without its placeholders or missing a prompt language, or a
        chat-only key in a completion family.
    """
    path = Path(path)
    text = "\n".join(_read_lines(path))
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ZhuntError(f"{path}:{line}", f"invalid YAML ({problem})") from None

    def fail(keys: Sequence[str], message: str):
        raise ZhuntError(f"{path}:{_yaml_line(root, keys)}", f"{'.'.join(keys) or '(top)'}: {message}")

    if not isinstance(data, dict):
        fail([], "expected a mapping with a 'families' key")
    unknown = set(data) - {"version", "families"}
    if unknown:
        fail([sorted(map(str, unknown))[0]], "unknown key (expected 'version' and 'families')")
    if data.get("version", 1) != 1:
        fail(["version"], f"unsupported version {data['version']!r} (expected 1)")
    fams = data.get("families")
    if not isinstance(fams, dict) or not fams:
        fail(["families"], "expected a non-empty mapping of family name -> templates")

    families = {str(name): _template_family(["families", str(name)], spec, fail) for name, spec in fams.items()}
    return {"path": str(path), "sha256": file_sha256(path), "families": families}


def _template_family(key: list, spec, fail) -> dict:
    """One checked family of a templates file (``key`` = ``["families", name]``): ``kind``,
    ``prompt``, ``shot``, ``system`` and ``chat_kwargs`` as :func:`load_templates` returns them."""
    if not isinstance(spec, dict):
        fail(key, "expected a mapping with 'kind' and 'prompt'")
    extra = set(map(str, spec)) - _FAMILY_KEYS
    if extra:
        fail(key + [sorted(extra)[0]], f"unknown key (expected some of {', '.join(sorted(_FAMILY_KEYS))})")
    kind = spec.get("kind")
    if kind not in _TEMPLATE_KINDS:
        fail(key + ["kind"], f"expected one of {', '.join(_TEMPLATE_KINDS)}, got {kind!r}")
    prompt = _lang_map(spec.get("prompt"), None, key + ["prompt"], fail, required=True)
    for lang, tmpl in prompt.items():
        if tmpl.count("{question}") != 1:
            fail(key + ["prompt", lang], "must contain {question} exactly once")
    shot = _lang_map(spec.get("shot"), list(prompt), key + ["shot"], fail)
    needed = ("{prompt}", "{answer}") if kind == "completion" else ("{answer}",)
    for lang, tmpl in (shot or {}).items():
        for ph in needed:
            if ph not in tmpl:
                fail(key + ["shot"], f"the '{lang}' shot format must contain {ph}")
    if kind == "completion":
        for chat_only in ("system", "chat_kwargs"):
            if chat_only in spec:
                fail(key + [chat_only], "only allowed in a chat family")
    system = _lang_map(spec.get("system"), list(prompt), key + ["system"], fail)
    chat_kwargs = spec.get("chat_kwargs") or {}
    if not isinstance(chat_kwargs, dict):
        fail(key + ["chat_kwargs"], "expected a mapping of keyword arguments")
    return {"kind": kind, "prompt": prompt, "shot": shot, "system": system, "chat_kwargs": dict(chat_kwargs)}


def _lang_map(value, languages, keys, fail, required: bool = False) -> dict[str, str] | None:
    """Normalise a template entry (a string, or a language -> string mapping) to a mapping.

    ``languages`` None: ``value`` must be a mapping and defines the languages; otherwise a string
    applies to all of ``languages`` and a mapping must cover all of them.
    """
    if value is None:
        if required:
            fail(keys, "missing (expected a mapping language -> template)")
        return None
    if isinstance(value, str):
        if languages is None:
            fail(keys, "expected a mapping language -> template")
        return {lang: value for lang in languages}
    if not isinstance(value, dict) or not value:
        fail(keys, "expected a string or a non-empty mapping language -> string")
    out: dict[str, str] = {}
    for lang, tmpl in value.items():
        lang = str(lang)
        if lang not in KNOWN_LANGUAGES:
            fail(keys + [lang], f"unknown language (expected one of {', '.join(KNOWN_LANGUAGES)})")
        if not isinstance(tmpl, str):
            fail(keys + [lang], "expected a string")
        out[lang] = tmpl
    for lang in languages or ():
        if lang not in out:
            fail(keys, f"no entry for language '{lang}' (the family's prompt has one)")
    return out


def _fill(template: str, **values: str) -> str:
    """Substitute ``{question}``/``{prompt}``/``{answer}`` (only those given); keep other text."""
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _family(templates: Mapping, family: str) -> dict:
    where = templates.get("path", "templates")
    fams = templates.get("families", {})
    if family not in fams:
        raise ZhuntError(where, f"unknown template family '{family}' (defined: {', '.join(fams)})")
    return fams[family]


def _exemplars(shots: pd.DataFrame | None, lang: str) -> list[tuple[str, str, int]]:
    """(id, text, answer) of each few-shot exemplar in language ``lang`` (wide or long table)."""
    if shots is None or len(shots) == 0:
        return []
    where = shots.attrs.get("path", "fewshot")
    if "lang" in shots.columns and "text" in shots.columns:
        sub = shots[shots["lang"] == lang]
        texts = sub["text"]
    else:
        if lang not in shots.columns:
            raise ZhuntError(where, f"few-shot table has no '{lang}' column")
        sub, texts = shots, shots[lang]
    if len(sub) == 0:
        raise ZhuntError(where, f"few-shot table has no '{lang}' exemplar")
    ids = sub["id"] if "id" in sub.columns else [""] * len(sub)
    return [(str(i), str(t), int(a)) for i, t, a in zip(ids, texts, sub["answer"])]


def render_prompt(question: str, lang: str, family: str, templates: Mapping,
                  shots: pd.DataFrame | None = None, tokenizer=None) -> str:
    """Build the text fed to a model for one question.

    Parameters
    ----------
    question : str
        The problem text in language ``lang``.
    lang : str
        Its language code.
    family : str
        Template family (a key of ``templates["families"]``, e.g. a model's ``template``).
    templates : Mapping
        The result of :func:`load_templates`.
    shots : pandas.DataFrame, optional
        Few-shot exemplars, rendered in ``lang`` with their answers before the question, in row
        order: a slice of a wide table from :func:`load_prompt_table` (uses column ``lang``) or of
        a long table from :func:`to_long` (uses the rows whose ``lang`` matches).
    tokenizer : optional
        Required by ``chat`` families: an object with ``apply_chat_template`` (a transformers
        tokenizer).

    Returns
    -------
    str
        The prompt text. For ``chat`` families it already contains the model's special tokens,
        so tokenize it with ``add_special_tokens=False``.

    Raises
    ------
    ZhuntError
        Unknown family, a language the family has no template for, shots requested from a family
        without a shot format, an exemplar identical to the question, or a chat family without a
        usable tokenizer chat template.
    """
    fam = _family(templates, family)
    where = templates.get("path", "templates")
    if lang not in fam["prompt"]:
        raise ZhuntError(where, f"families.{family}.prompt has no '{lang}' template "
                         f"(languages: {', '.join(fam['prompt'])})")
    exemplars = _exemplars(shots, lang)
    if exemplars and fam["shot"] is None:
        raise ZhuntError(where, f"families.{family} has no 'shot' format: it cannot be used with "
                         "few-shot exemplars (set n_shots to 0)")
    for ex_id, ex_text, _ in exemplars:
        if ex_text == question:
            raise ZhuntError(shots.attrs.get("path", "fewshot"),
                             f"few-shot exemplar '{ex_id}' is the question itself")
    prompt_t = fam["prompt"][lang]
    if fam["kind"] == "completion":
        parts = [_fill(fam["shot"][lang], prompt=_fill(prompt_t, question=t), answer=str(a))
                 for _, t, a in exemplars]
        parts.append(_fill(prompt_t, question=question))
        return "".join(parts)

    if tokenizer is None or not hasattr(tokenizer, "apply_chat_template"):
        raise ZhuntError(where, f"families.{family} is a chat family: it needs a tokenizer with "
                         "a chat template")
    messages: list[dict[str, str]] = []
    if fam["system"] is not None:
        messages.append({"role": "system", "content": fam["system"][lang]})
    for _, t, a in exemplars:
        messages.append({"role": "user", "content": _fill(prompt_t, question=t)})
        messages.append({"role": "assistant", "content": _fill(fam["shot"][lang], answer=str(a))})
    messages.append({"role": "user", "content": _fill(prompt_t, question=question)})
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             **fam["chat_kwargs"])
    except ValueError as exc:  # transformers: no chat template set on this tokenizer
        raise ZhuntError(where, f"families.{family}: the tokenizer cannot apply a chat template "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if not isinstance(text, str):
        raise ZhuntError(where, f"families.{family}: apply_chat_template returned "
                         f"{type(text).__name__}, expected str")
    return text


def render_prompts(long_df: pd.DataFrame, family: str, templates: Mapping,
                   fewshot: pd.DataFrame | None = None, n_shots: int = 0,
                   tokenizer=None) -> list[str]:
    """Render every row of a long prompt table (see :func:`to_long`).

    Parameters
    ----------
    long_df : pandas.DataFrame
        Columns ``lang`` and ``text`` (one row per problem x language).
    family : str
        Template family.
    templates : Mapping
        The result of :func:`load_templates`.
    fewshot : pandas.DataFrame, optional
        Few-shot table (wide, from :func:`load_prompt_table`); its first ``n_shots`` rows are the
        exemplars of every prompt, rendered in that prompt's language.
    n_shots : int, default 0
        Number of exemplars.
    tokenizer : optional
        For chat families.

    Returns
    -------
    list of str
        One prompt per row of ``long_df``, in order.

    Raises
    ------
    ZhuntError
        If ``n_shots`` is negative, larger than the few-shot table, or positive without a table;
        and everything :func:`render_prompt` raises.
    """
    if isinstance(n_shots, bool) or not isinstance(n_shots, int) or n_shots < 0:
        raise ZhuntError("n_shots", f"expected an integer >= 0, got {n_shots!r}")
    shots = None
    if n_shots > 0:
        if fewshot is None:
            raise ZhuntError("n_shots", f"n_shots = {n_shots} but no few-shot table was given")
        if n_shots > len(fewshot):
            raise ZhuntError(fewshot.attrs.get("path", "fewshot"),
                             f"n_shots = {n_shots} but the few-shot table has only {len(fewshot)} "
                             "exemplars")
        shots = fewshot.iloc[:n_shots]
    for col in ("lang", "text"):
        if col not in long_df.columns:
            raise ZhuntError("prompts", f"long prompt table lacks column '{col}' (use to_long)")
    return [render_prompt(text, lang, family, templates, shots=shots, tokenizer=tokenizer)
            for lang, text in zip(long_df["lang"], long_df["text"])]


# --------------------------------------------------------------------------- context length


def model_context_length(model) -> int | None:
    """The longest sequence a model's positions cover (``max_position_embeddings``), or None."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    n = getattr(cfg, "max_position_embeddings", None)
    return int(n) if n else None


def check_context_length(long_df: pd.DataFrame, prompts: Sequence[str], tokenizer, limit: int | None,
                         max_new_tokens: int = 0, add_special_tokens: bool = True) -> int:
    """Stop before a model sees a prompt longer than its context.

    Every rendered prompt (template + few-shot exemplars + question, as fed to the model) plus
    ``max_new_tokens`` generated tokens must fit in ``limit`` positions:
    ``len(tokenize(prompt)) + max_new_tokens <= limit``. Positions beyond the trained range are
    not an error in a forward pass; they silently give meaningless states.

    Parameters
    ----------
    long_df : pandas.DataFrame
        Long table (:func:`to_long`): ``id``, ``lang``; ``attrs`` ``path`` and ``lines`` of the
        wide table it came from (for ``path:line``).
    prompts : sequence of str
        The rendered prompts, one per row of ``long_df``.
    tokenizer
        A transformers tokenizer.
    limit : int or None
        The model's context (:func:`model_context_length`); None skips the check.
    max_new_tokens : int
        Tokens generated after the prompt (0 for a forward pass).
    add_special_tokens : bool
        As the prompts will be tokenized (False for chat templates).

    Returns
    -------
    int
        The longest prompt, in tokens.

    Raises
    ------
    ZhuntError
        ``path:line: prompt 'add-01' (zh): 180 tokens + 8 new tokens exceed the context of 128``
        for the first (in table order) prompt that does not fit.
    """
    if len(prompts) == 0:
        return 0
    ids = tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    lengths = [len(x) for x in ids]
    if limit is None:
        return max(lengths)
    path = long_df.attrs.get("path", "prompts")
    line_of = dict(zip(dict.fromkeys(long_df["id"]), long_df.attrs.get("lines") or []))
    for (pid, lang), n in zip(zip(long_df["id"], long_df["lang"]), lengths):
        if n + int(max_new_tokens) > int(limit):
            where = f"{path}:{line_of[pid]}" if pid in line_of else str(path)
            extra = f" + {int(max_new_tokens)} new tokens" if max_new_tokens else ""
            raise ZhuntError(where, f"prompt '{pid}' ({lang}): {n} tokens{extra} exceed the model's context "
                                    f"of {int(limit)} positions (max_position_embeddings); shorten it or "
                                    "lower the new-token budget")
    return max(lengths)

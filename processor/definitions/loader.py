"""Reading trigger documents from YAML/JSON files, with errors that point at the line.

A file holds one or more documents (YAML `---` separated, or a JSON object or list).
Each document is `{"trigger": {...}}` (the seed shape) or the bare trigger mapping.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import SafeConstructor

from processor.definitions.model import TriggerDocument
from processor.errors import DefinitionError

FILE_SUFFIXES = (".yaml", ".yml", ".json")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser where PyYAML was built with it: composing 100k documents took most
of the two minutes `triggers apply` spent on them with the pure-Python one."""


@dataclass(frozen=True)
class Located:
    """A document and where it came from."""

    document: TriggerDocument
    source: str


def _line_index(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[Any, ...], int]
) -> None:
    """Map every field path in a YAML node tree to its 1-based line."""
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            out[child] = key.start_mark.line + 1
            _line_index(value, child, out)
            out[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def _repeated_keys(node: yaml.Node, where: Path) -> Iterator[str]:
    """A key given twice in one mapping, which YAML parsers resolve by keeping the last
    silently: a field set one way and quietly read another."""
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode):
                if key.value in first:
                    yield (
                        f"{where}:{line}: `{key.value}` is given twice in one mapping (first at "
                        f"line {first[key.value]}); keep one"
                    )
                else:
                    first[key.value] = line
            yield from _repeated_keys(value, where)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _repeated_keys(item, where)


def _model_for(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc` (for "did you mean" hints)."""
    model: type[BaseModel] | None = TriggerDocument
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        args = getattr(annotation, "__args__", (annotation,))
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _hint(error: Any, loc: tuple[Any, ...]) -> str:
    if error["type"] != "extra_forbidden" or not loc:
        return ""
    model = _model_for(loc)
    if model is None:
        return ""
    names = list(model.model_fields)
    for field in model.model_fields.values():
        alias = field.validation_alias
        names.extend(str(c) for c in getattr(alias, "choices", ()))
    names = list(dict.fromkeys(names))  # a field whose alias is also its own name once
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f"; did you mean `{close[0]}`?" if close else f"; known fields: {', '.join(names)}"


def validation_problems(
    exc: ValidationError, source: str, lines: dict[tuple[Any, ...], int], prefix: tuple[Any, ...]
) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        line = next(
            (
                lines[(*prefix, *loc[:n])]
                for n in range(len(loc), -1, -1)
                if (*prefix, *loc[:n]) in lines
            ),
            None,
        )
        where = f"{source}:{line}" if line else source
        path = ".".join(str(p) for p in (*prefix, *loc)) or "(document)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(f"{where}: {path}: {message}{_hint(error, loc)}")
    return problems


def parse_document(
    raw: Any, source: str, lines: dict[tuple[Any, ...], int] | None = None
) -> TriggerDocument:
    """Validate one document (seed shape or bare); raises DefinitionError."""
    prefix: tuple[Any, ...] = ()
    if isinstance(raw, dict) and set(raw) == {"trigger"}:
        raw, prefix = raw["trigger"], ("trigger",)
    if not isinstance(raw, dict):
        raise DefinitionError([f"{source}: expected a mapping with a `trigger:` key"])
    try:
        return TriggerDocument.model_validate(raw)
    except ValidationError as exc:
        raise DefinitionError(validation_problems(exc, source, lines or {}, prefix)) from None


def _documents_in(
    path: Path,
) -> Iterator[tuple[Any, str, dict[tuple[Any, ...], int], list[str]]]:
    """Each document of a file: its value, where it is, its lines, and its problems of
    form (a key given twice), for which its value is not to be trusted."""
    text = path.read_text(encoding="utf-8")
    try:
        composed = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise DefinitionError(
            [f"{where}: not valid YAML/JSON: {getattr(exc, 'problem', exc)}"]
        ) from None
    nodes = [
        node  # not the empty ones, as after a trailing `---`
        for node in composed
        if node is not None and not (isinstance(node, yaml.ScalarNode) and node.value == "")
    ]
    for index, node in enumerate(nodes):
        source = f"{path}" if len(nodes) == 1 else f"{path} (document {index + 1})"
        repeated = list(_repeated_keys(node, path))
        if repeated:
            yield None, source, {}, repeated
            continue
        lines: dict[tuple[Any, ...], int] = {}
        _line_index(node, (), lines)
        value = SafeConstructor().construct_document(node)
        if isinstance(value, list):
            for i, item in enumerate(value):
                item_lines = {k[1:]: v for k, v in lines.items() if k[:1] == (i,)}
                yield item, f"{path} (item {i + 1})", item_lines, []
        else:
            yield value, source, lines, []


def load_paths(paths: list[Path]) -> list[Located]:
    """Every document in the files and directories named; all problems in one error."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in FILE_SUFFIXES))
        elif path.exists():
            files.append(path)
        else:
            raise DefinitionError([f"{path}: no such file or directory"])
    found: list[Located] = []
    problems: list[str] = []
    for file in files:
        try:
            for raw, source, lines, form in _documents_in(file):
                if form:
                    problems.extend(form)
                    continue
                try:
                    found.append(Located(parse_document(raw, source, lines), source))
                except DefinitionError as exc:
                    problems.extend(exc.problems)
        except DefinitionError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DefinitionError(problems)
    return found


def repeated_triggers(documents: list[tuple[TriggerDocument, str]]) -> list[str]:
    """Documents (resolved) that name one trigger twice: the same `id`, or no `id` and the
    same workspace and name. Applied, the last would silently replace the others."""
    first: dict[str, str] = {}
    problems = []
    for document, source in documents:
        if document.trigger_id not in first:
            first[document.trigger_id] = source
            continue
        problems.append(
            f"{source}: trigger {document.name!r} (id {document.trigger_id}) is also "
            f"defined by {first[document.trigger_id]}; define each trigger once: rename one, "
            "or give it its own `id`"
        )
    return problems

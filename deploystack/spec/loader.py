"""Read deploystack.yaml into a `Stack`, reporting every problem with its field path and line.

Pure apart from reading the one file: no Docker, no writes.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from deploystack.appdeps import requires_python
from deploystack.errors import Problem, SpecError, SpecFileError, UsageError
from deploystack.spec.models import DB_SYSTEM_NAMES, PYTHON_VERSIONS, Stack, db_role_name

Loc = tuple[int | str, ...]


def load_stack(path: Path) -> Stack:
    """Parse and validate the spec at `path`; raise SpecError listing every problem."""
    return validate_text(read_text(path), path)


def read_text(path: Path) -> str:
    name = str(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecFileError(name, [Problem("", f"spec file {name} not found (deploystack init writes one)")]) from None
    except IsADirectoryError:
        raise SpecFileError(name, [Problem("", f"spec file {name} is a folder; name the YAML file in it")]) from None
    except OSError as exc:
        raise SpecFileError(name, [Problem("", f"cannot read spec file {name}: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise SpecFileError(name, [Problem("", f"cannot read spec file {name}: {exc}")]) from None


def validate_text(text: str, path: Path) -> Stack:
    """Validate spec text that is (or is about to be) the file at `path`."""
    document = parse_yaml(text, str(path))
    try:
        stack = Stack.model_validate(document)
    except ValidationError as exc:
        problems = [_problem(err, document) for err in exc.errors()]
        raise SpecError(str(path), sorted(problems, key=lambda p: p.line or 0)) from None
    problems = cross_checks(stack, document, path.resolve().parent)
    if problems:
        raise SpecError(str(path), problems)
    return stack


def parse_yaml(text: str, name: str) -> CommentedMap:
    """The round-trip document (it keeps line numbers); syntax errors become Problems."""
    try:
        document = YAML(typ="rt").load(text)
    except DuplicateKeyError as exc:
        raise SpecError(name, [_duplicate_key(exc, text)]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise SpecError(name, [Problem("", f"YAML syntax error: {exc.problem or exc.context}", line)]) from None
    except YAMLError as exc:
        raise SpecError(name, [Problem("", f"YAML error: {exc}")]) from None
    if document is None:
        raise SpecError(name, [Problem("", "the spec is empty (deploystack init writes a starter)")])
    if not isinstance(document, CommentedMap):
        raise SpecError(name, [Problem("", "the spec must be a mapping of keys (project, apc, ...)", 1)])
    return document


def cross_checks(stack: Stack, document: CommentedMap, spec_dir: Path) -> list[Problem]:
    """Rules that span several apps, checked once each field is valid on its own."""
    problems: list[Problem] = []
    owner: dict[str, str] = {}
    for name, loc, route in _app_routes(stack):
        if route in owner:
            problems.append(
                Problem(dotted(loc), f"route {route!r} is already routed to app {owner[route]!r}",
                        line_of(document, loc))
            )
        owner.setdefault(route, name)
    reserved = {"/_lbc/": "the LBC's health check", "/_cdc/": "the deploy webhook (cdc)",
                 "/media/": "the media store (mmc)"}
    for _name, loc, route in _app_routes(stack):
        taken = next((what for prefix, what in reserved.items() if route.startswith(prefix)), None)
        if taken:
            problems.append(Problem(dotted(loc), f"route {route!r} is reserved for {taken}",
                                    line_of(document, loc)))
    for name, app in stack.apc.apps.items():
        if app.source is None:  # a git app: its checkout is checked when it is fetched
            continue
        loc = ("apc", "apps", name, "source")
        source = spec_dir / app.source
        if not (source / "manage.py").is_file():
            problems.append(Problem(dotted(loc), f"no Django project at {source} (manage.py not found)",
                                    line_of(document, loc)))
            continue
        problems += _python_pin(name, app.python, source, document)
    problems += _database_problems(stack, document)
    problems += _bucket_problems(stack, document)
    media_backups = stack.dbc.backups.media if stack.dbc.backups is not None else None
    if media_backups is not None and (not stack.mmc.enabled or stack.mmc.backend != "seaweedfs"):
        loc = ("dbc", "backups", "media")
        problems.append(Problem(dotted(loc), "copies the buckets of the stack's own SeaweedFS: enable mmc "
                                             "(backend: seaweedfs), or drop dbc.backups.media", line_of(document, loc)))
    offsite = stack.dbc.offsite
    if offsite is not None:
        lbc = stack.lbc
        same_address = lbc.bind in (offsite.bind, "0.0.0.0")
        if same_address and offsite.port in (lbc.ports.http, lbc.ports.https):
            loc = ("dbc", "offsite", "port")
            problems.append(Problem(dotted(loc), f"port {offsite.port} on {offsite.bind} is already the LBC's",
                                    line_of(document, loc)))
    return problems


def _bucket_problems(stack: Stack, document: CommentedMap) -> list[Problem]:
    """An app's own buckets are mmc.buckets other than the first (the shared media bucket)."""
    problems: list[Problem] = []
    for name, app in stack.apc.apps.items():
        for index, bucket in enumerate(app.buckets):
            loc: Loc = ("apc", "apps", name, "buckets", index)
            if not stack.mmc.enabled:
                why = "mmc is off: there is no bucket to give"
            elif bucket == stack.mmc.buckets[0]:
                why = f"{bucket!r} is the media bucket, which every app has already (under <app>/)"
            elif bucket not in stack.mmc.buckets:
                why = f"no bucket {bucket!r} in mmc.buckets ({', '.join(stack.mmc.buckets)})"
            else:
                continue
            problems.append(Problem(dotted(loc), why, line_of(document, loc)))
    return problems


def _database_problems(stack: Stack, document: CommentedMap) -> list[Problem]:
    """Each app's role and database name is free, and `database.shares` names an app with a database of
    its own (one owner per database: no chains, not itself)."""
    problems: list[Problem] = []
    apps = stack.apc.apps
    for name, app in apps.items():
        role = db_role_name(name)
        why = None
        if role in DB_SYSTEM_NAMES:
            why = f"its database role and database would be {role!r}, a name PostgreSQL or deploystack uses"
        elif stack.acc.rabbitmq.enabled and name in (stack.acc.rabbitmq.user, stack.acc.rabbitmq.vhost):
            why = (f"its RabbitMQ user and vhost would be {name!r}, which acc.rabbitmq.user or vhost names: "
                   f"rename the app, or set those")
        elif role in (stack.dbc.user, stack.dbc.database):
            why = (f"its database role and database would be {role!r}, which dbc.user or dbc.database names "
                   f"(the shared layout that `up` migrates from): rename the app, or set those")
        if why:
            loc: Loc = ("apc", "apps", name)
            problems.append(Problem(dotted(loc), why, line_of(document, loc)))
        shares = app.database.shares
        if shares is None:
            continue
        share_loc: Loc = ("apc", "apps", name, "database", "shares")
        if shares == name:
            why = "an app cannot share its own database; leave shares out"
        elif shares not in apps:
            close = difflib.get_close_matches(shares, list(apps), n=1)
            why = f"no app {shares!r} in apc.apps" + (f" (did you mean {close[0]!r}?)" if close else "")
        elif apps[shares].database.shares is not None:
            why = (f"app {shares!r} itself shares {apps[shares].database.shares!r}'s database: "
                   f"name that app instead")
        else:
            continue
        problems.append(Problem(dotted(share_loc), why, line_of(document, share_loc)))
    return problems


def _python_pin(name: str, python: str, source: Path, document: CommentedMap) -> list[Problem]:
    """The project's own requires-python must admit the app's Python (Django 6 needs 3.12 or later)."""
    try:
        pin = requires_python(name, source)
    except UsageError as exc:
        source_loc: Loc = ("apc", "apps", name, "source")
        return [Problem(dotted(source_loc), str(exc), line_of(document, source_loc))]
    if pin is None:
        return []
    from packaging.specifiers import InvalidSpecifier, SpecifierSet  # only for a project that pins its Python

    try:
        if SpecifierSet(pin).contains(f"{python}.0"):
            return []
    except InvalidSpecifier:
        return []  # pip will say so, with the project's own words
    others = [version for version in PYTHON_VERSIONS if SpecifierSet(pin).contains(f"{version}.0")]
    hint = f": use python: \"{others[0]}\"" if others else ""
    loc: Loc = ("apc", "apps", name, "python")
    return [Problem(dotted(loc), f"Python {python} does not satisfy the project's requires-python {pin!r} "
                                  f"(pyproject.toml){hint}", line_of(document, loc))]


def _app_routes(stack: Stack) -> list[tuple[str, Loc, str]]:
    """Every app's routes and websocket routes (each one an LBC location): (app, location, prefix)."""
    return [(name, ("apc", "apps", name, field, index), route)
            for name, app in stack.apc.apps.items()
            for field in ("routes", "websocket_routes")
            for index, route in enumerate(getattr(app, field))]


def line_of(document: Any, loc: Loc) -> int | None:
    """1-based line of the deepest node along `loc` that exists in the document."""
    line = None
    node = document
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    if line is None and isinstance(document, CommentedMap):
        line = document.lc.line + 1
    return line


def _problem(err: ErrorDetails, document: CommentedMap) -> Problem:
    loc = _clean_loc(err["loc"])
    return Problem(dotted(loc), _message(err, loc), line_of(document, loc))


def _clean_loc(loc: Loc) -> Loc:
    # pydantic adds "[key]" for errors in dict keys and a validator tag for unions; neither is a field.
    return tuple(p for p in loc if p != "[key]" and not (isinstance(p, str) and p.startswith("function-")))


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _message(err: ErrorDetails, loc: Loc) -> str:
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    got = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
    match kind:
        case "missing":
            return "required"
        case "extra_forbidden":
            return "unknown key" + _did_you_mean(loc)
        case "greater_than_equal":
            return f"must be ≥ {ctx['ge']}{got}"
        case "less_than_equal":
            return f"must be ≤ {ctx['le']}{got}"
        case "int_parsing" | "int_type" | "int_from_float":
            return f"must be a whole number{got}"
        case "bool_parsing" | "bool_type":
            return f"must be true or false{got}"
        case "string_type":
            return f"must be a string{got}"
        case "literal_error":
            return f"must be one of {ctx['expected']}{got}"
        case "string_pattern_mismatch":
            return f"has the wrong form{got}: expected to match {ctx['pattern']}"
        case "dict_type" | "model_type" | "model_attributes_type":
            return f"must be a mapping{got}"
        case "list_type":
            return f"must be a list{got}"
        case "too_short":
            return "must not be empty"
        case "value_error" | "assertion_error":
            return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return str(err["msg"])


def _did_you_mean(loc: Loc) -> str:
    model = _model_at(loc[:-1])
    if model is None or not loc:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class that holds the fields at `loc`, following dict values and optionals."""
    current: Any = Stack
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (dict, list):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if a is not type(None)]
        return models[0] if len(models) == 1 else annotation
    return annotation


def _duplicate_key(exc: DuplicateKeyError, text: str) -> Problem:
    mark = exc.problem_mark
    line = mark.line + 1 if mark is not None else None
    path = _path_by_indent(text.splitlines(), line) if line is not None else ""
    return Problem(path, "duplicate key: it is already set above in the same mapping", line)


def _path_by_indent(lines: list[str], line: int) -> str:
    """Dotted path of the block-style key on `line`, from the less indented keys above it."""

    def key_and_indent(text: str) -> tuple[str, int] | None:
        stripped = text.lstrip(" -")
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            return None
        return stripped.split(":", 1)[0].strip().strip("'\""), len(text) - len(stripped)

    found = key_and_indent(lines[line - 1])
    if found is None:
        return ""
    parts, indent = [found[0]], found[1]
    for text in reversed(lines[: line - 1]):
        above = key_and_indent(text)
        if above is not None and above[1] < indent:
            parts.insert(0, above[0])
            indent = above[1]
    return ".".join(parts)

"""The values of an app's environment that live outside the spec: `${NAME}` from the host environment and
the variables of its env files (dotenv, read with python-dotenv's parser).

Read when the stack is rendered, not when the spec is loaded: `down`, `ps` or `logs` need no secrets.
Pure apart from reading the env files; the environment is passed in. Every missing variable or file is
reported at once, each with its field path and line in the spec.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv.parser import parse_stream

from deploystack.errors import Problem, SpecError
from deploystack.spec.loader import Loc, dotted, line_of, parse_yaml, read_text
from deploystack.spec.models import ENV_NAME, Stack, env_value, has_references, host_references

HOST = "host"
ENV_FILE = "env_file"


@dataclass(frozen=True)
class ExternalValue:
    """One variable of an app whose value comes from outside the spec."""

    value: str
    source: str  # HOST or ENV_FILE
    origin: str  # the host variables (`$STRIPE_KEY`) or the env file (as the spec names it)


# app -> variable -> its value, in the order the app's environment gets them
AppEnv = dict[str, dict[str, ExternalValue]]


# (app, variable) -> the value an earlier generate resolved for it, if any
Previous = Callable[[str, str], str | None]


def resolve_app_env(stack: Stack, spec_path: Path, environ: Mapping[str, str],
                    previous: Previous | None = None) -> AppEnv:
    """Every app's env-file variables (shared files first, later files win) and `env` values that hold
    `${NAME}` references, resolved. Raises SpecError naming each missing variable and file.

    `previous`: only where the host's variables cannot be had (the CDC container): an `env` value whose
    variables are not set keeps the value an earlier generate resolved."""
    spec_dir = spec_path.resolve().parent
    problems: list[tuple[Loc, str]] = []
    files: dict[str, dict[str, str]] = {}
    for index, path in enumerate(stack.apc.env_file):
        _read_into(files, spec_dir, path, ("apc", "env_file", index), "", problems)
    resolved: AppEnv = {}
    for name, app in stack.apc.apps.items():
        for index, path in enumerate(app.env_file):
            _read_into(files, spec_dir, path, ("apc", "apps", name, "env_file", index), f"app {name}: ", problems)
        values: dict[str, ExternalValue] = {}
        for path in stack.apc.env_files_of(name):
            for key, value in files.get(path, {}).items():
                values.pop(key, None)  # a later file's value, in its own place
                values[key] = ExternalValue(value, ENV_FILE, path)
        for key, value in app.env.items():
            values.pop(key, None)  # the spec's own word is last
            if has_references(value):
                missing = [ref for ref in host_references(value) if ref not in environ]
                kept = previous(name, key) if missing and previous is not None else None
                if kept is not None:
                    values[key] = ExternalValue(kept, HOST, " ".join(f"${r}" for r in missing) + " (kept)")
                    continue
                for ref in missing:
                    problems.append((("apc", "apps", name, "env", key),
                                     f"app {name}: host environment variable {ref} is not set"))
                if not missing:
                    values[key] = ExternalValue(env_value(value, environ), HOST,
                                                " ".join(f"${r}" for r in dict.fromkeys(host_references(value))))
        resolved[name] = values
    if problems:
        document = parse_yaml(read_text(spec_path), str(spec_path))
        raise SpecError(str(spec_path), [Problem(dotted(loc), message, line_of(document, loc))
                                         for loc, message in problems])
    return resolved




def _read_into(files: dict[str, dict[str, str]], spec_dir: Path, path: str, loc: Loc, who: str,
               problems: list[tuple[Loc, str]]) -> None:
    if path in files:
        return
    full = spec_dir / path
    try:
        text = full.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append((loc, f"{who}env file {full} not found"))
        return
    except (OSError, UnicodeDecodeError) as exc:
        problems.append((loc, f"{who}cannot read env file {full}: {exc}"))
        return
    values, errors = parse_env_text(text)
    problems += [(loc, f"{who}env file {full} {error}") for error in errors]
    files[path] = values


def parse_env_text(text: str) -> tuple[dict[str, str], list[str]]:
    """A dotenv file's variables, taken as written (no `${}` expansion inside env files), and what is
    wrong with it (`line N: ...`), as python-dotenv parses it."""
    values: dict[str, str] = {}
    errors: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            errors.append(f"line {line}: cannot parse {binding.original.string.strip()!r}")
        elif binding.key is None:
            continue  # a comment or a blank line
        elif not ENV_NAME.match(binding.key):
            errors.append(f"line {line}: {binding.key!r} is not a valid environment variable name")
        elif binding.value is None:
            errors.append(f"line {line}: {binding.key} has no value (write {binding.key}= for an empty one)")
        else:
            values[binding.key] = binding.value
    return values, errors

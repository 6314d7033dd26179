"""An app's git source: fetch its branch and check out one commit, in a checkout of deploystack's own.

The checkout (`<output>/.deploystack/src/<app>`) is what the app's image is built from, so it always
holds the commit that is deployed: `deploy` moves it, `up` and `generate` read it as it is. git runs
with an argument list (never a shell), and a ref is checked before it reaches git.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from deploystack.errors import StackError, UsageError
from deploystack.spec.models import GitSource

# A commit (4 to 40 hex digits) or a branch/tag name; never an option.
REF = re.compile(r"^(?:[0-9a-fA-F]{4,40}|(?!-)(?!.*\.\.)[A-Za-z0-9._/-]+)$")
TIMEOUT_S = 300


def checkout_dir(output: Path, app: str) -> Path:
    return output / ".deploystack" / "src" / app


def resolve_url(url: str, spec_dir: Path) -> str:
    """URLs (`scheme://`, `user@host:path`) as they are; a plain path relative to the spec's folder."""
    if "://" in url or re.match(r"^[\w.-]+@[\w.-]+:", url):
        return url
    return str((spec_dir / url).resolve())


def check_ref(ref: str) -> str:
    if not REF.match(ref):
        raise UsageError(f"--ref {ref[:80]!r} is not a commit id or a branch name")
    return ref


class NotDescendant(UsageError):
    """A pushed commit that does not follow the deployed one: an old push replayed, or history rewritten.
    The webhook's deploys refuse it; `deploystack deploy --ref` by hand does not ask."""


def fetch(app: str, source: GitSource, spec_dir: Path, output: Path, ref: str | None,
          descendant_of: str | None = None) -> str:
    """Fetch the app's branch and check out `ref` (default: the branch's head); returns the commit id.

    `descendant_of`: refuse (NotDescendant, before the checkout moves) a commit that is not a descendant
    of this one, or is this one."""
    dest = checkout_dir(output, app)
    url = resolve_url(source.url, spec_dir)
    remote_branch = f"refs/remotes/origin/{source.branch}"
    if not (dest / ".git").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        _git(app, ["init", "--quiet", str(dest)])
    _git(app, ["-C", str(dest), "fetch", "--quiet", "--no-tags", "--force", "--", url,
               f"+refs/heads/{source.branch}:{remote_branch}"])
    wanted = check_ref(ref) if ref else remote_branch
    try:
        sha = _git(app, ["-C", str(dest), "rev-parse", "--verify", "--quiet", f"{wanted}^{{commit}}"])
    except StackError:
        raise UsageError(f"{app}: {ref} is not a commit on branch {source.branch} of {source.url}") from None
    if descendant_of is not None and not is_descendant(app, dest, sha, descendant_of):
        what = "is the deployed commit" if sha == descendant_of else "is not a descendant of"
        raise NotDescendant(f"{app}: refusing {sha[:12]}: it {what} {descendant_of[:12]}"
                            + ("" if sha == descendant_of else " (the deployed commit)")
                            + f"; deploy it by hand with deploystack deploy {app} --ref {sha}")
    _git(app, ["-C", str(dest), "checkout", "--quiet", "--force", "--detach", sha])
    _git(app, ["-C", str(dest), "clean", "--quiet", "-ffdx"])
    if not (dest / "manage.py").is_file():
        raise UsageError(f"{app}: commit {sha[:12]} of {source.url} has no manage.py at its top "
                         "(the repository must be the Django project)")
    return sha


def is_descendant(app: str, checkout: Path, commit: str, ancestor: str) -> bool:
    """`commit` comes after `ancestor` in history (git merge-base --is-ancestor), and is not it."""
    if commit == ancestor:
        return False
    done = _run(app, ["-C", str(checkout), "merge-base", "--is-ancestor", ancestor, commit])
    if done.returncode not in (0, 1):  # 1: not an ancestor; else an error (an unknown commit)
        raise StackError(f"{app}: git merge-base failed: " + _last_line(done))
    return done.returncode == 0


def head(output: Path, app: str) -> str | None:
    """The commit the app's checkout holds, or None before its first fetch."""
    dest = checkout_dir(output, app)
    if not (dest / ".git").is_dir():
        return None
    try:
        return _git(app, ["-C", str(dest), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
    except StackError:
        return None


def _git(app: str, args: list[str]) -> str:
    done = _run(app, args)
    if done.returncode != 0:
        raise StackError(f"{app}: git {_command(args)} failed: " + _last_line(done))
    return done.stdout.strip()


def _run(app: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=TIMEOUT_S,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise UsageError("git is not installed (apt-get install git)") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"{app}: git {_command(args)} took over {TIMEOUT_S}s") from None


def _command(args: list[str]) -> str:
    return args[2] if args[0] == "-C" else args[0]


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stderr.strip().splitlines() or ["(no output)"])[-1]

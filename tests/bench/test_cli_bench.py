"""The CLI's own speed (issue 15): process time (user + system CPU of the child process, the median of
RUNS) of `deploystack --help`, `validate` and `generate` (a second run, nothing to write) on the default
blueprint, and, as the peer in the same run, Compose v2's `docker compose config` on generate's own
output. The children run with their bytecode cached, as an installed deploystack has it (this machine's
PYTHONDONTWRITEBYTECODE would make every run compile the package again). Table on stdout, JSON in
bench-results/cli.json. Targets: --help and validate within 0.15 s, generate within 2x compose config.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.conftest import publish
from tests.conftest import BLUEPRINTS

REPO = Path(__file__).resolve().parents[2]
RESULTS_FILE = REPO / "bench-results" / "cli.json"
RUNS = 7
TARGET_S = 0.15
TARGET_RATIO = 2.0


def compose_v2() -> str:
    found = subprocess.run([REPO / "scripts" / "compose-v2.sh"], capture_output=True, text=True, timeout=300)
    if found.returncode != 0:
        pytest.skip(f"no Compose v2 binary: {found.stderr.strip()}")
    return found.stdout.strip()


def cpu_seconds(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    """The child's user + system CPU time: what the process cost, whatever else the machine runs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_cpu(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    cpu_seconds(command, cwd, env)  # warm: bytecode written, file caches filled
    return statistics.median(cpu_seconds(command, cwd, env) for _ in range(RUNS))


def test_cli_process_time_and_generate_against_compose_config(tmp_path: Path) -> None:
    compose = compose_v2()
    project = tmp_path / "default"
    shutil.copytree(BLUEPRINTS / "default", project)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cli = [sys.executable, "-m", "deploystack"]
    spec = ["-f", "deploystack.yaml"]
    subprocess.run([*cli, "generate", *spec], cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)
    times = {
        "--help": median_cpu([*cli, "--help"], project, env),
        "validate": median_cpu([*cli, "validate", *spec], project, env),
        "generate": median_cpu([*cli, "generate", *spec], project, env),
        "compose config": median_cpu([compose, "-f", "stack/compose.yaml", "config"], project, env),
    }
    ratio = times["generate"] / times["compose config"]
    rows = [f"{'command':32} {'CPU s (median of ' + str(RUNS) + ')':>22} {'target':>12}"]
    targets = {"--help": f"<= {TARGET_S}", "validate": f"<= {TARGET_S}", "generate": "", "compose config": ""}
    for name, seconds in times.items():
        label = name if name == "compose config" else f"deploystack {name}"
        rows.append(f"{label:32} {seconds:>22.3f} {targets[name]:>12}")
    rows.append(f"generate / compose config: {ratio:.1f}x (target: within {TARGET_RATIO:.0f}x)")
    publish({"cpu_s": {k: round(v, 4) for k, v in times.items()}, "generate_vs_compose_config": round(ratio, 2),
             "runs": RUNS, "compose": subprocess.run([compose, "version", "--short"], capture_output=True,
                                                      text=True).stdout.strip(),
             "targets": {"help_s": TARGET_S, "validate_s": TARGET_S, "generate_ratio": TARGET_RATIO}},
            "\n".join(rows), RESULTS_FILE)

"""The programs a benchmark runs: where they are found or installed, and their environment."""

from __future__ import annotations

import argparse
import compileall
import functools
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import mediad

# nginx lives in /usr/sbin, which a non-root PATH often lacks.
_SBIN = "/usr/sbin:/usr/local/sbin:/sbin"


def find(name: str) -> str | None:
    """`name` beside this Python (a venv's scripts: s5cmd, aws, py-spy), else on PATH or sbin."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + _SBIN)


def require(name: str, hint: str) -> str:
    """`find(name)`, or exit saying how to get it."""
    found = find(name)
    if found is None:
        raise SystemExit(f"{name} is not installed: {hint}")
    return found


def require_all(
    needed: Mapping[str, str], install: Sequence[Sequence[str]] | None, how: str
) -> dict[str, str]:
    """The path of every program in `needed` (name: what it is for), installing the missing with
    `apt_install(*install)` when given; else exit naming them and `how` to install them."""
    missing = sorted(name for name in needed if find(name) is None)
    if missing and install:
        print(f"installing {', '.join(missing)} with apt-get ...", flush=True)
        apt_install(*install)
        missing = sorted(name for name in needed if find(name) is None)
    if missing:
        lines = [f"  {name}: needed for {needed[name]}" for name in missing]
        raise SystemExit("missing programs:\n" + "\n".join(lines) + "\n" + how)
    return {name: path for name in needed if (path := find(name)) is not None}


def add_mediad_command(parser: argparse.ArgumentParser) -> None:
    """--mediad-command: another mediad to run (a build to compare, a wrapper), as words."""
    parser.add_argument(
        "--mediad-command",
        type=shlex.split,
        metavar="CMD",
        help="the mediad to run, e.g. '/opt/mediad/.venv/bin/mediad' (default: MEDIAD_ALONE's)",
    )


# This tree's mediad installed with its own dependencies alone (the Makefile's bench set-up makes
# it). The benchmarks' environment also holds the peers' packages, and one changes mediad: rich
# (pgqueuer's CLI brings it through typer), which structlog imports whenever it is there, costs
# every mediad process, decoder workers included, 40-65 ms of start that a user's install,
# which has no rich, never pays.
MEDIAD_ALONE = Path(__file__).resolve().parents[2] / ".venv" / "mediad-alone" / "bin" / "mediad"


def mediad_command() -> list[str]:
    """The mediad to measure (`_mediad_script`), its modules byte-compiled as an installed
    package's are."""
    compile_mediad()
    return list(_mediad_script())


@functools.cache
def _mediad_script() -> tuple[str, ...]:
    """MEDIAD_ALONE where it is installed, else this Python's environment's mediad (its console
    script, else `python -m mediad`), saying so once."""
    if MEDIAD_ALONE.exists():
        return (str(MEDIAD_ALONE),)
    print(
        f"note: {MEDIAD_ALONE} is not installed (make .venv/.installed-bench makes it): mediad"
        " runs from this environment, among the peers' packages",
        file=sys.stderr,
    )
    script = Path(sys.executable).parent / "mediad"
    return (str(script),) if script.exists() else (sys.executable, "-m", "mediad")


@functools.cache
def compile_mediad() -> None:
    """Byte-compile mediad's own modules. pip compiles a package it installs, and Python caches
    what it imports, but an editable install run with PYTHONDONTWRITEBYTECODE (as some CI and
    sandboxes set) compiles every module again at every start: about 0.1 s of each run that a
    user's installed mediad never pays, and no peer's binary does."""
    compileall.compile_dir(str(Path(mediad.__file__).parent), quiet=1)


def apt_install(*choices: Sequence[str]) -> None:
    """apt-get update, then install the first of `choices` (package lists) that installs."""
    if os.geteuid() != 0:
        raise SystemExit("--install-tools needs root (apt-get); run it with sudo")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    for packages in choices[:-1]:
        if subprocess.run(["apt-get", "install", "-y", "-q", *packages], env=env).returncode == 0:
            return
    subprocess.run(["apt-get", "install", "-y", "-q", *choices[-1]], check=True, env=env)


def clean_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """This environment without what a run must not inherit (MEDIAD_*, AWS_*, proxies), plus
    `settings`: a run's configuration comes from the benchmark alone."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MEDIAD_", "AWS_")) and key not in ("http_proxy", "https_proxy")
    }
    # The HTTP endpoint stays off unless a run asks for it: runs side by side must not contend
    # for its port.
    return env | {"MEDIAD_HTTP_LISTEN": ""} | dict(settings)

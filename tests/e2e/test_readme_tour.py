"""The README's five-minute tour, run as written, so the README and the CLI cannot drift apart.

A fresh virtual environment gets a plain (non-editable) ``pip install`` of this repository; its
dependencies come from the test environment through a ``.pth`` line and the wheel is built with
its build backend, so nothing is downloaded. Every line of the tour then runs, in order, in a new
empty folder with that environment's ``closedloop`` script; each must exit as listed below and
print the listed line. A line added to the tour without an entry here fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
PORT_IN_README = "8080"
TIMEOUT = 600  # seconds for one line: training on a loaded machine can take minutes

# Every line of the README's tour, in order: (the line, its exit code, a line of its output).
# A line ending in `&` runs in the background until `kill %1`; its exit code and output line
# are checked then. The README's port 8080 is replaced by a free one.
TOUR: list[tuple[str, int, str]] = [
    ("closedloop init", 0, r"^wrote closedloop\.toml, pipeline\.py, data/loans\.parquet"),
    ("closedloop train", 0, r"^production → v1$"),
    ("closedloop train", 0, r"^production unchanged$"),
    ("closedloop models", 0, r"\bloans\b.*\bproduction→v1\b"),
    ("closedloop versions loans", 0, r"^versions of loans"),
    ("closedloop runs", 0, r"\btrain-loans\b.*\bFINISHED\b"),
    ("closedloop history loans", 0, r"^history of loans"),
    (
        "closedloop drift data/loans.parquet data/recent.parquet",
        1,
        r"^DRIFT: per-column drift in \d+ of \d+ columns",
    ),
    (
        "closedloop drift data/loans.parquet data/recent.parquet --html drift.html",
        1,
        r"^report written to drift\.html$",
    ),
    # stopped by `kill %1` (SIGTERM): it shuts down cleanly, then exits by that signal
    (
        "closedloop serve --port 8080 &",
        -signal.SIGTERM,
        r"^closedloop serving loans on http://127\.0\.0\.1:",
    ),
    (
        'curl -s localhost:8080/invocations -H "Content-Type: text/csv" '
        "--data-binary @data/recent.csv",
        0,
        r'^\{"predictions":\[',
    ),
    ("closedloop monitor loans", 1, r"^DRIFT: per-column drift in \d+ of \d+ columns"),
    ("closedloop report loans", 0, r"^report written to loans-report\.html$"),
    (
        "closedloop rollout start loans 2 --canary 10 --steps 10,25,50,100 --step-duration 10m",
        0,
        r"^loans: canary.started\b.*\bv2\b",
    ),
    ("closedloop rollout evaluate loans", 0, r"^loans: wait\b"),
    ("closedloop rollout status loans", 0, r"^loans: canary v2 at 10 % \(step 1 of 4: 10 → 25"),
    ("closedloop rollout abort loans", 0, r"^loans: aborted\b"),
    ("closedloop rollout start loans 2 --shadow", 0, r"^loans: shadow.started\b.*\bv2\b"),
    ("closedloop rollout stop-shadow loans", 0, r"^loans: shadow.stopped\b"),
    (
        'closedloop alias set loans production 2 --force --reason "hotfix"',
        0,
        r"^loans@production: v1 → v2$",
    ),
    ("closedloop alias list loans", 0, r"\bproduction\b.*\bv2\b.*\bhotfix\b"),
    ("closedloop rollback loans", 0, r"^loans: production rolled back from v2 to v1\b"),
    ('closedloop retrain --reason "try"', 0, r"^retrain of 'loans' requested\b"),
    ("closedloop agent --once", 0, r"^gate_rejected: request_id="),
    ("closedloop agent status", 0, r"\bmanual\b.*\brejected\b"),
    ("closedloop alerts", 0, r"\bgate_rejected\b"),
    ("kill %1", 0, r""),  # checks the background job's exit code and line
]


def readme_tour() -> list[str]:
    """The lines of the README's tour block, without their comments."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## A five-minute tour", 1)[1]
    block = section.split("```", 2)[1]
    lines = (re.sub(r"\s{2,}#.*$", "", raw).strip() for raw in block.splitlines())
    return [line for line in lines if line]


def test_the_tour_lists_exactly_the_lines_this_test_runs() -> None:
    assert readme_tour() == [line for line, _, _ in TOUR]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with closedloop pip-installed from a copy of this repository."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    env = plain_env()
    target = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(target)], env=env, check=True)
    python = target / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    here = sysconfig.get_paths()
    dependencies = dict.fromkeys([here["purelib"], here["platlib"]])
    (Path(site) / "test-dependencies.pth").write_text("\n".join(dependencies) + "\n")
    # the wheel is built by the test environment's own build backend: nothing is downloaded
    wheels = base / "dist"
    offline = ["--quiet", "--no-deps", "--no-index", "--no-build-isolation"]
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *offline, "--wheel-dir", str(wheels), str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("closedloop-*.whl")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    where = subprocess.run(
        [str(python), "-c", "import closedloop; print(closedloop.__file__)"],
        env=env,
        cwd=base,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(target), f"closedloop imported from {where}, not the venv"
    return target


def plain_env(venv: Path | None = None) -> dict[str, str]:
    """The environment without the test environment's settings, paths and virtualenv."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_") and k not in drop}
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    return env


class Background:
    """The tour's one background job (`closedloop serve … &`)."""

    def __init__(self, line: str, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.line, self.process, self.url, self.log = line, process, url, log

    def wait_ready(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.line!r} never answered /ping")

    def wait_logged(self) -> None:
        """Until every answered prediction is in the prediction log (what `monitor` reads)."""
        pending = re.compile(r"^closedloop_prediction_log_pending_rows (\S+)$", re.MULTILINE)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            match = pending.search(httpx.get(f"{self.url}/metrics", timeout=10).text)
            if match is not None and float(match.group(1)) == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("the prediction log never caught up")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=TIMEOUT)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.mark.timeout(2400)  # some twenty subprocesses, three of which train, on a shared machine
def test_the_readme_tour_runs_as_written(venv: Path, tmp_path: Path) -> None:
    assert readme_tour() == [line for line, _, _ in TOUR]
    folder = tmp_path / "my-project"
    folder.mkdir()
    env = plain_env(venv)
    port = str(free_port())
    job: Background | None = None
    try:
        for line, exit_code, expected in TOUR:
            command = line.replace(PORT_IN_README, port)
            if command.endswith("&"):
                argv = shlex.split(command[:-1])
                log = folder.parent / "background.log"
                with log.open("wb") as sink:
                    process = subprocess.Popen(
                        [str(venv / "bin" / argv[0]), *argv[1:]],
                        cwd=folder,
                        env=env,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
                job = Background(line, process, f"http://127.0.0.1:{port}", log)
                job.wait_ready()
                continue
            if command == "kill %1":
                assert job is not None, "kill %1 without a background job"
                code = job.stop()
                out = job.output()
                job_line = next(t for t in TOUR if t[0] == job.line)
                assert code == job_line[1], (job.line, code, out)
                assert re.search(job_line[2], out, re.MULTILINE), (job.line, out)
                job = None
                continue
            argv = shlex.split(command)
            program = venv / "bin" / argv[0] if argv[0] == "closedloop" else argv[0]
            done = subprocess.run(
                [str(program), *argv[1:]],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
            out = done.stdout + done.stderr
            assert done.returncode == exit_code, (line, done.returncode, out)
            assert re.search(expected, out, re.MULTILINE), (line, expected, out)
            if job is not None:
                job.wait_logged()
    finally:
        if job is not None and job.process.poll() is None:
            job.process.kill()
            job.process.wait(timeout=60)

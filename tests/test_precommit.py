"""The pre-commit hook as pre-commit runs it (`pre-commit try-repo` on this repository) in a
repository that holds a pipeline, a docker-compose.yml and a GitHub workflow: the pipeline is
checked, the other YAML files are skipped, and a broken pipeline fails the hook. Also
`runner validate --skip-non-pipelines`, which the hook runs, file kind by file kind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, RunCli, no_traceback

CACHE = REPO / ".cache"

PIPELINE = "version: 1\nname: p\nsteps:\n  - id: a\n    uses: noop\n"
BROKEN = "version: 1\nname: b\nsteps:\n  - id: a\n    uses: noop\n    timout: 5s\n"
COMPOSE = 'version: "3.8"\nservices:\n  web:\n    image: nginx\n    ports: ["80:80"]\n'
WORKFLOW = (
    "name: ci\non: [push]\njobs:\n  test:\n    runs-on: ubuntu-latest\n"
    "    steps:\n      - uses: actions/checkout@v4\n      - run: make test\n"
)
MANIFESTS = "apiVersion: v1\nkind: Namespace\n---\napiVersion: v1\nkind: Service\n"


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_skip_non_pipelines_checks_pipelines_only(run_cli: RunCli, tmp_path: Path) -> None:
    files = {
        "docker-compose.yml": COMPOSE,
        ".github/workflows/ci.yml": WORKFLOW,
        "k8s.yaml": MANIFESTS,
        "etl.yaml": PIPELINE,
        "b.yaml": BROKEN,
        "typo.runner.yaml": "version: 1\nname: t\nstesp: []\n",  # a pipeline by its name
        "syntax.yaml": "version: 1\nsteps: [\n",  # a pipeline by its top-level keys
    }
    write(tmp_path, files)
    result = run_cli("validate", "--skip-non-pipelines", *files)
    assert result.code == 2, result.output
    assert no_traceback(result.output)
    assert result.stdout == "etl.yaml: ok (1 step)\n"
    named = {line.split(":")[0] for line in result.stderr.splitlines() if ": error: " in line}
    assert named == {"b.yaml", "typo.runner.yaml", "syntax.yaml"}
    assert "b.yaml:6:5: error: steps[0].timout: unknown key 'timout'" in result.stderr
    others = ("docker-compose.yml", ".github/workflows/ci.yml", "k8s.yaml")
    skipped = run_cli("validate", "--skip-non-pipelines", *others)
    assert (skipped.code, skipped.output) == (0, "")
    plain = run_cli("validate", "docker-compose.yml")  # without the option: an error
    assert plain.code == 2
    assert "unknown key 'services'" in plain.stderr


@pytest.fixture(scope="module")
def pre_commit() -> str:
    """The pre-commit command: the one on PATH, or one installed under .cache/ (not committed)."""
    found = shutil.which("pre-commit")
    if found:
        return found
    venv = CACHE / "pre-commit-venv"
    exe = venv / "bin" / "pre-commit"
    if not exe.exists():
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "pre-commit"],
        ]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)
            if proc.returncode != 0:
                pytest.skip(f"pre-commit could not be installed (offline?): {proc.stderr[-300:]}")
    return str(exe)


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


@pytest.mark.slow
def test_the_hook_under_pre_commit_skips_other_yaml(pre_commit: str, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    write(
        root,
        {
            "pipelines/etl.yaml": PIPELINE,
            "docker-compose.yml": COMPOSE,
            ".github/workflows/ci.yml": WORKFLOW,
        },
    )
    git(root, "add", "-A")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "VIRTUAL_ENV"))},
        "PRE_COMMIT_HOME": str(CACHE / "pre-commit-home"),
    }

    def try_repo() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [pre_commit, "try-repo", str(REPO), "runner-validate", "--all-files", "--verbose"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    passed = try_repo()
    if passed.returncode == 3 or "An unexpected error has occurred" in passed.stdout:
        pytest.skip(f"pre-commit could not install the hook's environment:\n{passed.stdout}")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "pipelines/etl.yaml: ok (1 step)" in passed.stdout
    assert "docker-compose" not in passed.stdout
    assert "ci.yml" not in passed.stdout

    write(root, {"pipelines/broken.yaml": BROKEN})
    git(root, "add", "-A")
    failed = try_repo()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "pipelines/broken.yaml:6:5: error: steps[0].timout: unknown key 'timout'" in (
        failed.stdout
    )
    assert "docker-compose" not in failed.stdout

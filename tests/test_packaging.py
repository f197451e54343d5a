"""The project as a user installs it: the built sdist and wheels, installed outside the checkout or
put on sys.path as zip files, `python -m pipeline_runner`, plugin discovery through
importlib.metadata, and the one-line refusal on an OS without what running steps needs.

The fresh environments are real venvs with nothing of this checkout in them: the dependencies
(PyYAML, click, ...) are linked in from the test venv, this project's own distributions are not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from conftest import REPO, no_traceback

from pipeline_runner.plugins import BUILTINS, DISTRIBUTION, GROUP, Registry

# One worker of `pytest -n` runs them all, so the sdist and wheels are built once.
pytestmark = pytest.mark.xdist_group("packaging")

OURS = ("yaml_pipeline_runner", "_yaml_pipeline_runner", "runner_sqlite", "_runner_sqlite")

PIPELINE = textwrap.dedent(
    """\
    version: 1
    name: installed
    params:
      who: world
    steps:
      - id: greet
        uses: shell
        with:
          cmd: echo "hello {{ params.who }}" > greeting.txt
      - id: sum
        uses: checksum
        needs: [greet]
        with:
          paths: [greeting.txt]
    """
)


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and wheel of the project and the wheel of the plugin example, built as
    `make dist` builds them."""
    out = tmp_path_factory.mktemp("dist")
    for source in (REPO, REPO / "plugins" / "runner-sqlite"):
        subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
            check=True,
            capture_output=True,
        )
    found = {p.name: p for p in out.iterdir()}
    return {
        "sdist": next(
            p
            for n, p in found.items()
            if n.startswith("yaml_pipeline_runner-") and n.endswith(".tar.gz")
        ),
        "wheel": next(
            p
            for n, p in found.items()
            if n.startswith("yaml_pipeline_runner-") and n.endswith(".whl")
        ),
        "plugin": next(
            p for n, p in found.items() if n.startswith("runner_sqlite-") and n.endswith(".whl")
        ),
    }


@pytest.fixture(scope="module")
def deps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with every installed distribution but this project's own (links to them)."""
    site = Path(sysconfig.get_paths()["purelib"])
    folder = tmp_path_factory.mktemp("deps")
    for entry in site.iterdir():
        if entry.name.startswith(OURS) or entry.name.startswith("__editable__"):
            continue
        if entry.suffix == ".pth":  # the editable installs' path hooks
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def fresh_venv(where: Path, deps: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    purelib = subprocess.run(
        [
            str(where / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text(f"{deps}\n")
    return where / "bin" / "python"


def pip_install(python: Path, *wheels: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-index",
            *map(str, wheels),
        ],
        check=True,
    )


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "PYTHON"))}
    return subprocess.run(
        argv, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def test_the_sdist_holds_the_source_tests_and_examples_and_one_readme(
    dists: dict[str, Path],
) -> None:
    with tarfile.open(dists["sdist"]) as tar:
        names = {n.partition("/")[2] for n in tar.getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= names
    assert "pipeline_runner/cli.py" in names
    assert "pipeline_runner/data/pipeline.schema.json" in names
    assert "tests/conftest.py" in names and "pipelines/hello.yaml" in names
    assert [n for n in names if n.endswith("README.md")] == ["README.md"]
    assert not [n for n in names if "__pycache__" in n or n.startswith("plugins/")]


def test_the_wheel_ships_the_license_and_the_entry_points(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = set(whl.namelist())
        info = next(n.partition("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(f"{info}/METADATA").decode()
        points = whl.read(f"{info}/entry_points.txt").decode()
    assert f"{info}/licenses/LICENSE" in names
    assert "pipeline_runner/data/pipeline.schema.json" in names
    assert "Name: yaml-pipeline-runner" in metadata
    assert "License-Expression: MIT" in metadata
    assert "Classifier: Operating System :: POSIX :: Linux" in metadata
    assert "Project-URL: Source," in metadata
    for name, value in BUILTINS.items():
        assert f"{name} = {value}" in points


def test_an_installed_wheel_runs_a_pipeline_outside_the_checkout(
    dists: dict[str, Path], deps: Path, tmp_path: Path
) -> None:
    python = fresh_venv(tmp_path / "venv", deps)
    pip_install(python, dists["wheel"])
    runner = str(python.with_name("runner"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "p.yaml").write_text(PIPELINE.replace("uses: checksum", "uses: noop"))

    listed = run([runner, "plugins", "--json"], work)
    assert listed.returncode == 0, listed.stderr
    assert "sqlite" not in listed.stdout and '"shell"' in listed.stdout

    done = run([runner, "run", "p.yaml", "--param", "who=wheel"], work)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (work / "greeting.txt").read_text() == "hello wheel\n"
    # The package ran from the venv, not from the checkout.
    where = run(
        [str(python), "-c", "import pipeline_runner; print(pipeline_runner.__file__)"], work
    )
    assert where.stdout.startswith(str(tmp_path / "venv"))

    pip_install(python, dists["plugin"])
    listed = run([runner, "plugins"], work)
    assert listed.returncode == 0 and "runner-sqlite" in listed.stdout
    (work / "p.yaml").write_text(PIPELINE)
    done = run([runner, "run", "p.yaml"], work)
    assert done.returncode == 0, done.stdout + done.stderr


def test_wheels_on_a_zip_path_find_the_schema_and_the_plugins(
    dists: dict[str, Path], deps: Path, tmp_path: Path
) -> None:
    python = str(fresh_venv(tmp_path / "venv", deps))
    work = tmp_path / "work"
    work.mkdir()
    (work / "p.yaml").write_text(PIPELINE)
    path = f"{dists['wheel']}{os.pathsep}{dists['plugin']}"

    schema = run([python, "-m", "pipeline_runner", "schema"], work, PYTHONPATH=path)
    assert schema.returncode == 0, schema.stderr
    assert '"$schema": "https://json-schema.org/draft/2020-12/schema"' in schema.stdout

    listed = run([python, "-m", "pipeline_runner", "plugins", "--json"], work, PYTHONPATH=path)
    assert listed.returncode == 0, listed.stderr
    assert '"runner-sqlite"' in listed.stdout and '"yaml-pipeline-runner"' in listed.stdout

    done = run([python, "-m", "pipeline_runner", "run", "p.yaml"], work, PYTHONPATH=path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (work / "greeting.txt").read_text() == "hello world\n"


def test_python_dash_m_is_the_runner_command(tmp_path: Path) -> None:
    shown = run([sys.executable, "-m", "pipeline_runner", "--help"], tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("Usage: runner ")
    version = run([sys.executable, "-m", "pipeline_runner", "--version"], tmp_path)
    assert version.stdout == "runner, version 0.1.0\n"


# -- discovery -------------------------------------------------------------------------------------


def test_the_builtin_table_is_what_the_distribution_publishes() -> None:
    ours = {
        ep.name: ep.value
        for ep in entry_points(group=GROUP)
        if ep.dist is not None and ep.dist.metadata["Name"] == DISTRIBUTION
    }
    assert ours == BUILTINS


def test_a_pipeline_of_builtins_runs_without_reading_distribution_metadata(
    tmp_path: Path,
) -> None:
    """The start-up promise: resolving `shell` and `noop` scans nothing."""
    (tmp_path / "p.yaml").write_text(PIPELINE.replace("uses: checksum", "uses: noop"))
    probe = (
        "import sys, atexit\n"
        "atexit.register(lambda: print('METADATA' if 'importlib.metadata' in sys.modules"
        " else 'NO-SCAN', file=sys.stderr))\n"
        "from pipeline_runner.cli import main\n"
        "main(['run', 'p.yaml', '--state-dir', 'state'])\n"
    )
    done = run([sys.executable, "-c", probe], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("NO-SCAN"), done.stderr


def _dist_info(root: Path, name: str, version: str, points: str) -> None:
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{points}\n")


def test_a_distribution_earlier_on_sys_path_shadows_a_later_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dist_info(tmp_path, "Runner_SQLite", "9.9", "sqlite = shadow.module:plugin [extra]")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = {i.name: i for i in Registry().info()}
    assert found["sqlite"].value == "shadow.module:plugin [extra]"
    assert (found["sqlite"].distribution, found["sqlite"].version) == ("Runner_SQLite", "9.9")
    assert found["sqlite"].error is not None and "No module named 'shadow'" in found["sqlite"].error
    assert "checksum" not in found  # the later runner-sqlite is shadowed whole


def test_a_distribution_cannot_take_a_builtin_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dist_info(tmp_path, "evil-shell", "1.0", "shell = evil:plugin\nmine = evil:other")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    assert registry.load("shell") is registry.load("shell")
    assert type(registry.load("shell")).__module__ == "pipeline_runner.builtins.shell"
    infos = [i for i in registry.info() if i.name == "shell"]
    assert [(i.distribution, i.error is None) for i in infos] == [
        ("yaml-pipeline-runner", True),
        ("evil-shell", False),
    ]
    assert "built-in names are reserved" in (infos[1].error or "")
    assert "mine" in registry.names()


# -- the platform ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pretend",
    ["import os; del os.pidfd_open", "import sys; sys.platform = 'darwin'"],
    ids=["no-pidfd", "not-linux"],
)
def test_an_os_without_pidfd_or_subreaper_is_one_line_exit_2(pretend: str, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PIPELINE.replace("uses: checksum", "uses: noop"))
    probe = (
        f"{pretend}\nfrom pipeline_runner.cli import main\n"
        "main(['run', 'p.yaml', '--state-dir', 'state'], prog_name='runner')\n"
    )
    done = run([sys.executable, "-c", probe], tmp_path)
    assert done.returncode == 2
    assert no_traceback(done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("runner: error: running steps needs Linux 5.3 or later")
    assert not (tmp_path / "greeting.txt").exists()
    assert not (tmp_path / "state").exists()

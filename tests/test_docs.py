"""The README and the manual in docs/ are true of the program.

Every ```yaml block that is a whole pipeline (top-level `version:` and `steps:`) is checked with
the real `runner validate`, in a folder holding a copy of pipelines/ and the page's named files.
A block that is deliberately something else says so in an HTML comment on the line before it
(a blank line may come between):

    <!-- fragment -->                  a piece of a pipeline, or another YAML file
    <!-- invalid -->                   a pipeline showing an error: `runner validate` exits 2
    <!-- file=NAME -->                 the block is the file NAME (combine: `invalid file=x.yaml`)

Any other YAML block fails. A block named after a file of the repository must hold the same data.
In ```console blocks, what `runner validate`, `runner graph`, `runner run --dry-run` and a
`runner run` refused before it starts print must be what the page shows (`...` stands for any
lines). The plugin example of docs/plugins.md is made importable from its page and run.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, RunCli

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
MARKS = {"fragment", "invalid"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
COMMENT = re.compile(r"^\s*<!--(?P<body>.*?)-->\s*$")
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<"}
MIN_PIPELINE_SAMPLES = 25


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marks: frozenset[str]
    name: str | None
    problem: str | None  # a marker that could not be read

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def read_marker(lines: list[str], fence_index: int) -> tuple[set[str], str | None, str | None]:
    """The marks and file name of the HTML comment before the fence at `fence_index`."""
    i = fence_index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    match = COMMENT.match(lines[i]) if i >= 0 else None
    if match is None:
        return set(), None, None
    marks: set[str] = set()
    name = None
    for word in match.group("body").split():
        if word.startswith("file="):
            name = word.removeprefix("file=")
        elif word in MARKS:
            marks.add(word)
        else:
            return marks, name, f"unknown word {word!r} in the marker {lines[i].strip()}"
    return marks, name, None


def blocks_of(page: Path) -> Iterator[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, indent = opening.group("fence"), len(opening.group("indent"))
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = lines[j].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        info = opening.group("info").strip()
        marks, name, problem = read_marker(lines, i)
        yield Block(
            page=page,
            line=i + 1,
            lang=info.split()[0].lower() if info else "",
            text="\n".join(body) + "\n",
            marks=frozenset(marks),
            name=name,
            problem=problem,
        )
        i = j + 1


BLOCKS = [block for page in PAGES for block in blocks_of(page)]
YAML_BLOCKS = [block for block in BLOCKS if block.lang in ("yaml", "yml")]


def parse(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def yaml_error(text: str) -> str | None:
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return str(exc).replace("\n", " ")
    return None


def is_pipeline(block: Block) -> bool:
    data = parse(block.text)
    return isinstance(data, dict) and "version" in data and "steps" in data


PIPELINE_SAMPLES = [b for b in YAML_BLOCKS if "fragment" not in b.marks and is_pipeline(b)]
INVALID_SAMPLES = [b for b in YAML_BLOCKS if "invalid" in b.marks]
SAMPLES = sorted({*PIPELINE_SAMPLES, *INVALID_SAMPLES}, key=lambda b: (str(b.page), b.line))


# -- the page's folder: a copy of pipelines/, the page's named files, the example plugin --------


def repository_file(name: str) -> Path | None:
    path = REPO / name
    return path if name.startswith("pipelines/") and path.is_file() else None


def workspace(page: Path, root: Path) -> Path:
    """A folder with a copy of pipelines/ and every named block of `page` written out."""
    shutil.copytree(
        REPO / "pipelines",
        root / "pipelines",
        ignore=shutil.ignore_patterns("__pycache__", "*.db", "journal.txt"),
    )
    for block in BLOCKS:
        if block.page == page and block.name is not None and repository_file(block.name) is None:
            target = root / block.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
    return root


def sample_path(block: Block, root: Path) -> Path:
    if block.name is not None:
        return root / block.name
    path = root / "pipelines" / f"sample-line-{block.line}.yaml"
    path.write_text(block.text, encoding="utf-8")
    return path


def toml_sections(text: str) -> dict[str, dict[str, str]]:
    """`[section]` -> `key = "string"` pairs: enough of TOML for the plugin example."""
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("", {})
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
        elif "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


@pytest.fixture(scope="session")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for PYTHONPATH that holds docs/plugins.md's example plugin, installed as a
    distribution with its entry points, made of the files the page shows."""
    page = DOCS / "plugins.md"
    named = {b.name: b for b in BLOCKS if b.page == page and b.name is not None}
    pyproject_name = next(name for name in named if name.endswith("/pyproject.toml"))
    pyproject = named[pyproject_name]
    project_dir = pyproject_name.removesuffix("pyproject.toml")
    sections = toml_sections(pyproject.text)
    dist = sections["project"]["name"].strip('"')
    version = sections["project"]["version"].strip('"')
    assert sections["project"]["dependencies"] == '["yaml-pipeline-runner"]'
    plugins = sections['project.entry-points."pipeline_runner.plugins"']
    (package,) = re.findall(r'"([^"]+)"', sections["tool.hatch.build.targets.wheel"]["packages"])
    site = tmp_path_factory.mktemp("site")
    for name, block in named.items():
        if name.startswith(f"{project_dir}{package}/"):
            target = site / Path(package).name / name.removeprefix(f"{project_dir}{package}/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    entry_points = "".join(f"{k} = {v.strip(chr(34))}\n" for k, v in plugins.items())
    (info / "entry_points.txt").write_text(f"[pipeline_runner.plugins]\n{entry_points}")
    return site


def plugin_env(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(site)}


# -- every YAML block is accounted for ----------------------------------------------------------


def test_every_yaml_block_is_a_pipeline_or_marked() -> None:
    problems = []
    for block in YAML_BLOCKS:
        if block.problem:
            problems.append(f"{block.where}: {block.problem}")
        elif "fragment" in block.marks and "invalid" in block.marks:
            problems.append(f"{block.where}: marked both fragment and invalid")
        elif "fragment" in block.marks:
            if is_pipeline(block):
                problems.append(f"{block.where}: a whole pipeline marked fragment (unmark it)")
            elif error := yaml_error(block.text):
                problems.append(f"{block.where}: a fragment that is not YAML: {error}")
        elif "invalid" not in block.marks and not is_pipeline(block):
            problems.append(
                f"{block.where}: a yaml block that is not a whole pipeline (top-level version "
                "and steps); mark it <!-- fragment --> or <!-- invalid --> if that is meant"
            )
    assert not problems, "\n".join(problems)


def test_markers_stand_only_before_yaml_blocks_and_names_are_unique() -> None:
    problems = []
    seen: dict[tuple[Path, str], Block] = {}
    for block in BLOCKS:
        if block.lang not in ("yaml", "yml") and (block.marks or block.problem):
            problems.append(f"{block.where}: fragment/invalid marks are for yaml blocks only")
        if block.name is not None:
            key = (block.page, block.name)
            if key in seen:
                problems.append(f"{block.where}: {block.name} is also {seen[key].where}")
            seen[key] = block
    assert not problems, "\n".join(problems)


def test_the_docs_have_a_reasonable_number_of_pipeline_samples() -> None:
    assert len(SAMPLES) >= MIN_PIPELINE_SAMPLES, [b.where for b in SAMPLES]
    assert INVALID_SAMPLES, "no sample shows an error"
    assert {b.page for b in SAMPLES} >= {README, DOCS / "tutorial.md", DOCS / "semantics.md"}


@pytest.mark.parametrize(
    "block", [b for b in YAML_BLOCKS if b.name and repository_file(b.name)], ids=lambda b: b.where
)
def test_a_sample_named_after_a_repository_file_holds_that_file(block: Block) -> None:
    assert block.name is not None
    path = repository_file(block.name)
    assert path is not None
    assert parse(block.text) == yaml.safe_load(path.read_text(encoding="utf-8")), (
        f"{block.where} differs from {block.name}"
    )


# -- pipeline samples validate (or fail as they say) --------------------------------------------


@pytest.mark.parametrize("block", SAMPLES, ids=lambda b: b.where)
def test_pipeline_sample(
    block: Block, run_cli: RunCli, tmp_path: Path, example_plugin: Path
) -> None:
    root = workspace(block.page, tmp_path / "work")
    path = sample_path(block, root)
    result = run_cli("validate", str(path), cwd=root, env=plugin_env(example_plugin))
    if "invalid" in block.marks:
        assert result.code == 2, f"{block.where} is marked invalid but:\n{result.output}"
        assert ": error: " in result.stderr and "Traceback" not in result.output
    else:
        assert result.code == 0, f"{block.where}:\n{block.text}\n{result.output}"


# -- console blocks: the output of deterministic commands is what the page shows ----------------


@dataclass(frozen=True)
class Command:
    block: Block
    argv: tuple[str, ...]
    expected: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.block.where}: {shlex.join(self.argv)}"


def commands_of(block: Block) -> Iterator[Command]:
    lines = block.text.rstrip("\n").splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            i += 1
            continue
        command = lines[i][2:]
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command[:-1] + " " + lines[i].strip()
        output: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i].rstrip())
            i += 1
        while output and not output[-1]:
            output.pop()
        argv = tuple(shlex.split(command, comments=True))
        if checkable(argv, output):
            yield Command(block, argv, tuple(output))


def checkable(argv: tuple[str, ...], output: list[str]) -> bool:
    if len(argv) < 2 or argv[0] != "runner" or SHELL_OPERATORS & set(argv):
        return False
    if argv[1] == "validate":
        return True
    if argv[1] == "graph":
        return not {"-o", "--output"} & set(argv)
    if argv[1] == "run":
        return "--dry-run" in argv or bool(output and output[-1].endswith("nothing was run"))
    return False


COMMANDS = [c for b in BLOCKS if b.lang == "console" for c in commands_of(b)]


def matches(expected: tuple[str, ...], actual: list[str]) -> bool:
    """Line by line; a line `...` stands for any number of lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and matches(expected[1:], actual[1:])


def test_console_blocks_hold_commands_to_check() -> None:
    assert len(COMMANDS) >= 15, [str(c) for c in COMMANDS]


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_console_output(
    command: Command, run_cli: RunCli, tmp_path: Path, example_plugin: Path
) -> None:
    root = workspace(command.block.page, tmp_path / "work")
    args: list[str] = []
    for arg in command.argv[1:]:
        if re.search(r"[*?\[]", arg) and not arg.startswith("-") and "=" not in arg:
            found = sorted(str(p.relative_to(root)) for p in root.glob(arg))
            assert found, f"{command}: {arg} matches no file"
            args.extend(found)
        else:
            args.append(arg)
    for arg in args:
        if arg.endswith((".yaml", ".yml")) and not arg.startswith("-"):
            assert (root / arg).is_file(), f"{command}: {arg} is neither shown on the page nor in"
    result = run_cli(*args, cwd=root, env=plugin_env(example_plugin))
    actual = [line.rstrip() for line in (result.stdout + result.stderr).splitlines()]
    assert matches(command.expected, actual), (
        f"{command}\n--- the page shows:\n"
        + "\n".join(command.expected)
        + "\n--- runner prints:\n"
        + "\n".join(actual)
    )
    errors = any(": error: " in line for line in command.expected)
    assert result.code == (2 if errors else 0), result.output


# -- the plugin example works as the page says ---------------------------------------------------


def test_the_plugin_example_installs_validates_and_runs(
    run_cli: RunCli, tmp_path: Path, example_plugin: Path
) -> None:
    root = workspace(DOCS / "plugins.md", tmp_path / "work")
    env = plugin_env(example_plugin)
    listed = run_cli("plugins", "--json", cwd=root, env=env)
    assert listed.code == 0, listed.output
    assert (
        '"name": "write_file"' in listed.stdout
        and '"distribution": "runner-files"' in listed.stdout
    )
    result = run_cli("run", "notes.yaml", "--progress", "plain", cwd=root, env=env)
    assert result.code == 0, result.output
    assert (root / "out" / "hello.txt").read_text(encoding="utf-8") == "Hello, Ada\n"


# -- the README is a front door; its links lead somewhere ---------------------------------------


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 350, f"README.md has {lines} lines; move reference material into docs/"


def anchors(page: Path) -> set[str]:
    """Heading ids as MkDocs makes them (`{#id}` when given), enough for this manual."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if heading is None:
            continue
        explicit = re.search(r"\{#([\w-]+)\}\s*$", heading.group(1))
        if explicit:
            found.add(explicit.group(1))
            continue
        text = re.sub(r"[^\w\s-]", "", heading.group(1).replace("`", "")).strip().lower()
        found.add(re.sub(r"[\s-]+", "-", text))
    return found


def test_the_readme_links_into_the_docs_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\((?!https?:)([^)#\s]+)(?:#([^)\s]+))?\)", text)
    assert links
    for target, anchor in links:
        path = REPO / target
        assert path.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(path), f"README.md links to {target}#{anchor}: no such heading"


def test_mkdocs_nav_lists_every_page() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)

    assert config["theme"]["name"] == "material"
    assert config["theme"]["font"] is False  # no web fonts fetched at build or view time
    assert sorted(pages(config["nav"])) == sorted(p.name for p in DOCS.glob("*.md"))


def test_install_lines_name_the_distribution() -> None:
    """`pipeline-runner` on the package index is another project; ours is yaml-pipeline-runner."""
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if "pip install" in line:
                assert not re.search(r"(?<![\w-])pipeline-runner", line), (
                    f"{page.relative_to(REPO)}:{number}: {line.strip()}"
                )

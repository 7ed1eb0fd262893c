"""The image cannot be built here (no Docker): check what can be checked without building it."""

from __future__ import annotations

import ast
import fnmatch
import re
import shutil
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from wheels import wheel_names

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "container" / "Dockerfile").read_text()


def _pins() -> dict[str, str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "trainer"
    ]
    return dict(req.split("==") for req in extras)


def _arg(name: str) -> set[str]:
    return set(re.findall(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE))


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _instructions(keyword: str) -> list[str]:
    """Every ``keyword`` instruction of the Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [
        line[len(keyword) + 1 :].strip() for line in joined.splitlines() if line.startswith(f"{keyword} ")
    ]


def _pip_installed() -> set[str]:
    """The requirements the image's pip installs (ARGs substituted)."""
    args = {name: value for name, value in re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, re.MULTILINE)}
    found: set[str] = set()
    for run in _instructions("RUN"):
        for command in re.findall(r"pip install ([^&]+)", run):
            found |= {req.strip('"') for req in re.findall(r'"[^"]+"', command)}
    return {re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], req) for req in found}


def test_dockerfile_is_python_slim_plus_pypi_torch_at_pyproject_pins():
    """An official base that certainly exists, the Python pyproject supports, and exactly the
    pins pyproject tests with (PyPI's Linux torch wheel brings the CUDA 13 runtime itself)."""
    assert _instructions("FROM") == ["python:3.11-slim"]
    assert _pyproject()["requires-python"] == ">=3.11"
    pins = _pins()
    assert _arg("TORCH_VERSION") == {pins["torch"]}
    assert _arg("TORCHVISION_VERSION") == {pins["torchvision"]}
    assert _arg("ULTRALYTICS_VERSION") == {pins["ultralytics"]}
    trainer = {f"{name}=={version}" for name, version in pins.items()}
    shared = {d for d in _pyproject()["dependencies"] if not d.startswith("aws-lambda-powertools")}
    assert _pip_installed() == trainer | shared, "the image installs pyproject's pins, nothing else"
    assert "pip install --no-deps ." in DOCKERFILE  # the package itself, without Powertools
    assert "torch.version.cuda" in DOCKERFILE and "startswith('13.')" in DOCKERFILE


def _third_party_imports(path: Path) -> set[str]:
    """Top-level modules a file imports at run time (``if TYPE_CHECKING:`` blocks skipped)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("spotyolo", "__future__")}


def _closure(requirements: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(req.name).requires or []
        except PackageNotFoundError:  # a platform-only dependency (CUDA wheels): not in this venv
            continue
        todo += [
            r for r in map(Requirement, requires) if r.marker is None or r.marker.evaluate({"extra": ""})
        ]
    return seen


def test_the_image_installs_every_module_the_trainer_imports_and_not_powertools():
    installed = _closure(_pip_installed())
    modules = packages_distributions()
    for source in _copied():
        for path in [ROOT / source] if source.endswith(".py") else sorted((ROOT / source).rglob("*.py")):
            for module in _third_party_imports(path):
                dists = {canonicalize_name(d) for d in modules.get(module, [module])}
                assert dists & installed, (
                    f"{path.relative_to(ROOT)} imports {module}: install it in the image"
                )
    assert "aws-lambda-powertools" not in installed


def test_the_trainer_runs_as_a_non_root_user_owning_only_its_folders():
    users = _instructions("USER")
    assert users and users[-1] not in ("root", "0", "0:0") and not users[-1].startswith(("root:", "0:"))
    assert DOCKERFILE.index("USER ") > DOCKERFILE.rindex("RUN "), "every RUN before USER: none as the trainer"
    uid = users[-1].split(":")[0]
    assert re.search(rf"useradd [^\n]*--uid {uid} ", DOCKERFILE), f"USER {uid} is created by useradd"
    env = dict(re.findall(r"(\w+)=(/\S+)", " ".join(_instructions("ENV"))))
    (chown,) = [run for run in _instructions("RUN") if "chown" in run]
    for writable in (env["SPOTYOLO_WORKDIR"], env["YOLO_CONFIG_DIR"]):
        assert writable in chown, f"the trainer writes {writable}"
    assert "/opt/spotyolo/src" not in chown and "/opt/spotyolo/weights" not in chown


def test_dockerfile_is_offline_safe_and_runs_the_trainer():
    assert 'ENTRYPOINT ["python", "-m", "spotyolo.trainer"]' in DOCKERFILE
    assert "YOLO_OFFLINE=1" in DOCKERFILE and "YOLO_CONFIG_DIR=" in DOCKERFILE
    assert "prepare_ultralytics()" in DOCKERFILE and "yolo26n.pt" in DOCKERFILE
    assert "libgl1" in DOCKERFILE and "libglib2.0-0" in DOCKERFILE


def _copied() -> list[str]:
    return [src.rstrip("/") for src in re.findall(r"^COPY (\S+) \S+$", DOCKERFILE, re.MULTILINE)]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent matches too."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if pattern == "**" or any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_small_but_sends_what_is_copied():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in _copied():
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(source, patterns), f"COPY {source} is excluded by .dockerignore"
    assert not _ignored("spotyolo/trainer/main.py", patterns)
    for unused in ("spotyolo/local/engine.py", "spotyolo/steps/launch.py", "functions/launch.py"):
        assert _ignored(unused, patterns), (
            f"{unused} is not imported by the trainer: keep it out of the image"
        )
    assert not _ignored("container/Dockerfile", patterns)
    for heavy in (
        ".venv/bin/python",
        ".git/HEAD",
        "cdk.out/x.json",
        "outputs/a",
        "tests/conftest.py",
        "examples/shapes/dataset/data.yaml",
        "spotyolo/__pycache__/x.pyc",
        "runs/a/b/last.pt",
    ):
        assert _ignored(heavy, patterns), f"{heavy} would be sent to the Docker daemon"


def test_the_copied_files_make_an_installable_package_with_the_trainer(tmp_path: Path):
    """What the image's `pip install .` sees: only the COPY'd paths. It must build, with trainer."""
    src = tmp_path / "src"
    for source in _copied():
        target = src / source
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / source, target)
    names = set(wheel_names(src, tmp_path))
    assert {
        "spotyolo/trainer/__main__.py",
        "spotyolo/trainer/main.py",
        "spotyolo/core/jobtable.py",
        "spotyolo/contract/layout.py",
    } <= names
    # the image holds only what the trainer imports: no engine, no Lambda logic, no CLI
    assert not {n for n in names if n.startswith(("spotyolo/local/", "spotyolo/steps/", "spotyolo/cli/"))}

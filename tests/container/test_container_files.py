"""The image cannot be built here (no Docker): check what can be checked without building it."""

from __future__ import annotations

import fnmatch
import re
import shutil
import tomllib
from pathlib import Path

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


def test_dockerfile_pins_equal_pyproject():
    pins = _pins()
    assert _arg("TORCH_VERSION") == {pins["torch"]}
    assert _arg("TORCHVISION_VERSION") == {pins["torchvision"]}
    assert _arg("ULTRALYTICS_VERSION") == {pins["ultralytics"]}
    assert re.search(
        r"^FROM pytorch/pytorch:\$\{TORCH_VERSION\}-\$\{CUDA_FLAVOR\}$", DOCKERFILE, re.MULTILINE
    )


def test_dockerfile_is_offline_safe_and_runs_the_trainer():
    assert 'ENTRYPOINT ["python", "-m", "spotyolo.trainer"]' in DOCKERFILE
    assert "YOLO_OFFLINE=1" in DOCKERFILE and "YOLO_CONFIG_DIR=" in DOCKERFILE
    assert "prepare_ultralytics()" in DOCKERFILE and "yolo26n.pt" in DOCKERFILE
    assert "libgl1" in DOCKERFILE and "libglib2.0-0" in DOCKERFILE
    assert '".[trainer]"' in DOCKERFILE and "-c /opt/constraints.txt" in DOCKERFILE


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

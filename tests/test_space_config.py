"""Will the Space build? Its README front matter against the pinned requirements, offline.

Spaces install requirements.txt under the front matter's python_version (default 3.10); the
Requires-Python of each pinned release (read from the installed distributions' metadata) must
admit it, and sdk_version must be the pinned gradio (Spaces install that version first).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from training.deploy_space import (
    SPACE_README_BODY,
    pinned_requirements,
    read_front_matter,
    requires_python_conflicts,
    space_config_problems,
    space_readme,
    split_front_matter,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_front_matter_builds_with_the_pinned_requirements():
    assert space_config_problems() == []


def test_python_version_is_quoted_in_the_readme():
    """Unquoted, 3.10 would read as the number 3.1."""
    front = (REPO_ROOT / "README.md").read_text(encoding="utf-8").split("---\n")[1]
    assert re.search(r'^python_version: "3\.\d+(\.\d+)?"$', front, re.MULTILINE), front


def test_the_tests_run_on_the_python_the_space_declares():
    """CI (setup.sh) builds .venv with the declared Python; a .venv of another version fails here."""
    declared = read_front_matter()["python_version"]
    running = ".".join(map(str, sys.version_info[:3]))
    assert (running + ".").startswith(declared + "."), f"tests run on Python {running}, the Space declares {declared}"


def test_sdk_version_is_the_pinned_gradio():
    assert str(read_front_matter()["sdk_version"]) == pinned_requirements()["gradio"]


def test_python_3_10_the_spaces_default_is_caught():
    """What the Space got before python_version was set: numpy and keras need 3.11 or later."""
    conflicts = requires_python_conflicts("3.10", pinned_requirements())
    print("\n".join(conflicts))
    assert any(line.startswith("numpy==") and "excludes 3.10" in line for line in conflicts)
    assert any(line.startswith("keras==") and "excludes 3.10" in line for line in conflicts)


def write_space_root(root: Path, front_matter: str, requirements: str) -> Path:
    root.mkdir()
    (root / "README.md").write_text(f"---\n{front_matter}---\n\n# A Space\n", encoding="utf-8")
    (root / "requirements.txt").write_text(requirements)
    return root


@pytest.mark.parametrize("front_matter, expected", [
    ("sdk: gradio\nsdk_version: 6.31.0\napp_file: app.py\n", "python_version must be a quoted"),
    ("sdk: gradio\nsdk_version: 6.31.0\npython_version: 3.10\napp_file: app.py\n", "not 3.1"),
    ("sdk: gradio\nsdk_version: 6.31.0\npython_version: \"3.10\"\napp_file: app.py\n", "excludes 3.10"),
    ("sdk: gradio\nsdk_version: 5.0.0\npython_version: \"3.11\"\napp_file: app.py\n", "sdk_version '5.0.0' differs"),
    ("sdk: docker\nsdk_version: 6.31.0\npython_version: \"3.11\"\napp_file: app.py\n", "not 'gradio'"),
    ("sdk: gradio\nsdk_version: 6.31.0\npython_version: \"3.11\"\napp_file: main.py\n", "not among the files"),
])
def test_each_mistake_in_the_front_matter_is_reported(tmp_path, front_matter, expected):
    pins = (REPO_ROOT / "requirements.txt").read_text()
    root = write_space_root(tmp_path / "space", front_matter, pins)
    problems = space_config_problems(root)
    assert any(expected in problem for problem in problems), problems


def test_a_pin_whose_installed_metadata_cannot_speak_for_it_is_reported():
    conflicts = requires_python_conflicts("3.11", {"numpy": "0.0.1", "no-such-distribution-here": "1.0"})
    assert conflicts == ["numpy==0.0.1 is pinned but " + __import__("numpy").__version__ + " is installed here",
                         "no-such-distribution-here==1.0 is not installed here, so its Requires-Python cannot be read"]


def test_the_space_readme_is_the_front_matter_naming_the_pinned_model_then_the_spaces_own_body():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    space_body = (REPO_ROOT / SPACE_README_BODY).read_text(encoding="utf-8")
    assert not space_body.startswith("---"), "the Space's body must not bring a front matter of its own"
    sha = "0123456789abcdef0123456789abcdef01234567"
    adapted = space_readme(text, space_body, "someone/car-unet", sha, ["config.json", "model.keras"])
    config, body = split_front_matter(adapted)
    original, original_body = split_front_matter(text)
    assert body == "\n" + space_body
    assert body.strip() != original_body.strip()  # visitors get their own text, not the repository's
    assert config["models"] == ["someone/car-unet"]
    assert config["preload_from_hub"] == [f"someone/car-unet config.json,model.keras {sha}"]
    assert config["python_version"] == "3.11" and isinstance(config["python_version"], str)
    assert {key: config[key] for key in original} == original
    # Without a model repo (the rehearsal), the front matter is the repository's.
    assert split_front_matter(space_readme(text, space_body))[0] == original

"""Deploy the app to a Hugging Face Space that serves a model repo at a pinned commit, in one commit.

    python -m training.deploy_space OWNER/SPACE --model-repo OWNER/REPO --revision SHA [--private] [--message M]

Creates the Space (Gradio SDK) if needed, sets its variables MODEL_REPO and MODEL_REVISION, and
uploads exactly the files the Space runs (`space_files`: app.py, demo/ with the default bundle,
requirements.txt, README.md, .gitattributes) as one commit that replaces the Space's files. The
Space's README.md is for its visitors: the repository README's front matter with
docs/space_readme.md as its body. Its front matter also names the model (`models:`) and, for a
public model repo, has the Space's build preload the bundle at that commit (`preload_from_hub`),
so the first start downloads nothing. Same token rules and refusals as `training.push`: no
token, a bad id, a revision that is not a commit sha, an incomplete default bundle or a front
matter the pinned requirements cannot install under: one line, exit status 1, nothing sent.
"""
from __future__ import annotations

import argparse
import fnmatch
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import yaml
from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from demo.bundle import CONFIG_FILE, MODEL_FILE
from demo.bundle_files import verify_bundle
from demo.hub import HUB_PATTERNS
from demo.loading import DEFAULT_BUNDLE_DIR
from training.push import PushError, check_repo_id, run_hub_command

REPO_ROOT = Path(__file__).resolve().parent.parent
# What a Space of this app runs, and nothing else (not training/, tests/, bench/, runs/, scripts/, docs/,
# BENCHMARKS.md): the Space's README, written for its visitors, links none of them.
SPACE_TOP_FILES = ("app.py", "requirements.txt", "README.md", ".gitattributes")
SPACE_FOLDERS = ("demo",)
# Never shipped from those folders: bytecode, and hidden names (a half-copied default model, say).
SKIPPED_NAMES = ("__pycache__", "*.pyc", ".*")
README = "README.md"
# The body of the Space's README.md (its front matter is the repository README's).
SPACE_README_BODY = "docs/space_readme.md"
# The model the app serves when none is configured, shipped in the Space.
DEFAULT_BUNDLE = DEFAULT_BUNDLE_DIR.relative_to(REPO_ROOT)
REQUIREMENTS = "requirements.txt"
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
HUB_URL = "https://huggingface.co"


# --- The Space's files: one list for the deploy command and the rehearsal -------------------------

def space_files(root: Path | None = None) -> list[str]:
    """The repo paths (POSIX, relative to `root`) a Space of the app needs; PushError if one is missing."""
    root = root or REPO_ROOT
    missing = [name for name in SPACE_TOP_FILES + SPACE_FOLDERS + (SPACE_README_BODY,) if not (root / name).exists()]
    if missing:
        raise PushError(f"{', '.join(missing)} missing from {root}: not deploying an incomplete Space.")
    files = list(SPACE_TOP_FILES)
    for folder in SPACE_FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and not any(fnmatch.fnmatch(part, pattern)
                                          for part in relative.parts for pattern in SKIPPED_NAMES):
                files.append(relative.as_posix())
    return sorted(files)


def split_front_matter(text: str) -> tuple[dict, str]:
    """The YAML front matter of a README (a dict) and the text after it."""
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    if not match:
        raise PushError("README.md has no YAML front matter (a block between '---' lines at the top).")
    return yaml.safe_load(match.group(1)) or {}, text[match.end():]


def read_front_matter(root: Path | None = None) -> dict:
    return split_front_matter(((root or REPO_ROOT) / README).read_text(encoding="utf-8"))[0]


def space_python(interpreter: str | None = None) -> tuple[str, str]:
    """The interpreter for a venv like the Space's, and its version: `interpreter`, else pythonX.Y of
    the README front matter's python_version; PushError if there is none or it is another version."""
    declared = read_front_matter()["python_version"]
    interpreter = interpreter or f"python{'.'.join(declared.split('.')[:2])}"
    try:
        found = subprocess.run([interpreter, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as error:
        raise PushError(f"no {interpreter} to make the Space's Python {declared} with: {error}") from error
    if not (found + ".").startswith(declared + "."):
        raise PushError(f"{interpreter} is Python {found}; the Space declares {declared}")
    return interpreter, found


def install_space_venv(venv: Path, requirements: Path, interpreter: str) -> float:
    """A new venv at `venv` made by `interpreter` with `requirements` alone installed, as the Space
    installs it (no dev extras); the seconds it took. PushError with pip's words if a step fails."""
    start = time.monotonic()
    python = str(Path(venv) / "bin" / "python")
    for command in ([interpreter, "-m", "venv", str(venv)],
                    [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(requirements)]):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise PushError(f"{' '.join(command)} failed ({result.returncode}):\n"
                            f"{(result.stdout + result.stderr)[-4000:]}")
    return time.monotonic() - start


def space_readme(text: str, body: str, model_repo: str | None = None, revision: str | None = None,
                 preload_files: list[str] | None = None) -> str:
    """The README as the Space gets it: the front matter of `text` (the repository's README), naming the model
    served and, given files, preloading them, then `body` (the Space's own, for its visitors)."""
    config, _ = split_front_matter(text)
    if model_repo:
        config["models"] = [model_repo]
        if preload_files:
            config["preload_from_hub"] = [f"{model_repo} {','.join(preload_files)} {revision}"]
    # safe_dump quotes strings that would read back as numbers, so python_version stays "3.11".
    front = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front}---\n\n{body}"


def stage_space(dest: Path, model_repo: str | None = None, revision: str | None = None,
                preload_files: list[str] | None = None, root: Path | None = None) -> list[str]:
    """Copy the Space's files (`space_files`) into the new folder `dest`, README adapted; return the list."""
    root = root or REPO_ROOT
    files = space_files(root)
    dest.mkdir(parents=True)
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, dest / name)
    readme = space_readme((root / README).read_text(encoding="utf-8"),
                          (root / SPACE_README_BODY).read_text(encoding="utf-8"), model_repo, revision, preload_files)
    (dest / README).write_text(readme, encoding="utf-8")
    return files


# --- Will the Space build? ----------------------------------------------------------------------

def pinned_requirements(root: Path | None = None) -> dict[str, str]:
    """name -> version for each `name==version` line of requirements.txt."""
    root = root or REPO_ROOT
    pins = {}
    for line in (root / REQUIREMENTS).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (part.strip() for part in line.split("==", 1))
            pins[name] = version
    return pins


def requires_python_conflicts(python_version: str, pins: dict[str, str]) -> list[str]:
    """The pinned requirements whose Requires-Python (from the installed distributions) excludes `python_version`.

    A pin that is not installed, or installed at another version, is reported too: its metadata
    cannot speak for the pinned release.
    """
    from packaging.specifiers import SpecifierSet

    problems = []
    for name, version in pins.items():
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}=={version} is not installed here, so its Requires-Python cannot be read")
            continue
        if distribution.version != version:
            problems.append(f"{name}=={version} is pinned but {distribution.version} is installed here")
            continue
        requires = distribution.metadata.get("Requires-Python")
        if requires and not SpecifierSet(requires).contains(python_version, prereleases=True):
            problems.append(f"{name}=={version} requires Python {requires}, which excludes {python_version}")
    return problems


def space_config_problems(root: Path | None = None) -> list[str]:
    """Why a Space built from `root` would not build or not run its pinned Gradio; empty when none is known."""
    config = read_front_matter(root)
    pins = pinned_requirements(root)
    problems = []
    python_version = config.get("python_version")
    if not isinstance(python_version, str) or not re.fullmatch(r"3\.\d+(\.\d+)?", python_version):
        problems.append(f"python_version must be a quoted \"3.x\" or \"3.x.y\" (Spaces default to 3.10), "
                        f"not {python_version!r}")
    else:
        problems += requires_python_conflicts(python_version, pins)
    if config.get("sdk") != "gradio":
        problems.append(f"sdk is {config.get('sdk')!r}, not 'gradio'")
    if str(config.get("sdk_version")) != pins.get("gradio"):
        problems.append(f"sdk_version {config.get('sdk_version')!r} differs from gradio=={pins.get('gradio')} "
                        f"in {REQUIREMENTS}")
    if config.get("app_file") not in SPACE_TOP_FILES:
        problems.append(f"app_file {config.get('app_file')!r} is not among the files deployed")
    return problems


# --- The deploy itself ----------------------------------------------------------------------------

def check_local(space_id: str, model_repo: str, revision: str) -> None:
    """Everything that can be checked without the Hub; raises before anything is sent."""
    check_repo_id(space_id, "Space")
    check_repo_id(model_repo, "model")
    if not COMMIT_SHA.fullmatch(revision or ""):
        raise PushError(f"--revision must be the model repo's full commit sha (40 hex digits), not '{revision}': "
                        "use the one training.push printed.")
    problems = space_config_problems()
    if problems:
        raise PushError(f"the Space would not build: {'; '.join(problems)}.")
    verify_bundle(REPO_ROOT / DEFAULT_BUNDLE)  # the model the Space falls back to must be whole
    space_files()


def bundle_files_at(api: HfApi, model_repo: str, revision: str) -> tuple[list[str], bool]:
    """The files the app downloads from `model_repo` at `revision`, and whether the repo is private."""
    try:
        info = api.model_info(model_repo, revision=revision)
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise PushError(f"the Hub has no model repo {model_repo} at revision {revision} (push the bundle first "
                        "with training.push; a private repo also needs a token that can read it).") from error
    names = sorted(sibling.rfilename for sibling in info.siblings or [])
    if not {MODEL_FILE, CONFIG_FILE} <= set(names):
        raise PushError(f"{model_repo}@{revision} is not a model bundle: it lacks {MODEL_FILE} or {CONFIG_FILE}.")
    return [name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in HUB_PATTERNS)], bool(info.private)


def deploy_space(space_id: str, model_repo: str, revision: str, *, api: HfApi, private: bool = False,
                 message: str | None = None) -> tuple[CommitInfo, str, list[str], bool]:
    """Check, create the Space if needed, set its variables, upload its files in one commit.

    Returns the commit, the Space's page URL, the files uploaded and whether the model is preloaded.
    """
    check_local(space_id, model_repo, revision)
    served_files, model_is_private = bundle_files_at(api, model_repo, revision)
    # A private model is not preloaded: the build's access to it is not documented. The app downloads
    # it at start instead, with the Space's HF_TOKEN secret.
    preload = [] if model_is_private else served_files
    # private=None lets the Hub apply the namespace's default visibility; an existing Space keeps its own.
    space_url = str(api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private or None,
                                    exist_ok=True) or f"{HUB_URL}/spaces/{space_id}")
    # Variables first, so that the build the upload starts already serves the pinned model.
    api.add_space_variable(space_id, "MODEL_REPO", model_repo, description="Hub model repo the app serves")
    api.add_space_variable(space_id, "MODEL_REVISION", revision, description="commit of MODEL_REPO served")
    with tempfile.TemporaryDirectory(prefix="space-") as staging:
        folder = Path(staging) / "space"
        files = stage_space(folder, model_repo, revision, preload)
        commit = api.upload_folder(
            repo_id=space_id, repo_type="space", folder_path=folder,
            commit_message=message or f"Deploy the car segmentation app serving {model_repo}@{revision[:12]}",
            delete_patterns=["*"],  # files the Space had and the app no longer needs go in the same commit
        )
    return commit, space_url, files, bool(preload)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.deploy_space", description=__doc__.split("\n\n")[0])
    parser.add_argument("space_id", help="the Space, OWNER/NAME (created if missing)")
    parser.add_argument("--model-repo", required=True, help="the Hub model repo the Space serves, OWNER/NAME")
    parser.add_argument("--revision", required=True, help="the model repo's commit sha to serve (training.push prints it)")
    parser.add_argument("--private", action="store_true", help="create the Space private (an existing one keeps its visibility)")
    parser.add_argument("--message", help="commit message")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, api: HfApi | None = None) -> int:
    """The command line; `api` replaces the real Hub client in tests."""
    args = parse_args(argv)

    def deploy(client: HfApi) -> None:
        commit, url, files, preloaded = deploy_space(args.space_id, args.model_repo, args.revision, api=client,
                                                     private=args.private, message=args.message)
        demo_files = sum(name.startswith("demo/") for name in files)
        others = ", ".join(name for name in files if not name.startswith("demo/"))
        print(f"deployed {len(files)} files ({others} and {demo_files} under demo/) to {args.space_id}: "
              f"commit {commit.oid}")
        print(commit.commit_url)
        print(f"Space variables: MODEL_REPO={args.model_repo} MODEL_REVISION={args.revision}")
        if preloaded:
            print("the build preloads the model at that commit (preload_from_hub), so the first start downloads nothing")
        else:
            print(f"{args.model_repo} is private: add a read token as the Space secret HF_TOKEN "
                  "(Settings > Variables and secrets), or the Space serves its default model")
        print(f"the Space: {url} (it builds, then serves the model; see its Logs tab meanwhile)")

    return run_hub_command(deploy, args.space_id, api, action="deploy")


if __name__ == "__main__":
    sys.exit(main())

"""Bundles are written through temporary names (mkstemp files are 0600, mkdtemp folders 0700):
what is put in place must be readable as a plain write or mkdir would have made it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from demo.bundle_files import atomic_write_text


def current_umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def test_an_atomic_write_has_a_plain_files_permissions(tmp_path):
    atomic_write_text(tmp_path / "config.json", "{}")
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_an_exported_bundle_is_readable_as_a_plain_mkdir_would_make_it(tiny_bundle_dir, tmp_path):
    from training.export_graphs import main

    bundle = Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))
    assert main([str(bundle)]) == 0
    assert bundle.stat().st_mode & 0o777 == 0o777 & ~current_umask()
    for path in bundle.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask(), path.name

"""What keeps one visitor from reading the server's files, filling its memory, disk or queue.

Every network event takes the raw upload (see demo/ui.py), so the app itself checks the
path it is given; what sessions keep for the sliders lives in one store with a byte budget;
a sweeper clears the upload folder, where Gradio also leaves the partial file of every
aborted upload; and each session may have only a few requests waiting in the queue.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import secrets
import stat
import threading
import time
import weakref
from collections import OrderedDict
from numbers import Real
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder, is_in_or_equal

logger = logging.getLogger(__name__)

# One message for every path the app will not open, so an answer tells nothing about the server.
UNREADABLE_UPLOAD = "The photo is not among this app's uploads (or has expired); please upload it again."


def uploaded_file(upload) -> Path:
    """The regular file inside Gradio's upload folder that `upload` (raw FileData) names, resolved.

    Gradio checks an upload's path only when the value carries its "meta" field; without it a
    client could name any server file. Symbolic links and ".." are resolved before the check.
    """
    path = upload.get("path") if isinstance(upload, dict) else None
    if not isinstance(path, str) or not path:
        raise gr.Error(UNREADABLE_UPLOAD, print_exception=False)
    try:
        resolved = Path(path).resolve(strict=True)
        inside = is_in_or_equal(resolved, get_upload_folder()) and resolved.is_file()
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte
        inside = False
    if not inside:
        logger.info("Refused a request for a path outside the uploads.")
        raise gr.Error(UNREADABLE_UPLOAD, print_exception=False)
    return resolved


def unit_interval(value, name: str) -> float:
    """`value` as a float if it is a finite number from 0 to 1, else a gr.Error that says so."""
    if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    try:
        shown = json.dumps(value)  # as the client wrote it: null, "abc", NaN
    except (TypeError, ValueError):
        shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise gr.Error(f"The {name} must be a number from 0 to 1; got {shown}.", print_exception=False)


class KeptStore:
    """What sessions keep between events, under one byte budget: the least recently used goes first.

    Sessions hold only the key (in a gr.State), so an evicted entry is freed at once.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, value, nbytes: int) -> str:
        key = secrets.token_hex(16)
        with self._lock:
            self._entries[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes:
                evicted, (_, evicted_bytes) = self._entries.popitem(last=False)
                self._bytes -= evicted_bytes
                logger.info("Dropped a kept photo (%.0f MB) to stay within %.0f MB.", evicted_bytes / 1e6,
                            self.max_bytes / 1e6)
        return key

    def get(self, key: str | None):
        """The value kept under `key`, or None if it was never kept, dropped or evicted."""
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            return self._entries[key][0]

    def discard(self, key: str | None) -> None:
        with self._lock:
            if key in self._entries:
                self._bytes -= self._entries.pop(key)[1]

    @property
    def total_bytes(self) -> int:
        return self._bytes


def limit_waiting_events_per_session(demo: gr.Blocks, limit: int) -> None:
    """Refuse a request when its session already has `limit` requests waiting in the queue.

    Gradio's queue has only a total size, which one client can fill alone. There is no hook for
    this, so the queue's `push` (Gradio 6.31) is wrapped; tests/test_app_hostile_visitor.py checks it works.
    """
    queue = demo._queue
    push = queue.push
    lock = asyncio.Lock()  # counting and queueing happen as one step

    async def push_within_limit(body, request, username):
        async with lock:
            session = body.session_hash
            waiting = sum(event.session_hash == session for event_queue in queue.event_queue_per_concurrency_id.values()
                          for event in event_queue.queue)
            if session is not None and waiting >= limit:
                return False, (f"This session already has {waiting} requests waiting; "
                               "please wait for them to finish."), "queue_full"
            return await push(body, request, username)

    queue.push = push_within_limit


def sweep_folder(folder: Path, max_age_s: float, partial_upload_idle_s: float, keep: set[str]) -> int:
    """Delete what `folder` holds unused for `max_age_s`, and how many entries went.

    Gradio writes each upload at the folder's top level (tmpXXXXXXXX) and moves it into a
    folder of its own when complete, so a file left at the top level idle for
    `partial_upload_idle_s` is what an aborted upload left. Folders left empty go too; `keep`
    (the app's examples) stays. Nothing is followed through a link, and an entry that cannot
    be deleted is logged and skipped, so one odd entry never stops the sweep.
    """
    now = time.time()
    removed = 0
    for directory, folders, files in os.walk(folder, topdown=False):
        at_top = Path(directory) == folder
        for name in files + folders:
            path = Path(directory) / name
            try:
                status = path.lstat()
                idle_s = now - status.st_mtime
                if stat.S_ISDIR(status.st_mode):
                    if idle_s > partial_upload_idle_s and not any(path.iterdir()):
                        path.rmdir()
                        removed += 1
                elif str(path) not in keep and idle_s > (partial_upload_idle_s if at_top else max_age_s):
                    path.unlink()
                    removed += 1
            except OSError as error:
                logger.warning("Cache sweep skipped %s: %s", path, error)
    return removed


def start_sweeping(demo: gr.Blocks, interval_s: float, max_age_s: float, partial_upload_idle_s: float) -> None:
    """Sweep Gradio's upload folder (where the app also writes its pictures) now and every `interval_s`
    until `demo` is closed; this replaces Gradio's delete_cache, which stops for good at a folder
    where it expected a file."""
    folder = Path(get_upload_folder())
    app = weakref.ref(demo)

    def files_to_keep() -> set[str]:
        blocks = app()
        if blocks is None:
            return set()
        return {str(path) for block in blocks.blocks.values() for path in getattr(block, "keep_in_cache", ())}

    def sweep_until_closed():
        while True:
            blocks = app()
            if blocks is None or (blocks.has_launched and not blocks.is_running):
                return
            del blocks
            if folder.is_dir():
                removed = sweep_folder(folder, max_age_s, partial_upload_idle_s, files_to_keep())
                if removed:
                    logger.info("Cache sweep removed %d entries from %s.", removed, folder)
            time.sleep(interval_s)

    threading.Thread(target=sweep_until_closed, name="upload-folder-sweeper", daemon=True).start()

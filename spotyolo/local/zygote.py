"""A warm trainer "image": one process with torch, Ultralytics and the trainer imported, that
forks a fresh ``python -m spotyolo.trainer`` for each instance the local engine boots.

On EC2 the trainer's image is pulled before it starts, so its boot is not Python importing
torch (~5 s on 2 cores). Locally every attempt paid that; the engine starts this process once
and asks it for a trainer per instance instead. Each child is exactly ``spotyolo.trainer.main.main()``
in its own session (process group), with the instance's environment, working folder and log
file; the zygote reports its exit code. Protocol (JSON lines):

    engine -> zygote (stdin):   {"id": "i-...", "env": {...}, "cwd": "...", "log": "..."}
    zygote -> engine (stdout):  {"ready": true}  {"id": "i-...", "pid": 123}  {"pid": 123, "exit": 0}

The zygote itself has no threads (forking a threaded process is unsafe), so it multiplexes
stdin and child exits with select() and waitpid(WNOHANG).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import sys
import traceback
from typing import Any

#: modules Ultralytics imports inside its trainer set-up rather than at its own import
LAZY_IMPORTS = ("torchvision", "thop", "matplotlib.font_manager")


def _warm_up() -> None:
    """Import what every trainer imports (env read at import time is the same for all)."""
    from spotyolo.trainer.offline import prepare_ultralytics

    prepare_ultralytics(os.environ.get("YOLO_CONFIG_DIR"))
    # torch._inductor: what Ultralytics' deterministic mode imports (1-3 s; trainer/main.py, prewarm)
    import torch._inductor  # noqa: F401
    import ultralytics  # noqa: F401
    from ultralytics import YOLO  # noqa: F401
    from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: F401

    import spotyolo.trainer.main  # noqa: F401

    # what Ultralytics' trainer set-up imports lazily on every attempt (its validator:
    # torchvision; the model summary's FLOPs: thop; the fonts of its plots): ~0.4 s per trainer
    for optional in LAZY_IMPORTS:
        with contextlib.suppress(ImportError):  # Ultralytics does without it (thop is optional)
            importlib.import_module(optional)


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the instance's ``python -m spotyolo.trainer``; never returns."""
    code = 1
    try:
        os.setsid()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.close(null_fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["python -m spotyolo.trainer"]
        from spotyolo.trainer.main import main

        code = int(main([]))
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine stops us (stdin closes)
    _warm_up()
    _say({"ready": True})
    stdin = sys.stdin.buffer
    pending = b""
    children: set[int] = set()
    open_input = True
    while open_input or children:
        readable, _, _ = select.select([stdin] if open_input else [], [], [], 0.2)
        if readable:
            chunk = os.read(stdin.fileno(), 65536)
            if not chunk:
                open_input = False  # the engine is gone: no new trainers; reap the running ones
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                sys.stdout.flush()
                pid = os.fork()
                if pid == 0:
                    _child(request)
                children.add(pid)
                _say({"id": request["id"], "pid": pid})
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            children.discard(pid)
            _say({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})
        if not open_input and children:
            for pid in list(children):  # the engine exited without stopping them
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    children.discard(pid)


if __name__ == "__main__":
    main()

"""The embedded job process: ``python -m service.job_process --channel FD [--data-dir-lock FD]``.

Started by the embedded API (``service.job_child.ChildJobs``), never by hand; it is the composition
root of this process. It reads the API's settings and then job ids from the channel, and runs the
jobs with ``service.orchestration`` on an ``InProcessJobs`` of its own: at a lower CPU priority
(``job_nice``), with the same retries of transient errors, and the jobs it submits itself (a wake's
continuation, a due sleep) stay here. Its Runtime is built from the API's settings (the same
SQLite file and data dir); its replay buffers live here, restored from the latest snapshot when a
job first needs them, as after a restart. What its commits change and count goes back to the API.

It ends when told to stop (after its running jobs), and at once when the API has gone (the channel's
end, or a new parent pid): a job cut short is re-run or failed by the next API's recovery.
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import threading

from service.job_child import Channel


def _listen(channel: Channel, inbox: queue.Queue, parent: int) -> None:
    """Pass the API's messages on; end this process as soon as the API is gone."""
    for message in channel.messages(alive=lambda: os.getppid() == parent):
        inbox.put(message)
        if message.get("stop"):
            return
    os._exit(0)  # the API is gone: stop now, mid-job or not (nothing half-written is ever visible)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channel", type=int, required=True, help="descriptor of the socket to the API")
    parser.add_argument("--data-dir-lock", type=int, help="descriptor of the API's data dir lock, shared")
    args = parser.parse_args(argv)
    channel = Channel(socket.socket(fileno=args.channel))
    inbox: queue.Queue[dict] = queue.Queue()
    # first, before the slow imports: the process must end with the API even while it starts
    threading.Thread(target=_listen, args=(channel, inbox, os.getppid()), name="channel", daemon=True).start()

    import torch

    from service import datadir
    from service.job_runner import embedded_runner
    from service.observability import configure_logging
    from service.runtime import build_runtime
    from service.settings import Settings

    first = inbox.get()
    # the API's settings, but the jobs run here, on threads of this process
    settings = Settings(**{**first["settings"], "jobs": "inprocess"})
    configure_logging(settings.log_level, settings.log_format)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    if args.data_dir_lock is not None:
        datadir.adopt(settings.data_dir, args.data_dir_lock)
    rt = build_runtime(settings, runner=embedded_runner(), role="jobs")

    def changed(brain_id: int | None) -> None:
        _tell(channel, {"changed": None if brain_id is None else [brain_id]})

    rt.changes.listen(changed)
    rt.job_counts.forward = lambda increments, dropped: _tell(
        channel, {"counts": [list(i) for i in increments], "dropped": sorted(dropped)})
    _tell(channel, {"ready": os.getpid()})
    while True:
        message = inbox.get()
        if "run" in message:
            rt.jobs.executor.dispatch(str(message["run"]), "")
        elif message.get("stop"):
            break
    rt.close()  # waits for the running jobs


def _tell(channel: Channel, message: dict) -> None:
    try:
        channel.send(message)
    except OSError:  # the API is gone; the listener ends this process
        pass


if __name__ == "__main__":
    main()

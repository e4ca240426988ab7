"""The history checker: Jepsen-style proof that the service keeps its guarantees under concurrency
and faults.

    python -m bench.history --stack embedded --clients 16 --processes 2 --ops 400 --faults kill-api --out DIR
    python -m bench.history --stack full --faults kill-worker,kill-api,short-lock --out DIR

Many clients (threads of this process and client processes) run random operations against two
brains of one service (``workload``), every request and answer recorded with its times
(``record``), while a nemesis kills API and worker processes and runs jobs longer than the writer
lock (``faults``) on a real stack (``stacks``). At the end the service drains and the final state
is read through the API and from the database (``final``), and a pure function of the history and
that state lists the anomalies (``checker``; its fresh-brain comparison: ``reference``). ``run``
ties them together; ``__main__`` is the command. The full stack reuses the integration tests'
process handling, so the command runs from the repository root.
"""

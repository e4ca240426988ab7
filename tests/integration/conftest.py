"""Integration-test plumbing: the logs of the processes a test started are attached to its report
when it fails (a test sets ``request.node.service_logs`` to a callable returning ``(name, text)``)."""

from __future__ import annotations

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    logs = getattr(item, "service_logs", None)
    if report.failed and logs is not None:
        for name, text in logs():
            report.sections.append((f"log of {name}", text))
    return report

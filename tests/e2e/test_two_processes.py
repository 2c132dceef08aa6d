"""Two ``stockgraph serve`` processes share PostgreSQL, Redis and one WMS's rate limit.

The scenario is ``benchmarks/budget.py``'s (it starts the WMS, both servers and the load,
and cleans up after): one ``rest`` WMS allowing 5 requests a second, 30 live reads a second
for 20 seconds, alternating between the two processes. The WMS's own counters say what it
saw; the answers say what the callers saw.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.services import postgres_url, redis_url

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "budget.py"


@pytest.fixture(scope="module")
def budget() -> ModuleType:
    """``benchmarks/budget.py`` as a module (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location("benchmarks_budget", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def test_two_processes_keep_one_wms_within_its_limit_and_answer_stale_beyond_it(
    budget: ModuleType, tmp_path: Path
) -> None:
    scenario = budget.Scenario(
        duration_s=20.0,
        rate=30.0,
        wms_limit=5.0,
        database_url=postgres_url(),
        redis_url=redis_url(),
        python=sys.executable,
    )

    outcome = budget.run_scenario(scenario, tmp_path)

    report = outcome.summary()
    assert outcome.sent == 600, report
    assert outcome.wms_throttled == 0, report
    assert outcome.wms_calls_during_load <= 5 * 20 + scenario.burst, report
    assert outcome.answered == outcome.sent, report
    assert outcome.errors == 0, report
    assert outcome.incomplete == 0, report
    assert outcome.stale_answers > 0, report

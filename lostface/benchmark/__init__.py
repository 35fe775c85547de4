"""`lostface bench`: quality and speed benchmarks with an offline HTML report."""

from lostface.benchmark.common import Scale
from lostface.benchmark.core import SUITES, run_bench

__all__ = ["SUITES", "Scale", "run_bench"]

"""Reports: collect run folders, aggregate seeds, tables, plots and report.html."""

from .builder import Report, build_report
from .collect import Cell, RunRecord, aggregate, collect_runs

__all__ = ["Cell", "Report", "RunRecord", "aggregate", "build_report", "collect_runs"]

"""The static HTML report: ``build_report(BASE)`` writes ``BASE/reports/latest/index.html``
plus a handful of assets (sprite sheets, data scripts, CSV lists) showing whatever phases ran."""

from exoray.report.builder import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]

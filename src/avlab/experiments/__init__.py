"""Working with runs after the fact: the job table of a sweep."""

from avlab.experiments.sweep_table import SweepTable, collect_jobs, write_job_table

__all__ = ["SweepTable", "collect_jobs", "write_job_table"]

"""Working with runs after the fact: the job table of a sweep; list, compare, clean up, archive.

The command line is `python -m avlab.experiments <command>` (installed as `avlab`).
"""

from avlab.experiments.sweep_table import SweepTable, collect_jobs, write_job_table

__all__ = ["SweepTable", "collect_jobs", "write_job_table"]

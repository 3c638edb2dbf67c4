"""zhunt.dryrun.scheduled_jobs: the "Job stats" table of a Snakemake (dry) run."""

from zhunt.dryrun import scheduled_jobs

STDOUT = """Building DAG of jobs...
Job stats:
job                    count
-------------------  -------
extract_activations        1
summary                    2
total                      3

Reasons:
    (check individual jobs above for details)
"""


def test_counts_per_rule_without_total():
    assert scheduled_jobs(STDOUT) == {"extract_activations": 1, "summary": 2}


def test_nothing_scheduled_is_empty():
    assert scheduled_jobs("Building DAG of jobs...\nNothing to be done (all requested files are present).\n") == {}


def test_first_table_only():
    twice = STDOUT + "\n" + STDOUT.replace("summary                    2", "summary                    9")
    assert scheduled_jobs(twice) == {"extract_activations": 1, "summary": 2}

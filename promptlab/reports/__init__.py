"""The reports stage: what a finished run folder says, read only from what the store wrote.

tables.py (the only pandas importer) builds results/summary/comparisons CSV and the HTML report
(html.py assembles it from page_data.py's grid and page_summary.py's summary); stats/ holds the
intervals and paired tests; compare.py compares two runs and keeps the baseline; gates.py turns
comparisons into CI verdicts; history.py lists earlier runs.

Nothing is imported here: the modules are imported by path, so that comparing runs or listing
their history does not load pandas.
"""

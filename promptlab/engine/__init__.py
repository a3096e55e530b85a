"""The engine stage: run the planned cells on the backends, cache and store the results.

runner.py loads each model once, runs and scores the cells and streams rows to the store;
handles.py holds a model (loaded on first use) and its generations through the cache;
services.py is the model access lent to checks (choices, judges, embeddings); cache.py is the
content-addressed result cache; store.py is the run folder (results.jsonl and manifest.json: the
contract that reports read); tune.py measures thread and batch settings.

Nothing is imported here: the modules are imported by path, so that a report, which reads only
the store, does not load the runner (and through it the planner, the suite and the backends).
"""

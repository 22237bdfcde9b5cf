"""`make bench`: this exporter against a naive official-SDK poller (see bench/run.py)."""

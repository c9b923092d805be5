"""Prometheus metrics: the series every samtune process records (`series.py`), how processes share them
(`multiprocess.py`), the request middleware (`middleware.py`), the facts read from the database and the broker at
scrape time (`collector.py`), and the `/metrics` route with its access rule (`router.py`, `access.py`)."""

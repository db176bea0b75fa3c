"""The Celery peer for the comparison: a trivial task on a Redis broker and result backend."""

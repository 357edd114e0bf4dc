"""The job runner: background work of the platform (ingestion into knowledge bases and
the Batch API's batches; tool tasks later), behind one small interface (runner.py).

In process on the embedded default (local.py); on procrastinate, a task queue kept in the
platform's PostgreSQL, when the database is PostgreSQL and several replicas share it
(postgres.py). Either way a job is idempotent and the database state it works on is the truth:
at start, and every while after, each kind of job is asked which of its jobs the database
says are unfinished, and those are submitted again.
"""

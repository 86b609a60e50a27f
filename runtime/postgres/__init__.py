"""PostgreSQL as every service uses it: engines and ``db upgrade``, the COPY upsert, and
retried batch writes."""

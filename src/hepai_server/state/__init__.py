"""State that processes share and that lives only while they run: the cache generation, and
the counters limits keep."""

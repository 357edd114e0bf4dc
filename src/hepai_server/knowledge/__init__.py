"""Knowledge bases: OpenAI's vector stores on the platform's own files, tools and models.

Chunking (chunking.py), Chinese and English full text (lexical.py), fusion (fusion.py), the
chunk index on SQLite or pgvector (index.py, sqlite_index.py, pgvector_index.py), retrieval
(retrieval.py), the stores and their files (service.py) and ingestion (ingestion.py).
"""

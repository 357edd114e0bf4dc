"""The `hepai-server` command line: serve, db, user, key."""

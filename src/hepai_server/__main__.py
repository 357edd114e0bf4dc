"""`python -m hepai_server` is the `hepai-server` command."""

from hepai_server.cli.main import cli

if __name__ == "__main__":
    cli()

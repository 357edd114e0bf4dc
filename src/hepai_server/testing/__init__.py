"""Test aids that ship with the package: a mock OpenAI-compatible upstream."""

"""The ASGI service: the OpenAI-compatible API in front of upstream providers."""

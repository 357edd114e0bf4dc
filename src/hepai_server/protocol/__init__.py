"""Wire formats only: the request fields the gateway reads, usage blocks and SSE framing. No I/O."""

"""What the platform lets each account spend and how fast: prices, budgets and rate limits, as
records and as the snapshots the gateway's limiter reads."""

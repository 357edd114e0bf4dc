"""The gateway's services: who calls, which models exist, relaying to providers and workers,
and recording usage. Built once per process by ``runtime.Gateway.start``."""

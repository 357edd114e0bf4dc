"""What the platform tells its operators: logs with the request id, Prometheus metrics, and
traces. Below everything but the errors, so any floor may report through it."""

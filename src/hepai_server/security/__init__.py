"""What keeps untrusted callers in bounds, as pure rules: secrets at rest, the addresses the
platform may call for a user (the egress guard), and the model names users may claim."""

"""What keeps untrusted callers in bounds: secrets at rest, the addresses the platform may call
for a user, the names users may claim, and sign-in throttling."""

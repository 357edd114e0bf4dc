"""The platform's records and the rules on them: accounts and keys, providers, the audit log and
usage reports. Functions take an open database session; callers commit."""

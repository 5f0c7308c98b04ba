"""Fleet identity: certificate authority, per-gateway bundles, broker config."""

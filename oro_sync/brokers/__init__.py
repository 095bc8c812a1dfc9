"""Brokers that span nodes (Redis), and what goes with them: the shard map,
the cluster presence registry and the broker settings."""

"""analytics: the append-only event log and its aggregates. RPC: list_events, summary, health."""

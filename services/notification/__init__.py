"""The notification service: every event becomes a stored notification, delivered by mail."""

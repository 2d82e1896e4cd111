"""Thin wrappers over the Kafka clients: configuration, admin, producers."""

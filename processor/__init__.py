"""Kafka event-trigger processor for AI agents."""

"""Matching: turn events, ticks and webhook deliveries into trigger fires."""

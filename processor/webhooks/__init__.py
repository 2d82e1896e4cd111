"""Webhooks: the gateway that accepts calls and the mapper that turns them into fires."""

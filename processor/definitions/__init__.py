"""Trigger definitions: the document model, loading files, and the live registry."""

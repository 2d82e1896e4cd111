"""The trigger language: durations, event-type patterns, conditions and webhook signature
schemes, as users write them in trigger documents.

A leaf: it imports nothing else of ours, so the definitions, the matchers and the
gateway can all build on it (tests/unit/test_layout.py holds that)."""

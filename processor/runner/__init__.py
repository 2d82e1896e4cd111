"""The reference agent runtime (`triggers runner`): for demos and tests, not production."""

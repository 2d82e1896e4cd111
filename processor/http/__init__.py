"""The HTTP service (`triggers serve`): webhook gateway, `/v1` API, health and metrics."""

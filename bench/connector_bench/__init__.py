"""The benchmark harness behind ``connector bench`` (see docs/performance.md)."""

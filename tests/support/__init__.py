"""Test support: fakes, clocks, builders and request helpers shared by the test modules."""

"""Test packages: reproduce their test tensors in emzoo, run bioimageio.core's test, report as JUnit."""

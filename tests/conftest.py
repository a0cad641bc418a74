"""Shared pytest configuration: the fixtures are fleet_testing.plugin's (fleet_testing/)."""

import pytest

# plain asserts in fleet_testing's helpers report their operands, like the tests' own
pytest.register_assert_rewrite("fleet_testing")

pytest_plugins = ["fleet_testing.plugin"]

"""Shared pytest configuration: fixture plugins live in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.bokeh",
    "tests.fixtures.web",
    "tests.fixtures.stack",
    "tests.fixtures.security",
]

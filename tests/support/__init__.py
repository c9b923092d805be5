"""Helpers the tests share: plain functions and classes, imported as `tests.support.<module>`. Fixtures live in
the conftest files; the few shared by several folders live in modules listed in the root conftest's
`pytest_plugins`."""

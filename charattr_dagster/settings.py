"""The Dagster layer's settings are charattr's one settings model, `charattr_core.settings.Settings`
(every setting, its `CHARATTR_*` variable and default; the README's table is generated from it).
This module keeps the old import path.

Definitions are built at load time from one `Settings.from_env()` value, so the resource
configuration and the `code_version`s that the UI uses to mark assets stale always agree.
"""

from charattr_core.settings import NO_WEIGHTS, Settings  # noqa: F401

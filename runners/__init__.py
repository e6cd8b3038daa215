"""BentoML services that each own one model and batch its requests."""

import quiet_imports  # noqa: F401  # before torch's libraries: their harmless import-time warnings

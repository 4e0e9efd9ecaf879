"""charattr core library: pure Python, no Dagster."""

__version__ = "0.1.0"

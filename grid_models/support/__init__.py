"""What every package builds on (``grid_models`` is the lowest layer, importable from
``agents`` and ``cosim``): the bounded YAML reader every file goes through
(``safe_yaml``), settings declared once with their defaults and bounds (``settings``),
and the packages' lazily imported public APIs (``lazy_api``)."""

__all__ = ["lazy_api", "safe_yaml", "settings"]

"""Kopf registrations. Importing this package registers every handler."""

from starkmatter_operator.handlers import children, lifecycle, resources

__all__ = ["children", "lifecycle", "resources"]

"""Converters for ``detforge convert``; see :mod:`detforge.commands.convert`."""

"""Sub-commands of the ``detforge`` CLI; see :mod:`detforge.cli` for the protocol."""

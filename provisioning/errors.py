"""The one error type the provisioning commands raise: its message is one line for a person."""

from __future__ import annotations


class ProvisionError(Exception):
    """A command cannot do what was asked; ``str()`` is one clear sentence."""

"""Outpost's shared core: the wire contract, config loading and form validation.

Both the gateway and the central bridge import this package; neither imports
the other.
"""

__version__ = "0.3.0"

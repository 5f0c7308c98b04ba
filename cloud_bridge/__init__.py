"""Outpost's central side: replays envelopes into the central database, dispatches down."""

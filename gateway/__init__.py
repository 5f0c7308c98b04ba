"""The Outpost gateway appliance: LAN API and web app, durable store, uplink."""

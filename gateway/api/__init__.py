"""The gateway's LAN API: views, errors, middlewares, OpenAPI document."""

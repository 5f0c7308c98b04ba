"""What both services' HTTP APIs share: the error type and middleware, the body readers.

Each service passes what differs (its code names, its sentences, its limits):
``gateway.api.middleware`` and ``cloud_bridge.app`` for the errors,
``gateway.api.inputs`` and ``cloud_bridge.views`` for the bodies.
"""

"""The labctl IPsec gateway: IKE daemon and userspace ESP/AH data plane.

Nothing in this package imports from the orchestrator (``labctl`` outside ``labctl.gateway``):
it runs in a small image with only ``cryptography`` and ``pyroute2``.
"""

__version__ = "0.1.0"

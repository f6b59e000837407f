"""labctl: a virtual IPsec lab with its own Python IPsec gateway."""

__version__ = "0.1.0"

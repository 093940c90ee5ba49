"""sensord: neighbourhood IoT sensors to closed-loop work orders."""

__version__ = "0.1.0"

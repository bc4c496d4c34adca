"""imagefs: an image library for hypervisor hosts that you mount."""

__version__ = "0.1.0"

"""hwnas: hardware-aware neural architecture search that compresses BERT for a device and a latency budget."""
__version__ = "0.1.0"

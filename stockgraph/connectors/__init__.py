"""WMS connectors: one runtime for every instance, one folder per dialect."""

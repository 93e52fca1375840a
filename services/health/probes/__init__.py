"""One module per dependency probe."""

"""jaxrec.bench."""

"""jaxrec.parallel."""

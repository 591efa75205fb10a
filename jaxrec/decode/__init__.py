"""jaxrec.decode."""

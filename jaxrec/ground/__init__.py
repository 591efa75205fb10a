"""jaxrec.ground."""

"""The top layer: `jaxrec train` / `eval` / `demo` / `baseline` commands that drive the recipes in
:mod:`jaxrec.methods` (each module exposes ``register(subparsers)``, wired in :mod:`jaxrec.cli`)."""

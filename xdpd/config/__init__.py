"""The configuration plane: the model, the schema walk, the hardened loader,
the file checks, the host plan and the reload classification.  Imports
only base modules (the host arrives as an object, never through netlink)."""

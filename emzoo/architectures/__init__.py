"""Self-contained network definitions.

Each module imports only torch, so that it can be copied into a model package as the
``pytorch_state_dict`` architecture source and run anywhere (bioimageio.core, deepImageJ tools).
"""

"""Drivers over many inputs: files and folders, slices, chunk plans, the streaming store, Dask."""

"""Training framework (needs torch: ``pip install emzoo[train]``)."""

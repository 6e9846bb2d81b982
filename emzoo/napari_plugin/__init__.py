"""The napari plugin (npe2): a reader for every format emzoo reads, a "Run model" widget and a writer.

The manifest is ``napari.yaml`` beside this file. ``reading``, ``writing``, ``layers`` and ``engine``
import neither napari nor Qt (they make and take napari's layer-data tuples); only ``widget`` does.
Installed with the ``napari`` extra: ``pip install -e ".[napari]"``.
"""

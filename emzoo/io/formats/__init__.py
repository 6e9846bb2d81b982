"""Built-in formats: importing a module registers its reader and writer."""

from emzoo.io.formats import numpy_npy, pillow_images, tiff  # noqa: F401

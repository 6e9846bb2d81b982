"""Built-in formats: importing a module registers its reader and writer."""

from emzoo.io.formats import dm, emd, mrc, numpy_npy, pillow_images, tiff, zarr_store  # noqa: F401

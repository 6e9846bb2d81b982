"""Reading and writing EM images: one registry of formats, atomic writes, input discovery."""

from emzoo.io.discover import InputFile, expand_inputs
from emzoo.io.formats.stack import read_slice_folder
from emzoo.io.lookup import find_reader, get_writer, list_readers, list_writers, read_image
from emzoo.io.meta import Image, ImageMeta
from emzoo.io.registry import register_reader, register_writer
from emzoo.io.write import write_image

__all__ = [
    "Image",
    "ImageMeta",
    "InputFile",
    "expand_inputs",
    "find_reader",
    "get_writer",
    "list_readers",
    "list_writers",
    "read_image",
    "read_slice_folder",
    "register_reader",
    "register_writer",
    "write_image",
]

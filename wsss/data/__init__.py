"""PASCAL VOC 2012 / SBD data: class names, palette, image and mask I/O, the reader and the synthetic generator."""

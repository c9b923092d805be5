"""Images and the geometry drawn on them, shared by datasets (ingest), versions and models (predict).

A pure library: no database, HTTP or object storage. Import each name from the module that owns it:
`formats` (which format a file is), `decode` (safe decoding: pixel limits, EXIF orientation, RGB),
`orientation` (the EXIF table that pixels and annotations agree on), `geometry` (boxes, polygons and
RLE masks on an image's pixels), `errors` (`InvalidImage`).
"""

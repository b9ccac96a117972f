"""orpheus-trio inside other frameworks, each an extra built on the public API only:
:mod:`.pipecat` (``pip install '.[pipecat]'``)."""

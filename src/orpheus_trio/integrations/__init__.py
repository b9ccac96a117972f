"""orpheus-trio inside other frameworks, each an extra built on the public API only:
:mod:`.asgi` (Starlette and FastAPI responses that report errors as HTTP statuses;
``pip install '.[examples]'``), :mod:`.pipecat` (``pip install '.[pipecat]'``)."""

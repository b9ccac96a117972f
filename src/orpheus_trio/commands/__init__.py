"""The ``orpheus-trio`` sub-commands that talk to a service: ``speak``, ``batch``, ``system``.

Each module exposes ``register(subparsers)``; ``cli.py`` lists them.
"""

"""The spatialgrid web service: a thin FastAPI adapter over the library.

Build the app with :func:`api.main.create_app`; run it with ``spatialgrid serve``.
"""

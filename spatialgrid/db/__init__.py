"""PostGIS storage for spatialgrid: engine, models, repository, migrations.

Only this package (and ``api/``) imports SQLAlchemy and GeoAlchemy2; the library
proper never does. Nothing here connects at import time: :func:`make_engine`
builds an engine when called, and with no ``SPATIALGRID_DATABASE_URL`` it starts
the embedded cluster of :mod:`spatialgrid.db.embedded`.

Typical use::

    from spatialgrid.db.engine import make_engine, session_scope
    from spatialgrid.db import repository

    engine = make_engine()
    with session_scope(engine) as session:
        repository.save_city(city, session=session)
"""

# mypy: disable-error-code="attr-defined"
# (geoalchemy2.alembic_helpers adds the *_geospatial_* operations at run time)
"""Incidents: the incident table, its transition log, reporters and their audit log.

Reporter details (name, phone) get a table of their own and every read of them is
logged in ``reporter_access_log`` (see spatialgrid.db.models.IncidentReporter).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 01:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "reporter_access_log",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "accessed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("key_id", sa.BigInteger(), nullable=True),
        sa.Column("key_name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), server_default="", nullable=False),
        sa.Column("found", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reporter_access_log")),
    )
    op.create_index(
        "ix_reporter_access_log_accessed_at",
        "reporter_access_log",
        ["accessed_at"],
        unique=False,
    )
    op.create_index(
        "ix_reporter_access_log_incident_id",
        "reporter_access_log",
        ["incident_id"],
        unique=False,
    )
    op.create_geospatial_table(
        "incidents",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("category_code", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text(), server_default="api", nullable=False),
        sa.Column("reported_by", sa.BigInteger(), nullable=True),
        sa.Column("stage", sa.Text(), server_default="collect", nullable=False),
        sa.Column("stage_entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("plan_id", sa.BigInteger(), nullable=True),
        sa.Column("grid_code", sa.Text(), nullable=True),
        sa.Column("community_code", sa.Text(), nullable=True),
        sa.Column("subdistrict_code", sa.Text(), nullable=True),
        sa.Column("worker_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "location_status", sa.Text(), server_default="inside", nullable=False
        ),
        sa.Column("boundary_distance_m", sa.Float(), nullable=True),
        sa.Column("duplicate_of", sa.BigInteger(), nullable=True),
        sa.Column(
            "geom",
            Geometry(
                geometry_type="POINT",
                srid=4490,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.CheckConstraint(
            "ST_GeometryType(geom) = 'ST_Point'", name=op.f("ck_incidents_geom_type")
        ),
        sa.CheckConstraint(
            "location_status IN ('inside', 'near_boundary', 'nearest', 'outside', 'no_plan')",
            name=op.f("ck_incidents_location_status"),
        ),
        sa.CheckConstraint(
            "source IN ('api', 'open311', 'demo', 'import')",
            name=op.f("ck_incidents_source"),
        ),
        sa.CheckConstraint(
            "stage IN ('collect', 'register', 'dispatch', 'handle', 'report_back', 'check', 'evaluate', 'closed', 'duplicate', 'not_responsible', 'no_action')",
            name=op.f("ck_incidents_stage"),
        ),
        sa.CheckConstraint(
            "duplicate_of IS NULL OR duplicate_of <> id",
            name=op.f("ck_incidents_not_self"),
        ),
        sa.ForeignKeyConstraint(
            ["duplicate_of"],
            ["incidents.id"],
            name=op.f("fk_incidents_duplicate_of_incidents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["grid_plans.id"],
            name=op.f("fk_incidents_plan_id_grid_plans"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["reported_by"],
            ["api_keys.id"],
            name=op.f("fk_incidents_reported_by_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["grid_workers.id"],
            name=op.f("fk_incidents_worker_id_grid_workers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    op.create_geospatial_index(
        "idx_incidents_geom",
        "incidents",
        ["geom"],
        unique=False,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        "ix_incidents_category_code_reported_at",
        "incidents",
        ["category_code", "reported_at"],
        unique=False,
    )
    op.create_index(
        "ix_incidents_community_code", "incidents", ["community_code"], unique=False
    )
    op.create_index(
        op.f("ix_incidents_duplicate_of"), "incidents", ["duplicate_of"], unique=False
    )
    op.create_index("ix_incidents_grid_code", "incidents", ["grid_code"], unique=False)
    op.create_index(
        "ix_incidents_reported_at", "incidents", ["reported_at"], unique=False
    )
    op.create_index("ix_incidents_stage", "incidents", ["stage"], unique=False)
    op.create_table(
        "incident_reporters",
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "name IS NOT NULL OR phone IS NOT NULL",
            name=op.f("ck_incident_reporters_something"),
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_reporters_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("incident_id", name=op.f("pk_incident_reporters")),
    )
    op.create_table(
        "incident_transitions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        sa.Column("from_stage", sa.Text(), nullable=False),
        sa.Column("to_stage", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("actor_key_id", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.CheckConstraint(
            "from_stage IN ('collect', 'register', 'dispatch', 'handle', 'report_back', 'check', 'evaluate', 'closed', 'duplicate', 'not_responsible', 'no_action')",
            name=op.f("ck_incident_transitions_from_stage"),
        ),
        sa.CheckConstraint(
            "to_stage IN ('collect', 'register', 'dispatch', 'handle', 'report_back', 'check', 'evaluate', 'closed', 'duplicate', 'not_responsible', 'no_action')",
            name=op.f("ck_incident_transitions_to_stage"),
        ),
        sa.ForeignKeyConstraint(
            ["actor_key_id"],
            ["api_keys.id"],
            name=op.f("fk_incident_transitions_actor_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_transitions_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_transitions")),
    )
    op.create_index(
        "ix_incident_transitions_incident_id_at",
        "incident_transitions",
        ["incident_id", "at"],
        unique=False,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(
        "ix_incident_transitions_incident_id_at", table_name="incident_transitions"
    )
    op.drop_table("incident_transitions")
    op.drop_table("incident_reporters")
    op.drop_index("ix_incidents_stage", table_name="incidents")
    op.drop_index("ix_incidents_reported_at", table_name="incidents")
    op.drop_index("ix_incidents_grid_code", table_name="incidents")
    op.drop_index(op.f("ix_incidents_duplicate_of"), table_name="incidents")
    op.drop_index("ix_incidents_community_code", table_name="incidents")
    op.drop_index("ix_incidents_category_code_reported_at", table_name="incidents")
    op.drop_geospatial_index(
        "idx_incidents_geom",
        table_name="incidents",
        postgresql_using="gist",
        column_name="geom",
    )
    op.drop_geospatial_table("incidents")
    op.drop_index(
        "ix_reporter_access_log_incident_id", table_name="reporter_access_log"
    )
    op.drop_index(
        "ix_reporter_access_log_accessed_at", table_name="reporter_access_log"
    )
    op.drop_table("reporter_access_log")

# mypy: disable-error-code="attr-defined"
# (geoalchemy2.alembic_helpers adds the *_geospatial_* operations at run time)
"""Initial schema: city layers, grid plans, grid workers, API keys.

Every geometry column is SRID 4490 with a GiST index (see spatialgrid.db.models).

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22 00:26:30.691236
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    # Needs a superuser the first time on an external database; a no-op after.
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_geospatial_table(
        "addresses",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("address_id", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("road", sa.Text(), nullable=True),
        sa.Column("number", sa.Text(), nullable=True),
        sa.Column("compound", sa.Text(), nullable=True),
        sa.Column("building", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=True),
        sa.Column("block_id", sa.Text(), nullable=True),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "geom",
            Geometry(
                geometry_type="POINT",
                srid=4490,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
            ),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_addresses")),
        sa.UniqueConstraint("address_id", name=op.f("uq_addresses_address_id")),
    )
    op.create_geospatial_index(
        "idx_addresses_geom",
        "addresses",
        ["geom"],
        unique=False,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        op.f("ix_addresses_block_id"), "addresses", ["block_id"], unique=False
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("salt", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('planner', 'operator', 'worker', 'consumer')",
            name=op.f("ck_api_keys_role"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_geospatial_table(
        "blocks",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("block_id", sa.Text(), nullable=False),
        sa.Column("community_code", sa.Text(), nullable=True),
        sa.Column("households", sa.Integer(), nullable=True),
        sa.Column("households_source", sa.Text(), nullable=True),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "geom",
            Geometry(
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
            "ST_GeometryType(geom) IN ('ST_Polygon', 'ST_MultiPolygon')",
            name=op.f("ck_blocks_geom_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocks")),
        sa.UniqueConstraint("block_id", name=op.f("uq_blocks_block_id")),
    )
    op.create_geospatial_index(
        "idx_blocks_geom",
        "blocks",
        ["geom"],
        unique=False,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        op.f("ix_blocks_community_code"), "blocks", ["community_code"], unique=False
    )
    op.create_geospatial_table(
        "buildings",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("building_id", sa.Text(), nullable=False),
        sa.Column("block_id", sa.Text(), nullable=True),
        sa.Column("compound_id", sa.Text(), nullable=True),
        sa.Column("levels", sa.Float(), nullable=True),
        sa.Column("households", sa.Integer(), nullable=True),
        sa.Column("households_source", sa.Text(), nullable=True),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "geom",
            Geometry(
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
            "ST_GeometryType(geom) IN ('ST_Polygon', 'ST_MultiPolygon')",
            name=op.f("ck_buildings_geom_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_buildings")),
        sa.UniqueConstraint("building_id", name=op.f("uq_buildings_building_id")),
    )
    op.create_geospatial_index(
        "idx_buildings_geom",
        "buildings",
        ["geom"],
        unique=False,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        op.f("ix_buildings_block_id"), "buildings", ["block_id"], unique=False
    )
    op.create_index(
        op.f("ix_buildings_compound_id"), "buildings", ["compound_id"], unique=False
    )
    op.create_table(
        "city_info",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("admin_code", sa.Text(), nullable=False),
        sa.Column("source_crs", sa.Text(), nullable=True),
        sa.Column(
            "report",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "saved_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_city_info")),
    )
    op.create_geospatial_table(
        "communities",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("community_code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("subdistrict_code", sa.Text(), nullable=True),
        sa.Column("households", sa.Integer(), nullable=True),
        sa.Column("generated", sa.Boolean(), server_default="false", nullable=False),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "geom",
            Geometry(
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
            "ST_GeometryType(geom) IN ('ST_Polygon', 'ST_MultiPolygon')",
            name=op.f("ck_communities_geom_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_communities")),
        sa.UniqueConstraint(
            "community_code", name=op.f("uq_communities_community_code")
        ),
    )
    op.create_geospatial_index(
        "idx_communities_geom",
        "communities",
        ["geom"],
        unique=False,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        op.f("ix_communities_subdistrict_code"),
        "communities",
        ["subdistrict_code"],
        unique=False,
    )
    op.create_geospatial_table(
        "compounds",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("compound_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("block_id", sa.Text(), nullable=True),
        sa.Column("households", sa.Integer(), nullable=True),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "geom",
            Geometry(
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
            "ST_GeometryType(geom) IN ('ST_Polygon', 'ST_MultiPolygon')",
            name=op.f("ck_compounds_geom_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compounds")),
        sa.UniqueConstraint("compound_id", name=op.f("uq_compounds_compound_id")),
    )
    op.create_geospatial_index(
        "idx_compounds_geom",
        "compounds",
        ["geom"],
        unique=False,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        op.f("ix_compounds_block_id"), "compounds", ["block_id"], unique=False
    )
    op.create_table(
        "grid_plans",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), server_default="draft", nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("effective_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "parameters",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "diagnostics",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "metrics",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status = 'draft' OR effective_from IS NOT NULL",
            name=op.f("ck_grid_plans_effective_set"),
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'active', 'retired')",
            name=op.f("ck_grid_plans_status"),
        ),
        sa.CheckConstraint(
            "effective_to IS NULL OR effective_from IS NULL OR effective_to >= effective_from",
            name=op.f("ck_grid_plans_effective_range"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grid_plans")),
    )
    op.create_index(
        "uq_grid_plans_one_active",
        "grid_plans",
        ["status"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "grid_workers",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("employee_no", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grid_workers")),
        sa.UniqueConstraint("employee_no", name=op.f("uq_grid_workers_employee_no")),
    )
    op.create_geospatial_table(
        "pois",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("poi_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("is_shop", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("block_id", sa.Text(), nullable=True),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
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
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pois")),
        sa.UniqueConstraint("poi_id", name=op.f("uq_pois_poi_id")),
    )
    op.create_geospatial_index(
        "idx_pois_geom",
        "pois",
        ["geom"],
        unique=False,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(op.f("ix_pois_block_id"), "pois", ["block_id"], unique=False)
    op.create_geospatial_table(
        "streets",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("street_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("highway", sa.Text(), nullable=True),
        sa.Column("internal", sa.Boolean(), server_default="false", nullable=False),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "geom",
            Geometry(
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
            "ST_GeometryType(geom) IN ('ST_LineString', 'ST_MultiLineString')",
            name=op.f("ck_streets_geom_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_streets")),
        sa.UniqueConstraint("street_id", name=op.f("uq_streets_street_id")),
    )
    op.create_geospatial_index(
        "idx_streets_geom",
        "streets",
        ["geom"],
        unique=False,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_geospatial_table(
        "subdistricts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("subdistrict_code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("level", sa.Text(), server_default="subdistrict", nullable=False),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "geom",
            Geometry(
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
            "ST_GeometryType(geom) IN ('ST_Polygon', 'ST_MultiPolygon')",
            name=op.f("ck_subdistricts_geom_type"),
        ),
        sa.CheckConstraint(
            "level IN ('district', 'subdistrict')", name=op.f("ck_subdistricts_level")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subdistricts")),
        sa.UniqueConstraint(
            "subdistrict_code", name=op.f("uq_subdistricts_subdistrict_code")
        ),
    )
    op.create_geospatial_index(
        "idx_subdistricts_geom",
        "subdistricts",
        ["geom"],
        unique=False,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_geospatial_table(
        "grids",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("plan_id", sa.BigInteger(), nullable=False),
        sa.Column("grid_code", sa.Text(), nullable=False),
        sa.Column("community_code", sa.Text(), nullable=True),
        sa.Column("households", sa.Integer(), nullable=True),
        sa.Column("n_blocks", sa.Integer(), nullable=True),
        sa.Column(
            "flags",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("worker_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "geom",
            Geometry(
                geometry_type="MULTIPOLYGON",
                srid=4490,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["grid_plans.id"],
            name=op.f("fk_grids_plan_id_grid_plans"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["grid_workers.id"],
            name=op.f("fk_grids_worker_id_grid_workers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grids")),
        sa.UniqueConstraint(
            "plan_id", "grid_code", name=op.f("uq_grids_plan_id_grid_code")
        ),
    )
    op.create_geospatial_index(
        "idx_grids_geom",
        "grids",
        ["geom"],
        unique=False,
        postgresql_using="gist",
        postgresql_ops={},
    )
    op.create_index(
        "ix_grids_plan_id_community_code",
        "grids",
        ["plan_id", "community_code"],
        unique=False,
    )
    op.create_index(op.f("ix_grids_worker_id"), "grids", ["worker_id"], unique=False)
    op.create_table(
        "plan_assignments",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("plan_id", sa.BigInteger(), nullable=False),
        sa.Column("block_id", sa.Text(), nullable=False),
        sa.Column("grid_code", sa.Text(), nullable=False),
        sa.Column("part_id", sa.Text(), nullable=True),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["grid_plans.id"],
            name=op.f("fk_plan_assignments_plan_id_grid_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_assignments")),
    )
    op.create_index(
        "ix_plan_assignments_plan_id_block_id",
        "plan_assignments",
        ["plan_id", "block_id"],
        unique=False,
    )
    op.create_index(
        "ix_plan_assignments_plan_id_grid_code",
        "plan_assignments",
        ["plan_id", "grid_code"],
        unique=False,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(
        "ix_plan_assignments_plan_id_grid_code", table_name="plan_assignments"
    )
    op.drop_index("ix_plan_assignments_plan_id_block_id", table_name="plan_assignments")
    op.drop_table("plan_assignments")
    op.drop_index(op.f("ix_grids_worker_id"), table_name="grids")
    op.drop_index("ix_grids_plan_id_community_code", table_name="grids")
    op.drop_geospatial_index(
        "idx_grids_geom",
        table_name="grids",
        postgresql_using="gist",
        column_name="geom",
    )
    op.drop_geospatial_table("grids")
    op.drop_geospatial_index(
        "idx_subdistricts_geom",
        table_name="subdistricts",
        postgresql_using="gist",
        column_name="geom",
    )
    op.drop_geospatial_table("subdistricts")
    op.drop_geospatial_index(
        "idx_streets_geom",
        table_name="streets",
        postgresql_using="gist",
        column_name="geom",
    )
    op.drop_geospatial_table("streets")
    op.drop_index(op.f("ix_pois_block_id"), table_name="pois")
    op.drop_geospatial_index(
        "idx_pois_geom", table_name="pois", postgresql_using="gist", column_name="geom"
    )
    op.drop_geospatial_table("pois")
    op.drop_table("grid_workers")
    op.drop_index(
        "uq_grid_plans_one_active",
        table_name="grid_plans",
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_table("grid_plans")
    op.drop_index(op.f("ix_compounds_block_id"), table_name="compounds")
    op.drop_geospatial_index(
        "idx_compounds_geom",
        table_name="compounds",
        postgresql_using="gist",
        column_name="geom",
    )
    op.drop_geospatial_table("compounds")
    op.drop_index(op.f("ix_communities_subdistrict_code"), table_name="communities")
    op.drop_geospatial_index(
        "idx_communities_geom",
        table_name="communities",
        postgresql_using="gist",
        column_name="geom",
    )
    op.drop_geospatial_table("communities")
    op.drop_table("city_info")
    op.drop_index(op.f("ix_buildings_compound_id"), table_name="buildings")
    op.drop_index(op.f("ix_buildings_block_id"), table_name="buildings")
    op.drop_geospatial_index(
        "idx_buildings_geom",
        table_name="buildings",
        postgresql_using="gist",
        column_name="geom",
    )
    op.drop_geospatial_table("buildings")
    op.drop_index(op.f("ix_blocks_community_code"), table_name="blocks")
    op.drop_geospatial_index(
        "idx_blocks_geom",
        table_name="blocks",
        postgresql_using="gist",
        column_name="geom",
    )
    op.drop_geospatial_table("blocks")
    op.drop_table("api_keys")
    op.drop_index(op.f("ix_addresses_block_id"), table_name="addresses")
    op.drop_geospatial_index(
        "idx_addresses_geom",
        table_name="addresses",
        postgresql_using="gist",
        column_name="geom",
    )
    op.drop_geospatial_table("addresses")

from __future__ import annotations

import numpy as np

import shapely

from spatialgrid.adjacency import (
    adjacency_lists,
    connected_components,
    pieces,
    shared_edges,
)
from spatialgrid.testing import box_lattice


def test_lattice_rook_edges_only():
    blocks = box_lattice(3, 3)
    edges = shared_edges(blocks)
    # 3x3 lattice: 12 rook edges, corners excluded
    assert len(edges) == 12
    assert np.allclose(edges["length_m"], 100.0, atol=0.05)
    nbrs = adjacency_lists(9, edges)
    assert sorted(len(n) for n in nbrs) == [2, 2, 2, 2, 3, 3, 3, 3, 4]


def test_corner_touch_is_not_adjacent():
    geoms = [shapely.box(0, 0, 10, 10), shapely.box(10, 10, 20, 20)]
    import geopandas as gpd

    frame = gpd.GeoDataFrame(geometry=geoms, crs="EPSG:4546")
    assert len(shared_edges(frame)) == 0
    assert list(connected_components(2, shared_edges(frame))) == [0, 1]


def test_components_of_island():
    blocks = box_lattice(4, 1)
    far = blocks.iloc[[0]].copy()
    far["geometry"] = far.geometry.translate(5000, 0)
    import pandas as pd

    both = pd.concat([blocks, far], ignore_index=True)
    labels = connected_components(len(both), shared_edges(both))
    assert len(set(labels[:4])) == 1
    assert labels[4] != labels[0]


def test_pieces_of_a_unit_subset():
    nbrs = [{1}, {0, 2}, {1, 3}, {2}]  # a path 0-1-2-3
    assert sorted(map(sorted, pieces({0, 1, 3}, nbrs))) == [[0, 1], [3]]
    assert pieces([], nbrs) == []
    assert len(pieces(range(4), nbrs)) == 1

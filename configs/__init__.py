"""YAML presets, shipped as package data (import name ``a3d_mesh_configs``)."""

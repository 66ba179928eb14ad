"""The a3d-mesh command-line tool (installed as the package ``a3d_mesh_cli``)."""

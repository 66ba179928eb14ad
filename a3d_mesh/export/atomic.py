"""The atomic writers now live in :mod:`a3d_mesh.atomic` (geometry and training use them too, and
should not import the export package for it); this name stays for the export writers."""

from a3d_mesh.atomic import atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]

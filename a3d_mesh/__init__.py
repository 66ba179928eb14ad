"""a3d-mesh: sets of structurally aligned, UV-textured 3D assets from text.

Data flows one way: prompts -> guidance; fields -> geometry -> render -> loss; trained model -> export.
See docs/conventions.md for the frames and tensor conventions every module follows.
"""

__version__ = "0.1.0"

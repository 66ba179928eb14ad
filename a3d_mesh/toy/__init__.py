"""The toy world: a small universe whose truth we know, for the offline demo and the alignment benchmark.

- ``shapes``: procedural furniture families (chair, stool, table, bench) sharing one structure,
  their parameter ranges, symmetry orders and colour vocabulary;
- ``data``: training renders at random yaw (the prior gets no canonical orientation);
- ``prior``: the pixel-space diffusion model in diffusers layout, and its sampler;
- ``train``: ``python -m a3d_mesh.toy.train``, the reproducible training command;
- ``scores``: what a prior prefers (denoising errors of rendered shapes under prompts).

The trained prior ships in ``assets/toy-prior`` and loads as ``guidance.model=toy``.
"""

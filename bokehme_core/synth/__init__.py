"""Synthetic data: a ground-truth thin-lens renderer for layered scenes and a procedural scene generator.

Used by training (``training/``), tests and the bundled demo (``assets/demo``); not used by the nodes.
Import the submodules directly: ``bokehme_core.synth.lens``, ``bokehme_core.synth.scene``,
``bokehme_core.synth.textures`` (the latter needs scikit-image, a development dependency, for photo crops).
"""

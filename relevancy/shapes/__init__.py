"""The shapes world: procedural scenes with ground truth, a CLIP-free detector, tiny-CLIP training.

Submodules: ``world`` (generator and caption grammar), ``detector`` (colour segmentation and
template matching), ``train`` (tiny open_clip CLIP training), ``evaluate`` (metrics).
CLI: ``python -m relevancy.shapes generate|train|evaluate ...``.
"""

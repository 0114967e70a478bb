"""Synthetic H&E image–mask pairs: the study's first answer to MoNuSeg's 30 training images.

- :mod:`nucseg.synth.masks`: random instance masks whose nuclei follow the measured statistics
  of the training set, per organ (shape, size, orientation, density, touching);
- :mod:`nucseg.synth.cyclegan`: the CycleGAN (mask <-> H&E) as a method on ``nucseg.engine``;
- :mod:`nucseg.synth.pairs`: turning random masks into image–mask pairs on disk
  (``nucseg synth``);
- :mod:`nucseg.synth.realism`: how good the pairs are: a real-versus-synthetic classifier
  two-sample test, stain and colour statistics, nuclear contrast.
"""

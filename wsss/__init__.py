"""The platform both pipeline stages build on: it imports neither `icd` nor `deeplab`.

- `wsss.core`: config, errors, atomic files, devices and GPU claims, checkpoints, shards, input digests,
  CLI plumbing;
- `wsss.data`: VOC classes and palette, image and mask I/O, the VOC/SBD reader and validation, the
  synthetic generator, transforms;
- `wsss.nets`: the VGG16 and ResNet101 backbones, weight loading and the input normalisation weights expect;
- `wsss.crf`: the dense CRF engine and the seed / reference CRF calls;
- `wsss.metrics`, `wsss.evaluation` (label maps on disk against the ground truth), `wsss.plots`, `wsss.training`
  (the training loop and what else every trainer shares);
- `wsss.workflow`: the data stage's planning and every stage's plumbing (the Snakefile's parse-time Python).

`icd` (the method) and `deeplab` (the segmentation stage) import it and never each other; the workflow
connects them through files.
"""

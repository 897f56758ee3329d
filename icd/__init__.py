"""ICD: Learning Integral Objects with Intra-Class Discriminator (Fan et al., CVPR 2020).

The core package of the pipeline: data, superpixels, the ICD model, seeds, CRF and metrics.
"""

__version__ = "0.1.0"

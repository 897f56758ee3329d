"""The segmentation stage: DeepLab-LargeFOV trained on ICD seeds; data and metrics come from `icd`."""

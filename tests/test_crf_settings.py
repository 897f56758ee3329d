"""The CRF settings objects: built from the config's sections (exactly their keys), and the call forms
that take them (the object, or its fields as keywords) give the same labels."""

from __future__ import annotations

import numpy as np
import pytest

from deeplab.infer import crf_refine
from wsss.core.config import load_config
from wsss.core.errors import ConfigError
from wsss.crf.refine import crf_official, refine_seed
from wsss.crf.settings import CRFSettings, SeedCRFSettings
from wsss.data.classes import IGNORE_LABEL, NUM_CLASSES


def test_the_config_sections_are_the_settings_fields():
    config = load_config()
    seed = SeedCRFSettings.from_config(config["crf"])
    assert {**seed.__dict__} == config["crf"]
    deeplab = CRFSettings.from_config(config["deeplab"]["crf"])
    assert {**deeplab.__dict__} == config["deeplab"]["crf"]
    assert isinstance(seed, CRFSettings)


def test_unknown_and_missing_keys_are_named():
    section = load_config()["crf"]
    with pytest.raises(ConfigError, match=r"deeplab\.crf: unknown confidence, min_probability \(CRFSettings"):
        CRFSettings.from_config(section, "deeplab.crf")
    with pytest.raises(ConfigError, match=r"missing confidence, min_probability"):
        SeedCRFSettings.from_config(load_config()["deeplab"]["crf"])
    with pytest.raises(ConfigError, match=r"unknown gaussian_std; missing gaussian_sxy"):
        refine_seed(
            np.zeros((4, 5, 3), np.uint8),
            np.zeros((4, 5), np.uint8),
            num_classes=NUM_CLASSES,
            **{("gaussian_std" if key == "gaussian_sxy" else key): value for key, value in section.items()},
        )


def test_object_and_keywords_give_the_same_labels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    seed = np.full((30, 40), IGNORE_LABEL, np.uint8)
    seed[5:15, 5:20], seed[18:28, 22:38] = 0, 6
    section = load_config()["crf"]
    settings = SeedCRFSettings.from_config(section)
    for function in (crf_official, refine_seed):
        np.testing.assert_array_equal(
            function(image, seed, settings, num_classes=NUM_CLASSES),
            function(image, seed, num_classes=NUM_CLASSES, **section),
        )
        with pytest.raises(TypeError, match="not both"):
            function(image, seed, settings, num_classes=NUM_CLASSES, iterations=3)
    probabilities = rng.dirichlet(np.ones(NUM_CLASSES), size=(30, 40)).transpose(2, 0, 1).astype(np.float32)
    deeplab = load_config()["deeplab"]["crf"]
    np.testing.assert_array_equal(
        crf_refine(image, probabilities, CRFSettings.from_config(deeplab)), crf_refine(image, probabilities, **deeplab)
    )
    with pytest.raises(TypeError, match="expected CRFSettings"):
        crf_refine(image, probabilities, deeplab)

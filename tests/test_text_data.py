"""Tests of train/text_data.py: the offline byte corpus, its split and the batch sampler."""

from __future__ import annotations

import os
import sysconfig

import numpy as np
import pytest

from train import text_data


@pytest.fixture(scope="module")
def corpus():
  return text_data.load_corpus(max_bytes=200_000, held_out=0.1)


def test_corpus_is_deterministic_sized_and_split_by_position(corpus):
  again = text_data.load_corpus(max_bytes=200_000, held_out=0.1)
  np.testing.assert_array_equal(corpus.train, again.train)
  np.testing.assert_array_equal(corpus.held_out, again.held_out)
  assert corpus.train.dtype == np.uint8
  assert corpus.train.size == 180_000 and corpus.held_out.size == 20_000
  # The files come in sorted order and the text is their concatenation, cut at max_bytes.
  assert list(corpus.files) == sorted(corpus.files) and corpus.files[0] == "argparse.py"
  first = os.path.join(sysconfig.get_paths()["stdlib"], "argparse.py")
  with open(first, "rb") as f:
    head = f.read(1000)
  assert bytes(corpus.train[:1000]) == head


def test_sample_batch_is_seeded_and_targets_are_next_bytes(corpus):
  x, y = text_data.sample_batch(corpus.train, np.random.default_rng(3), 4, 16)
  x2, y2 = text_data.sample_batch(corpus.train, np.random.default_rng(3), 4, 16)
  np.testing.assert_array_equal(x, x2)
  assert x.shape == y.shape == (4, 16) and x.dtype == np.int32
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
  # Each window is a contiguous piece of the training bytes.
  text = bytes(corpus.train)
  for row_x, row_y in zip(x, y, strict=True):
    assert bytes(np.append(row_x, row_y[-1]).astype(np.uint8)) in text


def test_held_out_windows_are_disjoint_from_training_text(corpus):
  (x, y), = list(text_data.held_out_batches(corpus.held_out, 8, 32, max_batches=1))
  assert x.shape == (8, 32)
  np.testing.assert_array_equal(x[1:, 0], y[:-1, -1])  # consecutive windows
  # The held-out bytes come after every training byte in the concatenation.
  whole = text_data.load_corpus(max_bytes=200_000, held_out=0.5)
  np.testing.assert_array_equal(np.concatenate([whole.train, whole.held_out]),
                                np.concatenate([corpus.train, corpus.held_out]))


def test_bad_arguments():
  with pytest.raises(ValueError, match="held_out"):
    text_data.load_corpus(held_out=1.0)
  with pytest.raises(ValueError, match="too short"):
    text_data.sample_batch(np.zeros(5, np.uint8), np.random.default_rng(0), 1, 5)

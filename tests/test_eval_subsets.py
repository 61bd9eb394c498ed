"""Labelled subsets: balanced, deterministic, nested, valid; index files; clear errors."""
import numpy as np
import pytest

from contrastive_jax.data.subsets import labelled_subset, write_index_file

# Imbalanced on purpose (class 3 has 20 examples, the others 50), plus unlabelled examples.
LABELS = np.concatenate([np.repeat(np.arange(10), np.where(np.arange(10) == 3, 20, 50)),
                         np.full(7, -1)])
LABELS = np.random.default_rng(0).permutation(LABELS)
N_LABELLED = int(np.sum(LABELS >= 0))


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.1, 0.5, 1.0])
def test_fraction_is_class_balanced_and_valid(fraction):
  idx = labelled_subset(LABELS, fraction=fraction, seed=3)
  assert len(idx) == max(1, round(fraction * N_LABELLED))
  assert idx.dtype.kind == "i" and np.all(np.diff(idx) > 0)  # Sorted, unique.
  assert idx.min() >= 0 and idx.max() < len(LABELS)
  assert np.all(LABELS[idx] >= 0)  # Never an unlabelled example.
  counts = np.bincount(LABELS[idx], minlength=10)
  sizes = np.bincount(LABELS[LABELS >= 0])
  if fraction < 1.0:
    # Balanced up to 1, except that a class that ran out holds all of its examples.
    room = counts < sizes
    assert counts[room].max() - counts[room].min() <= 1, counts
    assert np.all(counts[~room] <= counts[room].min())
  else:
    np.testing.assert_array_equal(idx, np.flatnonzero(LABELS >= 0))


def test_per_class_is_exact():
  idx = labelled_subset(LABELS, per_class=7, seed=1)
  np.testing.assert_array_equal(np.bincount(LABELS[idx], minlength=10), np.full(10, 7))


def test_deterministic_per_seed_and_different_across_seeds():
  a = labelled_subset(LABELS, fraction=0.1, seed=0)
  np.testing.assert_array_equal(a, labelled_subset(LABELS, fraction=0.1, seed=0))
  assert not np.array_equal(a, labelled_subset(LABELS, fraction=0.1, seed=1))
  assert not np.array_equal(labelled_subset(LABELS, per_class=3, seed=0),
                            labelled_subset(LABELS, per_class=3, seed=1))


def test_subsets_of_one_seed_are_nested():
  """Documented: for one seed, smaller subsets lie inside larger ones (as the papers' lists)."""
  chain = [labelled_subset(LABELS, fraction=f, seed=5) for f in (0.01, 0.1, 0.3, 1.0)]
  for small, big in zip(chain, chain[1:]):
    assert np.isin(small, big).all()
  assert np.isin(labelled_subset(LABELS, per_class=2, seed=5),
                 labelled_subset(LABELS, per_class=4, seed=5)).all()


def test_index_file_with_indices_comments_and_duplicates(tmp_path):
  path = tmp_path / "subset.txt"
  path.write_text("# 1% subset\n12\n\n3  extra columns are ignored\n12\n0 # first\n")
  np.testing.assert_array_equal(labelled_subset(LABELS, index_file=str(path)), [0, 3, 12])


def test_index_file_with_names(tmp_path):
  names = [f"/data/train/c{y}/img_{i:04d}.jpg" for i, y in enumerate(LABELS)]
  path = tmp_path / "subset.txt"
  path.write_text(f"img_0007.jpg\n{names[2]}\n5\nc{LABELS[9]}/img_0009.jpg\n")
  np.testing.assert_array_equal(labelled_subset(LABELS, index_file=str(path), names=names),
                                [2, 5, 7, 9])


def test_write_then_read_round_trip(tmp_path):
  idx = labelled_subset(LABELS, fraction=0.2, seed=2)
  path = str(tmp_path / "frozen.txt")
  write_index_file(path, idx, comment="fraction=0.2 seed=2")
  np.testing.assert_array_equal(labelled_subset(LABELS, index_file=path), idx)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), True])
def test_fraction_outside_range_names_fraction_and_range(fraction):
  with pytest.raises(ValueError, match=r"fraction.*\(0, 1\]"):
    labelled_subset(LABELS, fraction=fraction)


@pytest.mark.parametrize("content,bad", [("1\n2\n99999\n", "99999"), ("1\n-4\n", "-4"),
                                         ("cat.jpg\n", "cat.jpg")])
def test_index_file_naming_unknown_examples(tmp_path, content, bad):
  path = tmp_path / "subset.txt"
  path.write_text(content)
  with pytest.raises(ValueError, match=rf"unknown example.*{bad}"):
    labelled_subset(LABELS, index_file=str(path))


def test_other_errors(tmp_path):
  with pytest.raises(ValueError, match="exactly one"):
    labelled_subset(LABELS, fraction=0.1, per_class=2)
  with pytest.raises(ValueError, match="exactly one"):
    labelled_subset(LABELS)
  with pytest.raises(ValueError, match="per_class=21 exceeds the size of class 3 \\(20"):
    labelled_subset(LABELS, per_class=21)
  with pytest.raises(ValueError, match="does not exist"):
    labelled_subset(LABELS, index_file=str(tmp_path / "missing.txt"))
  with pytest.raises(ValueError, match="no labelled examples"):
    labelled_subset(np.full(10, -1), fraction=0.5)

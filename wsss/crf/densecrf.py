"""Mean-field inference for a fully connected CRF whose cost scales with the label count.

The model is pydensecrf's DenseCRF2D (Krähenbühl & Koltun 2011, the densecrf 2013 code): Gaussian
kernels approximated on a permutohedral lattice (Adams et al. 2010) with symmetric normalisation
K~ = D^-1/2 K D^-1/2 (D = K 1), diagonal label compatibility, Q <- softmax(-U + sum_k w_k K~_k Q).
pydensecrf pays a large per-pixel cost that does not depend on the label count (hash-table lattice
construction, 4-wide SSE padding, per-pixel Eigen loops). Here each lattice is built once per image
with vectorised numpy (simplices deduplicated before hashing; the position-only lattice cut from a
cached canvas), splat and slice are sparse matrices with the normalisation folded in (torch CSR,
MKL's products), and each iteration filters only L - 1 channels: marginals sum to 1, so the last
channel's filtered value is K~ 1 minus the others'.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas
import scipy.sparse
import torch

__all__ = ["LatticeFilter", "mean_field", "pixel_features", "spatial_filter"]


def pixel_features(
    height: int, width: int, sxy: float, image: np.ndarray | None = None, srgb: float = 1.0
) -> np.ndarray:
    """d x N float32 features as DenseCRF2D builds them: (x, y) / sxy, then (r, g, b) / srgb if given."""
    ys, xs = np.divmod(np.arange(height * width, dtype=np.float32), np.float32(width))
    rows = [xs / np.float32(sxy), ys / np.float32(sxy)]
    if image is not None:
        rows += [channel / np.float32(srgb) for channel in image.reshape(-1, 3).T.astype(np.float32)]
    return np.stack(rows)


def _pack(columns: list[np.ndarray], margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer columns (each N) -> one int64 per row, mixed radix over the observed ranges widened by
    `margin` (keys shifted by up to `margin` per coordinate pack linearly too). Returns (packed, radix)."""
    lows = [int(column.min()) - margin for column in columns]
    spans = [int(column.max()) + margin - low + 1 for column, low in zip(columns, lows, strict=True)]
    if np.log2(np.asarray(spans, dtype=np.float64)).sum() > 62:
        raise ValueError(f"lattice key ranges {spans} are too wide to pack into int64")
    packed = np.zeros(columns[0].shape, dtype=np.int64)
    for column, low, span in zip(columns[::-1], lows[::-1], spans[::-1], strict=True):
        packed *= span
        packed += column
        packed -= low
    return packed, np.concatenate([[1], np.cumprod(spans[:-1])]).astype(np.int64)


def _simplices(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per feature (features: d x N), the enclosing simplex as its remainder-0 vertex / (d+1) and the
    coordinates' ranks (both d+1 x N ints), and its N x d+1 barycentric weights: Adams et al. 2010 as
    densecrf computes it (float32, the same rounding and tie-breaking)."""
    d, n = features.shape
    d1 = d + 1
    scale = np.sqrt(2.0 / 3.0) * d1 / np.sqrt((np.arange(d) + 2.0) * (np.arange(d) + 1.0))
    scaled = features * scale.astype(np.float32)[:, None]
    # Elevate onto the plane sum = 0: e_0 = sum_k c_k, e_j = sum_{k>=j} c_k - j c_{j-1}.
    elevated = np.empty((d1, n), dtype=np.float32)
    suffix = np.zeros(n, dtype=np.float32)
    for j in range(d, 0, -1):
        elevated[j] = suffix - np.float32(j) * scaled[j - 1]
        suffix += scaled[j - 1]
    elevated[0] = suffix
    down = np.rint(elevated * np.float32(1.0 / d1))  # nearest remainder-0 point, coordinates / (d+1)
    residual = elevated - down * np.float32(d1)
    rank = np.zeros((d1, n), dtype=np.int8)  # order of the residuals; on ties the later one ranks higher
    for i in range(d):  # rank_i = i + #{j > i: r_i < r_j} - #{j < i: r_j < r_i}
        for j in range(i + 1, d1):
            smaller = residual[i] < residual[j]
            rank[i] += smaller
            rank[j] -= smaller
    rank += np.arange(d1, dtype=np.int8)[:, None]
    # A point whose rounded coordinates do not sum to 0 is brought back onto the plane by wrapping ranks.
    rank += down.sum(axis=0).astype(np.int8)
    wrap = (rank < 0).view(np.int8) - (rank > d).view(np.int8)
    rank += wrap * np.int8(d1)
    down = down.astype(np.int16)
    down += wrap
    # The residuals / (d+1) sorted in decreasing order (which is the rank order), r_0 >= ... >= r_d:
    # weight p is r_{d-p} - r_{d-p+1}, and weight 0 wraps around to 1 + r_d - r_0.
    ordered = (elevated - down * np.float32(d1)) * np.float32(1.0 / d1)
    larger = np.empty(n, dtype=np.float32)
    for start in range(d1):  # odd-even transposition sort of the d+1 rows, elementwise over points
        for i in range(start % 2, d, 2):
            np.maximum(ordered[i], ordered[i + 1], out=larger)
            np.minimum(ordered[i], ordered[i + 1], out=ordered[i + 1])
            ordered[i] = larger
    barycentric = np.empty((n, d1), dtype=np.float32)
    np.subtract(ordered[d - 1 :: -1], ordered[:0:-1], out=barycentric.T[1:])
    np.subtract(ordered[d] + 1, ordered[0], out=barycentric.T[0])
    return down, rank, barycentric


def _vertices(down: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lattice vertex ids of each feature's d+1 simplex corners (N x d+1, corner r = remainder r) and,
    per blur axis j, each vertex's two neighbours along it (d+1 x 2 x M, M where absent)."""
    d1, n = rank.shape
    d = d1 - 1
    # Neighbouring features mostly share a simplex: hash the distinct simplices only (pandas' hash
    # tables: linear time, where np.unique would sort).
    simplex, _ = _pack(list(down[:d]) + list(rank[:d]), margin=0)
    which, unique_simplices = pandas.factorize(simplex)
    first = np.empty(unique_simplices.size, dtype=np.intp)
    first[which] = np.arange(n)
    # Corner r: remainder-0 vertex + canonical[r, rank], canonical[r, k] = r, or r - (d+1) if k > d - r.
    corner = np.arange(d1)[:, None]
    keys = [d1 * down[i, first].astype(np.int32) + corner - d1 * (rank[i, first] > d - corner) for i in range(d)]
    packed, radix = _pack(keys, margin=d1)
    vertex, vertex_keys = pandas.factorize(packed.reshape(-1))
    lookup = pandas.Index(vertex_keys)
    m = vertex_keys.size
    neighbours = np.empty((d1, 2, m), dtype=np.int32)
    for axis in range(d1):
        along = radix[axis] * d1 if axis < d else 0  # key - 1 everywhere but +d on the axis, and the mirror
        for side, shift in enumerate((along - radix.sum(), radix.sum() - along)):
            found = lookup.get_indexer(vertex_keys + shift)
            neighbours[axis, side] = np.where(found >= 0, found, m)
    # np.take, not fancy indexing: several times faster for these row gathers.
    return np.take(np.ascontiguousarray(vertex.reshape(d1, -1).T, dtype=np.int32), which, axis=0), neighbours


def _torch_csr(matrix: scipy.sparse.csr_matrix) -> torch.Tensor:
    """Torch view of a scipy CSR matrix (torch's sparse products use MKL: several times faster than
    scipy's on one core); read-only arrays (a cached canvas) are copied, torch wants writable ones."""
    indptr, indices, data = (
        torch.from_numpy(np.require(array, requirements="W")) for array in (matrix.indptr, matrix.indices, matrix.data)
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(indptr, indices, data, size=matrix.shape, check_invariants=False)


class LatticeFilter:
    """Symmetrically normalised permutohedral Gaussian filter: x -> D^-1/2 alpha S^T B S D^-1/2 x for
    N x C float32 values, from each point's simplex corners (N x d+1 vertex ids), barycentric weights
    (N x d+1) and the vertices' blur neighbours (d+1 x 2 x M, M where absent)."""

    def __init__(self, corners: np.ndarray, barycentric: np.ndarray, neighbours: np.ndarray):
        n, d1 = corners.shape
        m = neighbours.shape[-1]
        self.vertices = m
        # B = B_d ... B_0 with B_j v = v + (v[n1] + v[n2]) / 2 as sparse matrices of 3 entries a row (an
        # absent neighbour: weight 0 on the vertex itself); densecrf's output scaling alpha is folded
        # into the first one.
        alpha = 1.0 / (1.0 + 2.0 ** (1 - d1))
        own = np.arange(m, dtype=np.int32)
        self._blurs = []
        for axis, sides in enumerate(neighbours):
            present = sides < m
            columns = np.stack([own, *np.where(present, sides, own)], axis=1)
            weights = np.stack(
                [np.ones(m, dtype=np.float32), *np.where(present, np.float32(0.5), np.float32(0))], axis=1
            ) * np.float32(alpha if axis == 0 else 1)
            self._blurs.append(
                _torch_csr(
                    scipy.sparse.csr_matrix(
                        (weights.reshape(-1), columns.reshape(-1), np.arange(0, 3 * m + 1, 3, dtype=np.int32)),
                        shape=(m, m),
                    )
                )
            )
        # Slice: N x M with the d+1 weights of each point; splat: its transpose (a linear-time conversion).
        rows = np.arange(0, n * d1 + 1, d1, dtype=np.int32)
        slicing = scipy.sparse.csr_matrix((barycentric.reshape(-1), corners.reshape(-1), rows), shape=(n, m))
        self._slice = _torch_csr(slicing)
        norm = 1.0 / np.sqrt(self._blur_and_slice(slicing.T @ np.ones(n, dtype=np.float32)) + 1e-20)  # D^-1/2
        # Fold D^-1/2 into the slice (per row = point; new values, the inputs stay untouched), then into
        # the splat by transposing.
        slicing = scipy.sparse.csr_matrix(
            ((barycentric * norm.astype(np.float32)[:, None]).reshape(-1), corners.reshape(-1), rows), shape=(n, m)
        )
        self._slice = _torch_csr(slicing)
        splatting = slicing.T.tocsr()
        self._splat = _torch_csr(splatting)
        self.filtered_ones = torch.from_numpy(self._blur_and_slice(_row_sums(splatting)))  # K~ 1

    @classmethod
    def from_features(cls, features: np.ndarray) -> LatticeFilter:
        """The filter over d x N features (already divided by their standard deviations)."""
        down, rank, barycentric = _simplices(np.ascontiguousarray(features, dtype=np.float32))
        corners, neighbours = _vertices(down, rank)
        return cls(corners, barycentric, neighbours)

    def _blur(self, lattice: torch.Tensor) -> torch.Tensor:
        for blur in self._blurs:
            lattice = blur @ lattice
        return lattice

    def _blur_and_slice(self, lattice: np.ndarray) -> np.ndarray:
        return (self._slice @ self._blur(torch.from_numpy(lattice.astype(np.float32))[:, None]))[:, 0].numpy()

    def __call__(self, values: torch.Tensor, weight: float = 1.0, add_to: torch.Tensor | None = None) -> torch.Tensor:
        """weight K~ values for N x C float32 values, added in place to `add_to` if given."""
        lattice = self._blur(self._splat @ values)
        if add_to is not None:
            return add_to.addmm_(self._slice, lattice, alpha=weight)
        filtered = self._slice @ lattice
        return filtered if weight == 1.0 else filtered.mul_(weight)


def _row_sums(matrix: scipy.sparse.csr_matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=1), dtype=np.float32).ravel()


_CANVAS = 128  # position lattices are built for canvases rounded up to this, then cropped


@functools.lru_cache(maxsize=4)
def _position_lattice(height: int, width: int, sxy: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    down, rank, barycentric = _simplices(pixel_features(height, width, sxy))
    corners, neighbours = _vertices(down, rank)
    lattice = corners.reshape(height, width, -1), barycentric.reshape(height, width, -1), neighbours
    for array in lattice:  # shared by every filter cut from it
        array.setflags(write=False)
    return lattice


@functools.lru_cache(maxsize=4)
def spatial_filter(height: int, width: int, sxy: float) -> LatticeFilter:
    """The position-only filter of an image shape, exactly the one built from its own pixels.

    A pixel's simplex and weights depend on its (x, y) only, so they are cut from a cached canvas
    lattice; the image's lattice is then the canvas vertices its pixels touch, renumbered, with blur
    neighbours kept only where they are touched too (densecrf's hash table holds exactly those).
    """
    canvas = (-(-height // _CANVAS) * _CANVAS, -(-width // _CANVAS) * _CANVAS, float(sxy))
    canvas_corners, canvas_weights, canvas_neighbours = _position_lattice(*canvas)
    d1, total = canvas_corners.shape[-1], canvas_neighbours.shape[-1]
    corners = canvas_corners[:height, :width].reshape(-1, d1)
    touched = np.zeros(total + 1, dtype=bool)  # the extra slot stands for "absent"
    touched[corners] = True
    kept = np.flatnonzero(touched)
    renumber = np.full(total + 1, kept.size, dtype=np.int32)
    renumber[kept] = np.arange(kept.size, dtype=np.int32)
    return LatticeFilter(
        np.take(renumber, corners),
        canvas_weights[:height, :width].reshape(-1, d1),
        renumber[canvas_neighbours[:, :, kept]],
    )


def mean_field(
    unary: np.ndarray,
    kernels: list[tuple[LatticeFilter, float]],
    iterations: int,
    label_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Marginals Q (L x N float32) after `iterations` mean-field updates from Q = softmax(-unary).

    unary: L x N energies, L >= 2. Each update adds the message g_l sum_k w_k K~_k Q_l to label l's
    logits (kernels: (K~_k, w_k); label_weights: g, default 1): densecrf's Potts compatibility w_k,
    or its diagonal compatibility -w_k g_l.
    """
    labels = unary.shape[0]
    if labels < 2 or not kernels:
        raise ValueError(
            f"mean_field needs at least 2 labels and a kernel, got unary of shape {unary.shape} "
            f"and {len(kernels)} kernels"
        )
    scale = (
        torch.ones(labels) if label_weights is None else torch.as_tensor(np.asarray(label_weights, dtype=np.float32))
    )
    base = torch.from_numpy(-np.asarray(unary, dtype=np.float32))  # a fresh array: safe to modify
    q = torch.softmax(base, dim=0)
    # Only the first L - 1 channels are filtered (F); the last label's message uses K~ Q_last =
    # K~ 1 - sum_l F_l, whose constant part is folded into `base`.
    base[-1] += scale[-1] * sum(weight * kernel.filtered_ones for kernel, weight in kernels)
    head = torch.empty(unary.shape[1], labels - 1)  # Q's first L - 1 rows as the sparse products want
    last = float(scale[-1])
    for _ in range(int(iterations)):
        head.T.copy_(q[:-1])
        filtered = None
        for kernel, weight in kernels:
            filtered = kernel(head, weight, add_to=filtered)
        # Logits: base + g_l F_l for the first L - 1 labels, base - g_last sum_l F_l for the last.
        logits = torch.empty_like(base)
        torch.addcmul(base[:-1], filtered.T, scale[:-1, None], out=logits[:-1])
        torch.sub(base[-1], filtered[:, 0], alpha=last, out=logits[-1])
        for column in range(1, labels - 1):  # column by column: torch reduces short rows slowly
            logits[-1].sub_(filtered[:, column], alpha=last)
        q = torch.softmax(logits, dim=0)
    return q.numpy()

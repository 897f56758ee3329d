"""Mean-field inference for a fully connected CRF whose cost scales with the label count.

The model is pydensecrf's DenseCRF2D (Krähenbühl & Koltun 2011, the densecrf 2013 code): a bilateral
(position + colour) and a position-only ("Gaussian") kernel, each with symmetric normalisation
K~ = D^-1/2 K D^-1/2 (D = K 1), diagonal label compatibility, Q <- softmax(-U + sum_k w_k K~_k Q).
pydensecrf pays a large per-pixel cost that does not depend on the label count (hash-table lattice
construction, 4-wide SSE padding, per-pixel Eigen loops). Here each iteration filters only L - 1
channels (marginals sum to 1, so the last channel's filtered value is K~ 1 minus the others').

Bilateral kernel: exactly densecrf's permutohedral lattice (Adams et al. 2010): the same vertices,
barycentric weights and [1 2 1] blur, built once per image with vectorised numpy (simplices
deduplicated before hashing); splat and slice are sparse matrices with the normalisation folded in
(torch CSR, MKL's products).

Position kernel: a Gaussian of std sxy pixels on the pixel grid (`GridGaussian`), not a lattice. Its
lattice would have more vertices than the image has pixels (~210k for sxy = 1 on 500 x 375, against
~20k for the bilateral one), so splatting, blurring and slicing it cost most of the time; the grid
Gaussian is separable: two 1D passes of 2 round(3 sxy) + 1 taps (banded matrix products), O(N x taps)
a channel, with nothing to build but the band. The std is the one the lattice realises: densecrf
scales features by sqrt(2/3) (d+1) onto the lattice plane, where its d+1 [1 2 1] / 4 blurs, each of
variance 1/2 along a lattice step of length sqrt(d (d+1)), add up to covariance 3/4 I in feature
units; the barycentric splat and slice, averaged over where a pixel falls in its simplex, add the
other 1/4 (for d = 1: linear interpolation of spacing sqrt(3)/2, 1/8 each). So the lattice kernel
averaged over positions has covariance sxy^2 I in pixels (measured 0.995-1.002 sxy for sxy 1..5;
tests/test_crf.py checks it). The approximation: the lattice kernel is neither Gaussian nor
shift-invariant. Its shape depends on a pixel's place in the lattice (even K~ 1 varies by up to 1 %
inside the image) and it ends at ~3.5 sxy (hence the truncation at 3 sxy). K~ Q differs from the
lattice's by 0.7-1.6 % (relative L2, on white noise; less on smooth marginals); labels after the seed
CRF agree with the official pydensecrf call on 99.7-100 % of pixels in tests/test_crf.py's synthetic
and photographic cases, sparse seeds (where the 0.1 rule decides most pixels) being the hardest. The
lattice's placement is itself arbitrary to that degree: on the same sparse seeds the official call run
on the mirrored image agrees with its own output on 99.1-99.99 %.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas
import scipy.sparse
import torch

__all__ = ["GridGaussian", "LatticeFilter", "mean_field", "pixel_features", "spatial_filter"]


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
    count = unique_simplices.size
    first = np.empty(count, dtype=np.intp)
    first[which] = np.arange(n)
    # Corner r: remainder-0 vertex + canonical[r, rank], canonical[r, k] = r, or r - (d+1) if k > d - r:
    # key_i = (d+1) down_i + r - (d+1) [rank_i > d - r] for the first d coordinates (they sum to 0). Each
    # lies in [(d+1) min down_i - (d+1), (d+1) max down_i + d]; widened by d+1 for the blur neighbours'
    # shifts (-1 and +d per coordinate, or the mirror), they pack into one int64 with mixed radix.
    down_u = np.take(down[:d], first, axis=1).astype(np.int64)
    rank_u = np.take(rank[:d], first, axis=1)
    lows = d1 * down_u.min(axis=1) - 2 * d1
    spans = d1 * down_u.max(axis=1) + d + d1 - lows + 1
    if np.log2(spans.astype(np.float64)).sum() > 62:
        raise ValueError(f"lattice key ranges {spans.tolist()} are too wide to pack into int64")
    radix = np.concatenate([[1], np.cumprod(spans[:-1])]).astype(np.int64)
    total = int(radix.sum())
    packed = np.empty((d1, count), dtype=np.int64)
    packed[0] = (radix[:, None] * d1 * down_u).sum(axis=0) - int((radix * lows).sum())
    # Corner r drops d+1 from the r coordinates ranked above d - r: going up one corner adds the one
    # ranked d + 1 - r (radix 0 for the last coordinate, which the key leaves out).
    by_rank = np.zeros((d1, count), dtype=np.int64)
    columns = np.arange(count)
    for i in range(d):
        by_rank[rank_u[i], columns] = radix[i]
    dropped = np.zeros(count, dtype=np.int64)
    for corner in range(1, d1):
        dropped += by_rank[d1 - corner]
        np.subtract(packed[0] + corner * total, d1 * dropped, out=packed[corner])
    vertex, vertex_keys = pandas.factorize(packed.reshape(-1))
    lookup = pandas.Index(vertex_keys)
    m = vertex_keys.size
    # Along axis j the neighbours are key - 1 everywhere but +d on j, and the mirror: look up one side,
    # the other is its inverse (v's neighbour u on one side has v on the other).
    neighbours = np.full((d1, 2, m + 1), m, dtype=np.int32)
    own = np.arange(m, dtype=np.int32)
    for axis in range(d1):
        along = radix[axis] * d1 if axis < d else 0
        found = lookup.get_indexer(vertex_keys + (along - total))
        neighbours[axis, 0, :m] = np.where(found >= 0, found, m)
        neighbours[axis, 1, neighbours[axis, 0, :m]] = own
    # np.take, not fancy indexing: several times faster for these row gathers.
    corners = np.take(np.ascontiguousarray(vertex.reshape(d1, -1).T, dtype=np.int32), which, axis=0)
    return corners, np.ascontiguousarray(neighbours[:, :, :m])


def _torch_csr(matrix: scipy.sparse.csr_matrix) -> torch.Tensor:
    """Torch view of a scipy CSR matrix (torch's sparse products use MKL: several times faster than
    scipy's on one core); read-only arrays are copied, torch wants writable ones."""
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

    channels_first = False  # values N x C

    def __init__(self, corners: np.ndarray, barycentric: np.ndarray, neighbours: np.ndarray):
        n, d1 = corners.shape
        m = neighbours.shape[-1]
        self.vertices = m
        # B = B_d ... B_0 with B_j v = v + (v[n1] + v[n2]) / 2 as sparse matrices of 3 entries a row (an
        # absent neighbour: weight 0 on the vertex itself); densecrf's output scaling alpha is folded
        # into the first one.
        alpha = 1.0 / (1.0 + 2.0 ** (1 - d1))
        present = neighbours < m
        own = np.broadcast_to(np.arange(m, dtype=np.int32), (d1, 1, m))
        columns = np.concatenate([own, np.where(present, neighbours, own)], axis=1).transpose(0, 2, 1)
        weights = np.concatenate(
            [np.ones((d1, 1, m), dtype=np.float32), np.where(present, np.float32(0.5), np.float32(0))], axis=1
        ).transpose(0, 2, 1)
        weights[0] *= np.float32(alpha)
        indptr = np.arange(0, 3 * m + 1, 3, dtype=np.int32)
        self._blurs = [
            _torch_csr(scipy.sparse.csr_matrix((data.reshape(-1), index.reshape(-1), indptr), shape=(m, m)))
            for data, index in zip(weights, columns, strict=True)
        ]
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


class GridGaussian:
    """Symmetrically normalised Gaussian filter over the pixel grid: x -> D^-1/2 G D^-1/2 x for C x N float32
    values (channels first, N = height x width row-major), G_ij = exp(-|p_i - p_j|^2 / (2 std^2)) over pixel
    positions truncated to |dy|, |dx| <= radius, D = G 1 (the outer product of the two axes' filtered ones).

    G is separable: a 1D pass along x, then along y, each a matrix product with one banded block (blocks
    of B outputs from B + 2 radius inputs: MKL's sgemm, where shifted adds, one array pass a tap, were
    bound by memory). Each channel is padded with at least `radius` zero columns and rows and the channels
    are laid out flat between `radius` zeros, so every pass's blocks, over all channels at once, are one
    strided view: a block's reach ends in zeros wherever the image does."""

    channels_first = True

    def __init__(self, height: int, width: int, std: float, truncate: float = 3.0):
        self.shape = (height, width)
        self.radius = radius = max(1, int(truncate * std + 0.5))
        self.taps = [float(np.exp(-0.5 * (k / std) ** 2)) for k in range(radius + 1)]
        self._block = block = max(16, 1 << (radius - 1).bit_length())
        band = np.zeros((block + 2 * radius, block), dtype=np.float32)
        for shift in range(-radius, radius + 1):
            band[np.arange(block) + radius + shift, np.arange(block)] = self.taps[abs(shift)]
        self._across = torch.from_numpy(band)  # windows (.., B + 2r) @ band -> (.., B)
        self._down = torch.from_numpy(np.ascontiguousarray(band.T))  # band^T @ windows (B + 2r, ..)
        self._padded = (-(-(height + radius) // block) * block, -(-(width + radius) // block) * block)
        norm = 1.0 / np.sqrt(np.outer(self._line_of_ones(height), self._line_of_ones(width)))
        self._norm = torch.from_numpy(norm.astype(np.float32))  # D^-1/2, H x W
        self.filtered_ones = self(torch.ones(1, height * width))[0]  # K~ 1

    def _line_of_ones(self, length: int) -> np.ndarray:
        """The 1D kernel applied to a line of ones: each position's kept weight (float64)."""
        ones, out = np.ones(length), np.full(length, self.taps[0])
        for shift, tap in enumerate(self.taps[1:length], 1):
            out[shift:] += tap * ones[:-shift]
            out[:-shift] += tap * ones[shift:]
        return out

    def __call__(self, values: torch.Tensor, weight: float = 1.0, add_to: torch.Tensor | None = None) -> torch.Tensor:
        """weight K~ values for C x N float32 values, added in place to `add_to` (C x N) if given."""
        (height, width), radius, block = self.shape, self.radius, self._block
        rows, columns = self._padded
        channels = values.shape[0]
        # Every channel as `rows` x `columns` (zero beyond the image: >= radius of them), laid out flat
        # between `radius` zeros: a pixel's x neighbours within reach are its row's or zeros.
        across = torch.empty(radius + channels * rows * columns + radius)
        across[:radius] = 0
        across[-radius:] = 0
        padded = across[radius:-radius].view(channels, rows, columns)
        padded[:, height:] = 0
        padded[:, :height, width:] = 0
        torch.mul(values.view(channels, height, width), self._norm, out=padded[:, :height, :width])
        windows = across.as_strided((channels * rows * columns // block, block + 2 * radius), (block, 1))
        # The x pass's output, between `radius` zero rows: a pixel's y neighbours within reach are its
        # channel's rows or zero rows (the previous channel's padding).
        down = torch.empty(radius + channels * rows + radius, columns)
        down[:radius] = 0
        down[-radius:] = 0
        torch.matmul(windows, self._across, out=down[radius:-radius].view(-1, block))
        windows = down.as_strided(
            (channels * rows // block, block + 2 * radius, columns), (block * columns, columns, 1)
        )
        filtered = torch.matmul(self._down, windows).view(channels, rows, columns)[:, :height, :width]
        scale = self._norm if weight == 1.0 else self._norm * weight
        if add_to is None:
            return torch.mul(filtered, scale).view(channels, -1)
        add_to.view(channels, height, width).addcmul_(filtered, scale)
        return add_to


@functools.lru_cache(maxsize=8)
def spatial_filter(height: int, width: int, sxy: float) -> GridGaussian:
    """The position-only ("Gaussian") kernel of an image shape: the grid Gaussian of std `sxy` pixels, the
    std densecrf's permutohedral lattice realises for features (x, y) / sxy (see the module docstring)."""
    return GridGaussian(height, width, float(sxy))


def mean_field(
    unary: np.ndarray,
    kernels: list[tuple[LatticeFilter | GridGaussian, float]],
    iterations: int,
    label_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Marginals Q (L x N float32) after `iterations` mean-field updates from Q = softmax(-unary).

    unary: L x N energies, L >= 2. Each update adds the message g_l sum_k w_k K~_k Q_l to label l's
    logits (kernels: (K~_k, w_k); label_weights: g, default 1): densecrf's Potts compatibility w_k,
    or its diagonal compatibility -w_k g_l. A kernel is called as K~(values, weight, add_to) on C x N
    values if its `channels_first` (GridGaussian), else on N x C ones (LatticeFilter), and has
    `filtered_ones` (K~ 1).
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
    # Kernels take Q's first L - 1 rows as C x N (`channels_first`: the grid filter) or N x C (the
    # lattice's sparse products want that layout, copied once an iteration).
    pixels_first = [(kernel, weight) for kernel, weight in kernels if not kernel.channels_first]
    channels_first = [(kernel, weight) for kernel, weight in kernels if kernel.channels_first]
    head = torch.empty(unary.shape[1], labels - 1) if pixels_first else None
    last = float(scale[-1])
    logits = torch.empty_like(base)
    for _ in range(int(iterations)):
        filtered = None  # F, C x N
        for kernel, weight in channels_first:
            filtered = kernel(q[:-1], weight, add_to=filtered)
        if pixels_first:
            head.T.copy_(q[:-1])
            by_pixel = None
            for kernel, weight in pixels_first:
                by_pixel = kernel(head, weight, add_to=by_pixel)
            filtered = by_pixel.T if filtered is None else filtered.add_(by_pixel.T)
        # Logits: base + g_l F_l for the first L - 1 labels, base - g_last sum_l F_l for the last.
        torch.addcmul(base[:-1], filtered, scale[:-1, None], out=logits[:-1])
        torch.sub(base[-1], filtered[0], alpha=last, out=logits[-1])
        for row in filtered[1:]:  # row by row: F may be a transposed N x C view, slow to reduce across
            logits[-1].sub_(row, alpha=last)
        q = torch.softmax(logits, dim=0)
    return q.numpy()

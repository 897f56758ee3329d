"""Mean-field inference for a fully connected CRF whose cost scales with the label count.

The model is pydensecrf's DenseCRF2D (Krähenbühl & Koltun 2011, the densecrf 2013 code): a bilateral
(position + colour) and a position-only ("Gaussian") kernel, each with symmetric normalisation
K~ = D^-1/2 K D^-1/2 (D = K 1), diagonal label compatibility, Q <- softmax(-U + sum_k w_k K~_k Q).
pydensecrf pays a large per-pixel cost that does not depend on the label count (hash-table lattice
construction, 4-wide SSE padding, per-pixel Eigen loops). Here each iteration filters only L - 1
channels (marginals sum to 1, so the last channel's filtered value is K~ 1 minus the others').

Both kernels and the lattice's construction are compiled with numba: single-threaded loops (the pipeline
runs one job per core), `cache=True` (compiled once per machine, ~12 s; each process then loads them from
wsss/crf/__pycache__ in ~0.5 s). Float32 vectors of 4 or 8 lanes are spelled out as LLVM vector loads,
stores and arithmetic (`_load`, `_store`, `_axpy`, ...; plain multiplications and additions, never fused
or reordered): numba leaves these loops scalar, 2x slower. Every loop runs in a fixed order: the same
input gives bit-identical output on every call. On 500 x 375 images a lattice pass is 2-2.4x faster than
the torch CSR products it replaced, a grid pass 1.5-2.3x faster than banded matrix products, and the
lattice is built 2-3x faster than with vectorised numpy and pandas' hash tables.

Bilateral kernel: exactly densecrf's permutohedral lattice (Adams et al. 2010): the same vertices (in the
same order), barycentric weights and [1 2 1] blur. `_simplices` is densecrf's Permutohedral::init for 8
features a vector (float32, the same rounding and tie-breaking); `_vertices` hashes the simplex corners,
packed into one int64 each, in an open-addressing table (densecrf hashes d shorts). Splat, blur and slice
are one compiled pass (`_lattice_filter`) over 4 channels at a time, with the normalisation folded into the
weights (`_normalise`).

Position kernel: a Gaussian of std sxy pixels on the pixel grid (`GridGaussian`), not a lattice. Its
lattice would have more vertices than the image has pixels (~210k for sxy = 1 on 500 x 375, against
~20k for the bilateral one), so splatting, blurring and slicing it cost most of the time; the grid
Gaussian is separable: two 1D passes of 2 round(3 sxy) + 1 taps (`_grid_filter`, 32 pixels a step),
O(N x taps) a channel, with nothing to build but the taps. The std is the one the lattice realises: densecrf
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

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import RequireLiteralValue
from numba.extending import intrinsic, models, register_model

__all__ = ["GridGaussian", "LatticeFilter", "mean_field", "pixel_features", "spatial_filter"]

_EMPTY = -1  # an unused hash-table row (packed vertex keys are >= 0)
_TABLE_BITS = 12  # the vertex hash table's first size, 2^12 rows (doubled as needed)
_RECENT_BITS = 12  # the direct-mapped table of recently met vertices, 2^12 rows


class _Vector(types.Type):
    """`lanes` float32 in one value: an LLVM <lanes x float> in registers, for loops over channels or pixels
    that numba's own code leaves scalar. Made and used only through the intrinsics below (arrays are
    C-contiguous float32, indexed flat, with no bounds check)."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__(name=f"float32x{lanes}")


@register_model(_Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.FloatType(), fe_type.lanes))


def _flat_float32(array_type) -> bool:
    return isinstance(array_type, types.Array) and array_type.dtype == types.float32 and array_type.layout == "C"


def _vector_pointer(context, builder, array_type, array, start, start_type, lanes: int):
    data = context.make_array(array_type)(context, builder, array).data
    at = context.cast(builder, start, start_type, types.intp)
    return builder.bitcast(builder.gep(data, [at]), ir.VectorType(ir.FloatType(), lanes).as_pointer())


def _broadcast(builder, scalar, lanes: int):
    vector = builder.insert_element(
        ir.Constant(ir.VectorType(ir.FloatType(), lanes), None), scalar, ir.Constant(ir.IntType(32), 0)
    )
    return builder.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


@intrinsic
def _load(typingctx, array, start, lanes):
    """array.flat[start : start + lanes] as a vector."""
    if not isinstance(lanes, types.IntegerLiteral):
        raise RequireLiteralValue("_load: `lanes` must be a constant")
    if not (_flat_float32(array) and isinstance(start, types.Integer)):
        return None
    result = _Vector(lanes.literal_value)

    def codegen(context, builder, signature, args):
        pointer = _vector_pointer(context, builder, array, args[0], args[1], start, result.lanes)
        return builder.load(pointer, align=4)

    return result(array, start, lanes), codegen


@intrinsic
def _store(typingctx, array, start, vector):
    """array.flat[start : start + lanes] = vector."""
    if not (_flat_float32(array) and isinstance(start, types.Integer) and isinstance(vector, _Vector)):
        return None

    def codegen(context, builder, signature, args):
        builder.store(args[2], _vector_pointer(context, builder, array, args[0], args[1], start, vector.lanes), align=4)
        return context.get_dummy_value()

    return types.void(array, start, vector), codegen


@intrinsic
def _pack(typingctx, a, b, c, e):
    """Four float32 scalars as one vector."""
    scalars = (a, b, c, e)
    if not all(scalar == types.float32 for scalar in scalars):
        return None
    result = _Vector(len(scalars))

    def codegen(context, builder, signature, args):
        vector = ir.Constant(ir.VectorType(ir.FloatType(), result.lanes), None)
        for lane, scalar in enumerate(args):
            vector = builder.insert_element(vector, scalar, ir.Constant(ir.IntType(32), lane))
        return vector

    return result(*scalars), codegen


@intrinsic
def _fill(typingctx, value, lanes):
    """A vector of `lanes` copies of the float32 `value`."""
    if not isinstance(lanes, types.IntegerLiteral):
        raise RequireLiteralValue("_fill: `lanes` must be a constant")
    if value != types.float32:
        return None
    result = _Vector(lanes.literal_value)

    def codegen(context, builder, signature, args):
        return _broadcast(builder, args[0], result.lanes)

    return result(value, lanes), codegen


@intrinsic
def _unpack(typingctx, vector):
    """The vector's lanes as a tuple of float32."""
    if not isinstance(vector, _Vector):
        return None
    result = types.UniTuple(types.float32, vector.lanes)

    def codegen(context, builder, signature, args):
        lanes = [builder.extract_element(args[0], ir.Constant(ir.IntType(32), lane)) for lane in range(vector.lanes)]
        return context.make_tuple(builder, result, lanes)

    return result(vector), codegen


def _lanewise(name: str, doc: str, operation):
    """An intrinsic `name`(x, y) -> operation(builder, x, y) on two vectors, or on a vector and a float32
    scalar (in every lane) either way round."""

    def typer(typingctx, x, y):
        vector = y if isinstance(y, _Vector) else x
        if not (isinstance(vector, _Vector) and {x, y} <= {vector, types.float32}):
            return None

        def codegen(context, builder, signature, args):
            first, second = (
                _broadcast(builder, value, vector.lanes) if kind == types.float32 else value
                for value, kind in zip(args, (x, y), strict=True)
            )
            return operation(builder, first, second)

        return vector(x, y), codegen

    typer.__name__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


_add = _lanewise("_add", "x + y, lane by lane.", lambda builder, x, y: builder.fadd(x, y))
_subtract = _lanewise("_subtract", "x - y, lane by lane.", lambda builder, x, y: builder.fsub(x, y))
_multiply = _lanewise("_multiply", "x * y, lane by lane.", lambda builder, x, y: builder.fmul(x, y))
_maximum = _lanewise(
    "_maximum", "max(x, y), lane by lane (no NaN).", lambda b, x, y: b.select(b.fcmp_ordered(">", x, y), x, y)
)
_minimum = _lanewise(
    "_minimum", "min(x, y), lane by lane (no NaN).", lambda b, x, y: b.select(b.fcmp_ordered("<", x, y), x, y)
)
_less = _lanewise(
    "_less",
    "1 where x < y, else 0, lane by lane.",
    lambda b, x, y: b.uitofp(b.fcmp_ordered("<", x, y), x.type),
)


@intrinsic
def _rint(typingctx, x):
    """Each lane rounded to the nearest integer, ties to even (np.rint, SSE's default rounding)."""
    if not isinstance(x, _Vector):
        return None

    def codegen(context, builder, signature, args):
        vector_type = args[0].type
        name = f"llvm.rint.v{vector_type.count}f32"
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector_type, [vector_type]), name)
        return builder.call(function, [args[0]])

    return x(x), codegen


@intrinsic
def _axpy(typingctx, scale, x, y):
    """y + scale * x, lane by lane (scale: a float32 scalar; a multiplication, then an addition)."""
    if not (isinstance(x, _Vector) and x == y and scale == types.float32):
        return None

    def codegen(context, builder, signature, args):
        return builder.fadd(args[2], builder.fmul(_broadcast(builder, args[0], x.lanes), args[1]))

    return x(scale, x, y), codegen


def pixel_features(
    height: int, width: int, sxy: float, image: np.ndarray | None = None, srgb: float = 1.0
) -> np.ndarray:
    """d x N float32 features as DenseCRF2D builds them: (x, y) / sxy, then (r, g, b) / srgb if given
    (float32 divisions of the integers, as its C++ does)."""
    features = np.empty((2 if image is None else 5, height * width), dtype=np.float32)
    features[0].reshape(height, width)[:] = np.arange(width, dtype=np.float32) / np.float32(sxy)
    features[1].reshape(height, width)[:] = (np.arange(height, dtype=np.float32) / np.float32(sxy))[:, None]
    if image is not None:
        np.divide(image.reshape(-1, 3).T, np.float32(srgb), out=features[2:], dtype=np.float32)
    return features


def _elevation_scales(d: int) -> np.ndarray:
    """densecrf's float32 feature scales onto the lattice plane: sqrt(2/3) (d+1) / sqrt((i+1)(i+2)), with
    its roundings (sqrt(2/3) (d+1) to float32 first, each product in double, then to float32)."""
    inverse_std = float(np.float32(np.sqrt(2.0 / 3.0) * (d + 1)))
    return np.array([1.0 / np.sqrt((i + 2) * (i + 1)) * inverse_std for i in range(d)], dtype=np.float32)


@numba.njit(cache=True)
def _simplices(features, scales):
    """Per feature (features: d x N float32, C-contiguous), the enclosing simplex: its remainder-0 vertex /
    (d+1) and the ranks of the first d coordinates (both d x N float32, integers), and its barycentric
    weights (N x d+1); also the smallest and largest remainder-0 coordinates / (d+1) (d x 8: per lane).

    densecrf's Permutohedral::init (Adams et al. 2010) for 8 features at a time, as its SSE code does 4:
    float32 with its rounding (to nearest, ties to even) and tie-breaking. Its scatter of the residuals
    by rank is a sort here: weight p is r_{d-p} - r_{d-p+1} with the residuals / (d+1) in decreasing order
    (the rank order), weight 0 wraps around to r_d + (1 - r_0), the same float32 operations."""
    d, n = features.shape
    d1 = d + 1
    lanes = 8
    down_factor = np.float32(1.0 / d1)
    up_factor = np.float32(d1)
    zero, one = np.float32(0), np.float32(1)
    down = np.empty((d, n), dtype=np.float32)
    ranks = np.empty((d, n), dtype=np.float32)
    barycentric = np.empty((n, d1), dtype=np.float32)
    tail = np.empty((d, lanes), dtype=np.float32)  # the last features, the last one repeated
    # Per coordinate k, the 8 features' values at k * 8.
    elevated = np.empty(d1 * lanes, dtype=np.float32)
    vertex = np.empty(d1 * lanes, dtype=np.float32)
    residual = np.empty(d1 * lanes, dtype=np.float32)
    rank = np.empty(d1 * lanes, dtype=np.float32)
    ordered = np.empty(d1 * lanes, dtype=np.float32)
    weights = np.empty(d1 * lanes, dtype=np.float32)
    lowest = np.empty(d * lanes, dtype=np.float32)
    highest = np.empty(d * lanes, dtype=np.float32)
    for start in range(0, n, lanes):
        source, at, stride = features, start, n
        if start + lanes > n:
            for j in range(d):
                for lane in range(lanes):
                    tail[j, lane] = features[j, min(start + lane, n - 1)]
            source, at, stride = tail, 0, lanes
        # Elevate onto the plane sum = 0: e_0 = sum_k c_k, e_j = sum_{k>=j} c_k - j c_{j-1}.
        total = _fill(zero, 8)
        for j in range(d, 0, -1):
            scaled = _multiply(scales[j - 1], _load(source, (j - 1) * stride + at, 8))
            _store(elevated, j * lanes, _subtract(total, _multiply(np.float32(j), scaled)))
            total = _add(total, scaled)
        _store(elevated, 0, total)
        # The nearest remainder-0 point (coordinates / (d+1)), and its coordinates' sum.
        shift = _fill(zero, 8)
        for k in range(d1):
            rounded = _rint(_multiply(down_factor, _load(elevated, k * lanes, 8)))
            _store(vertex, k * lanes, rounded)
            _store(residual, k * lanes, _subtract(_load(elevated, k * lanes, 8), _multiply(up_factor, rounded)))
            _store(rank, k * lanes, _fill(zero, 8))
            shift = _add(shift, rounded)
        # Ranks: a coordinate's place in decreasing order of residuals; on ties the later one ranks first.
        for a in range(d):
            for b in range(a + 1, d1):
                smaller = _less(_load(residual, a * lanes, 8), _load(residual, b * lanes, 8))
                _store(rank, a * lanes, _add(_load(rank, a * lanes, 8), smaller))
                _store(rank, b * lanes, _add(_load(rank, b * lanes, 8), _subtract(one, smaller)))
        # A point whose rounded coordinates do not sum to 0 is brought back onto the plane by wrapping ranks.
        for k in range(d1):
            shifted = _add(_load(rank, k * lanes, 8), shift)
            wrap = _subtract(_less(shifted, zero), _subtract(one, _less(shifted, up_factor)))
            _store(rank, k * lanes, _add(shifted, _multiply(up_factor, wrap)))
            rounded = _add(_load(vertex, k * lanes, 8), wrap)
            _store(vertex, k * lanes, rounded)
            remainder = _subtract(_load(elevated, k * lanes, 8), _multiply(up_factor, rounded))
            _store(ordered, k * lanes, _multiply(remainder, down_factor))
        for sweep in range(d1):  # odd-even transposition sort, decreasing
            for i in range(sweep % 2, d, 2):
                upper, lower = _load(ordered, i * lanes, 8), _load(ordered, (i + 1) * lanes, 8)
                _store(ordered, i * lanes, _maximum(upper, lower))
                _store(ordered, (i + 1) * lanes, _minimum(upper, lower))
        for p in range(1, d1):
            later = _load(ordered, (d - p + 1) * lanes, 8)
            _store(weights, p * lanes, _subtract(_load(ordered, (d - p) * lanes, 8), later))
        _store(weights, 0, _add(_load(ordered, d * lanes, 8), _subtract(one, _load(ordered, 0, 8))))
        for k in range(d):
            coordinate = _load(vertex, k * lanes, 8)
            if start == 0:
                _store(lowest, k * lanes, coordinate)
                _store(highest, k * lanes, coordinate)
            else:
                _store(lowest, k * lanes, _minimum(_load(lowest, k * lanes, 8), coordinate))
                _store(highest, k * lanes, _maximum(_load(highest, k * lanes, 8), coordinate))
        if start + lanes <= n:
            for k in range(d):
                _store(down, k * n + start, _load(vertex, k * lanes, 8))
                _store(ranks, k * n + start, _load(rank, k * lanes, 8))
        else:
            for lane in range(n - start):
                for k in range(d):
                    down[k, start + lane] = vertex[k * lanes + lane]
                    ranks[k, start + lane] = rank[k * lanes + lane]
        for lane in range(min(lanes, n - start)):
            for p in range(d1):
                barycentric[start + lane, p] = weights[p * lanes + lane]
    return down, ranks, barycentric, lowest.reshape(d, lanes), highest.reshape(d, lanes)


def _key_packing(lowest: np.ndarray, highest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and mixed radix (d int64 each) packing a vertex's first d coordinates into one int64, from
    `_simplices`' smallest and largest remainder-0 coordinates / (d+1) (d x lanes). The coordinates
    (d+1) down_i + canonical lie in [(d+1) lowest_i - (d+1), (d+1) highest_i + d]; widened by d+1 for the
    blur neighbours' shifts (-1 and +d per coordinate, or the mirror), their ranges multiply to < 2^62."""
    d = lowest.shape[0]
    d1 = d + 1
    lows = d1 * lowest.min(axis=1).astype(np.int64) - 2 * d1
    spans = d1 * highest.max(axis=1).astype(np.int64) + d + d1 - lows + 1
    if np.log2(spans.astype(np.float64)).sum() > 62:
        raise ValueError(f"lattice key ranges {spans.tolist()} are too wide to pack into int64")
    return lows, np.concatenate([[1], np.cumprod(spans[:-1])]).astype(np.int64)


@numba.njit(cache=True)
def _hash(key, bits):
    """The top `bits` bits of a multiplicative (Fibonacci) hash of the int64 key."""
    return np.intp((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))


@numba.njit(cache=True)
def _slot(table, key, bits):
    """Where `key` is in the open-addressing table (2^bits rows (key, id), linear probing), or the empty
    row where it would go."""
    mask = table.shape[0] - 1
    slot = _hash(key, bits)
    while table[slot, 0] != _EMPTY and table[slot, 0] != key:
        slot = (slot + 1) & mask
    return slot


@numba.njit(cache=True)
def _look_up_corners(down, ranks, lows, radix, start, table, bits, keys, m, recent, corners):
    """Fill `corners` from feature `start` on (see `_vertices`), adding new vertices to the table and `keys`
    while it stays at most half full. Returns (the feature where it stopped, the vertex count)."""
    d, n = down.shape
    d1 = d + 1
    total = radix.sum()
    by_rank = np.zeros(d1, dtype=np.int64)
    for i in range(start, n):
        if 2 * (m + d1) > table.shape[0]:
            return i, m
        key = 0
        for k in range(d1):
            by_rank[k] = 0  # the last coordinate's rank keeps 0: it is not in the key
        for k in range(d):
            key += (d1 * np.int64(down[k, i]) - lows[k]) * radix[k]
            by_rank[np.intp(ranks[k, i])] = radix[k]
        for r in range(d1):
            if r:
                key += total - d1 * by_rank[d1 - r]
            line = _hash(key, _RECENT_BITS)
            if recent[line, 0] != key:
                slot = _slot(table, key, bits)
                if table[slot, 0] == _EMPTY:
                    table[slot, 0] = key
                    table[slot, 1] = m
                    keys[m] = key
                    m += 1
                recent[line, 0] = key
                recent[line, 1] = table[slot, 1]
            corners[i, r] = recent[line, 1]
    return n, m


@numba.njit(cache=True)
def _vertices(down, ranks, lows, radix):
    """Lattice vertex ids of each feature's d+1 simplex corners (N x d+1 int32, corner r = remainder r, ids
    in order of first use) and, per blur axis j, each vertex's two neighbours along it (d+1 x 2 x M int32,
    M where absent); down, ranks: d x N from `_simplices`.

    A vertex's key is its first d coordinates (they sum to 0 with the last), shifted by `lows` and packed
    with mixed `radix`. Corner r is the remainder-0 vertex + canonical[r, rank], canonical[r, k] = r, or
    r - (d+1) if k > d - r: going up one corner adds 1 to every coordinate and drops d+1 from the one ranked
    d + 1 - r. Along axis j the neighbours are key - 1 everywhere but + d on j, and the mirror.

    The hash table (at most half full, doubled when it would be more) outgrows the fast caches; a small
    direct-mapped table of recently met vertices in front of it answers most lookups (neighbouring
    features share most corners)."""
    d, n = down.shape
    d1 = d + 1
    total = radix.sum()
    bits = _TABLE_BITS
    table = np.full((1 << bits, 2), _EMPTY, dtype=np.int64)  # rows (key, id)
    keys = np.empty(1 << (bits - 1), dtype=np.int64)  # by vertex id
    recent = np.full((1 << _RECENT_BITS, 2), _EMPTY, dtype=np.int64)  # (key, id) at the key's hash
    corners = np.empty((n, d1), dtype=np.int32)
    start, m = _look_up_corners(down, ranks, lows, radix, 0, table, bits, keys, 0, recent, corners)
    while start < n:
        bits += 1
        table = np.full((1 << bits, 2), _EMPTY, dtype=np.int64)
        grown = np.empty(1 << (bits - 1), dtype=np.int64)
        grown[:m] = keys[:m]
        keys = grown
        for vertex in range(m):
            slot = _slot(table, keys[vertex], bits)
            table[slot, 0] = keys[vertex]
            table[slot, 1] = vertex
        start, m = _look_up_corners(down, ranks, lows, radix, start, table, bits, keys, m, recent, corners)
    along = np.zeros(d1, dtype=np.int64)
    for k in range(d):
        along[k] = d1 * radix[k]
    neighbours = np.empty((d1, 2, m), dtype=np.int32)
    for j in range(d1):
        for vertex in range(m):
            for side in range(2):
                shifted = keys[vertex] + (along[j] - total if side == 0 else total - along[j])
                slot = _slot(table, shifted, bits)
                neighbours[j, side, vertex] = table[slot, 1] if table[slot, 0] != _EMPTY else m
    return corners, neighbours


@numba.njit(cache=True)
def _lattice_filter(values, corners, weights, neighbours, scale, out, accumulate):
    """out (+)= scale S B S^T values for C x N float32 values (out: C x N too): splat each point's values
    onto its simplex corners (N x d+1 vertex ids) with its weights (N x d+1), blur along each axis (B_j v =
    v + (v[n1] + v[n2]) / 2, densecrf's [1 2 1] / 2; absent neighbours are 0), slice back with the same
    weights. densecrf's Permutohedral::seqCompute, 4 channels at a time in vector lanes (a vertex's values:
    one SSE vector)."""
    channels, n = values.shape
    d1 = corners.shape[1]
    m = neighbours.shape[2]
    lanes = 4
    factor = np.float32(scale)
    half = np.float32(0.5)
    zero = np.float32(0)
    lattice = np.empty((m + 1) * lanes, dtype=np.float32)
    blurred = np.empty((m + 1) * lanes, dtype=np.float32)
    for first in range(0, channels, lanes):
        count = min(lanes, channels - first)
        lattice[:] = 0
        blurred[m * lanes :] = 0  # the absent neighbour
        for i in range(n):
            point = _pack(
                values[first, i],
                values[first + 1, i] if count > 1 else zero,
                values[first + 2, i] if count > 2 else zero,
                values[first + 3, i] if count > 3 else zero,
            )
            for r in range(d1):
                at = corners[i, r] * lanes
                _store(lattice, at, _axpy(weights[i, r], point, _load(lattice, at, 4)))
        for j in range(d1):
            for vertex in range(m):
                pair = _add(
                    _load(lattice, neighbours[j, 0, vertex] * lanes, 4),
                    _load(lattice, neighbours[j, 1, vertex] * lanes, 4),
                )
                _store(blurred, vertex * lanes, _axpy(half, pair, _load(lattice, vertex * lanes, 4)))
            lattice, blurred = blurred, lattice
        for i in range(n):
            sliced = _fill(zero, 4)
            for r in range(d1):
                sliced = _axpy(weights[i, r], _load(lattice, corners[i, r] * lanes, 4), sliced)
            a, b, c, e = _unpack(_multiply(factor, sliced))
            if accumulate:
                a += out[first, i]
                b += out[first + 1, i] if count > 1 else zero
                c += out[first + 2, i] if count > 2 else zero
                e += out[first + 3, i] if count > 3 else zero
            out[first, i] = a
            if count > 1:
                out[first + 1, i] = b
            if count > 2:
                out[first + 2, i] = c
            if count > 3:
                out[first + 3, i] = e


@numba.njit(cache=True)
def _blur_line(lattice, blurred, neighbours):
    """densecrf's blur of one value per vertex (M + 1 float32, the last 0: absent neighbours) along each
    axis, `blurred` (the same size, its last 0 too) as the other buffer; returns the one holding the result."""
    m = neighbours.shape[2]
    half = np.float32(0.5)
    for j in range(neighbours.shape[0]):
        for vertex in range(m):
            pair = lattice[neighbours[j, 0, vertex]] + lattice[neighbours[j, 1, vertex]]
            blurred[vertex] = lattice[vertex] + half * pair
        lattice, blurred = blurred, lattice
    return lattice


@numba.njit(cache=True)
def _normalise(corners, barycentric, neighbours, alpha):
    """The symmetric normalisation of the lattice filter K = alpha S B S^T (see `_lattice_filter`): the splat
    and slice weights with D^-1/2 folded in (N x d+1; D = K 1, +1e-20 as densecrf), and K~ 1 =
    D^-1/2 K D^-1/2 1 (N). One pass over the features slices K 1, normalises the weights and splats 1 with them."""
    n, d1 = corners.shape
    m = neighbours.shape[2]
    factor = np.float32(alpha)
    lattice = np.zeros(m + 1, dtype=np.float32)
    for i in range(n):
        for r in range(d1):
            lattice[corners[i, r]] += barycentric[i, r]
    lattice = _blur_line(lattice, np.zeros(m + 1, dtype=np.float32), neighbours)
    spread = np.zeros(m + 1, dtype=np.float32)
    weights = np.empty((n, d1), dtype=np.float32)
    for i in range(n):
        total = np.float32(0)
        for r in range(d1):
            total += barycentric[i, r] * lattice[corners[i, r]]
        norm = np.float32(1) / np.sqrt(factor * total + np.float32(1e-20))
        for r in range(d1):
            weights[i, r] = barycentric[i, r] * norm
            spread[corners[i, r]] += weights[i, r]
    spread = _blur_line(spread, np.zeros(m + 1, dtype=np.float32), neighbours)
    filtered_ones = np.empty(n, dtype=np.float32)
    for i in range(n):
        total = np.float32(0)
        for r in range(d1):
            total += weights[i, r] * spread[corners[i, r]]
        filtered_ones[i] = factor * total
    return weights, filtered_ones


class LatticeFilter:
    """Symmetrically normalised permutohedral Gaussian filter: x -> D^-1/2 alpha S B S^T D^-1/2 x for C x N
    float32 values, from each point's simplex corners (N x d+1 vertex ids), barycentric weights (N x d+1)
    and the vertices' blur neighbours (d+1 x 2 x M, M where absent); alpha is densecrf's output scaling."""

    def __init__(self, corners: np.ndarray, barycentric: np.ndarray, neighbours: np.ndarray):
        self.vertices = neighbours.shape[-1]
        self._corners = np.ascontiguousarray(corners, dtype=np.int32)
        self._neighbours = np.ascontiguousarray(neighbours, dtype=np.int32)
        self._alpha = 1.0 / (1.0 + 2.0 ** (1 - corners.shape[1]))
        weights, filtered_ones = _normalise(
            self._corners, np.ascontiguousarray(barycentric, dtype=np.float32), self._neighbours, self._alpha
        )
        self._weights = weights
        self.filtered_ones = torch.from_numpy(filtered_ones)  # K~ 1

    @classmethod
    def from_features(cls, features: np.ndarray) -> LatticeFilter:
        """The filter over d x N features (already divided by their standard deviations)."""
        down, ranks, barycentric, lowest, highest = _simplices(
            np.ascontiguousarray(features, dtype=np.float32), _elevation_scales(features.shape[0])
        )
        corners, neighbours = _vertices(down, ranks, *_key_packing(lowest, highest))
        return cls(corners, barycentric, neighbours)

    def __call__(self, values: torch.Tensor, weight: float = 1.0, add_to: torch.Tensor | None = None) -> torch.Tensor:
        """weight K~ values for C x N float32 values, added in place to `add_to` (C x N) if given."""
        values = np.ascontiguousarray(values.numpy(), dtype=np.float32)
        accumulate = add_to is not None
        out = add_to.numpy() if accumulate else np.empty_like(values)
        _lattice_filter(values, self._corners, self._weights, self._neighbours, weight * self._alpha, out, accumulate)
        return add_to if accumulate else torch.from_numpy(out)


@numba.njit(cache=True)
def _convolve(buffer, at, stride, taps):
    """sum_k taps[|k|] buffer[at + k stride + j] for |k| <= radius and j < 32, as 4 vectors of 8: four
    independent sums keep the vector units busy (one sum waits on each addition)."""
    centre = taps[0]
    a = _multiply(centre, _load(buffer, at, 8))
    b = _multiply(centre, _load(buffer, at + 8, 8))
    c = _multiply(centre, _load(buffer, at + 16, 8))
    e = _multiply(centre, _load(buffer, at + 24, 8))
    for k in range(1, taps.size):
        tap = taps[k]
        low = at - k * stride
        high = at + k * stride
        a = _axpy(tap, _add(_load(buffer, low, 8), _load(buffer, high, 8)), a)
        b = _axpy(tap, _add(_load(buffer, low + 8, 8), _load(buffer, high + 8, 8)), b)
        c = _axpy(tap, _add(_load(buffer, low + 16, 8), _load(buffer, high + 16, 8)), c)
        e = _axpy(tap, _add(_load(buffer, low + 24, 8), _load(buffer, high + 24, 8)), e)
    return a, b, c, e


@numba.njit(cache=True)
def _grid_filter(values, width, taps, row_norm, column_norm, scale, out, accumulate):
    """out (+)= scale D^-1/2 G D^-1/2 values for C x N float32 values (out: C x N too) on a height x width
    grid: G the separable Gaussian of `taps` (centre first) along x, then y; D^-1/2 = row_norm x column_norm
    (outer product). Rows are padded with zeros to a whole number of 32-pixel steps, `radius` zeros on
    each side (and `radius` zero rows above and below the x pass's output)."""
    channels, n = values.shape
    height = n // width
    radius = taps.size - 1
    step = 32  # pixels a `_convolve` covers
    padded = -(-width // step) * step
    factor = np.float32(scale)
    line = np.zeros(radius + padded + radius, dtype=np.float32)  # one input row, zero outside
    across = np.zeros((radius + height + radius) * padded, dtype=np.float32)  # the x pass
    row = np.empty(padded, dtype=np.float32)
    columns = np.zeros(padded, dtype=np.float32)
    columns[:width] = column_norm
    body = width - width % 8
    for channel in range(channels):
        start = channel * n
        for y in range(height):
            at = start + y * width
            for x in range(0, body, 8):
                _store(line, radius + x, _multiply(_load(values, at + x, 8), _load(columns, x, 8)))
            for x in range(body, width):
                line[radius + x] = values[channel, y * width + x] * columns[x]
            target = (radius + y) * padded
            for x in range(0, padded, step):
                a, b, c, e = _convolve(line, radius + x, 1, taps)
                _store(across, target + x, _multiply(row_norm[y], a))
                _store(across, target + x + 8, _multiply(row_norm[y], b))
                _store(across, target + x + 16, _multiply(row_norm[y], c))
                _store(across, target + x + 24, _multiply(row_norm[y], e))
        for y in range(height):
            rescale = factor * row_norm[y]
            for x in range(0, padded, step):
                a, b, c, e = _convolve(across, (radius + y) * padded + x, padded, taps)
                _store(row, x, _multiply(rescale, _multiply(a, _load(columns, x, 8))))
                _store(row, x + 8, _multiply(rescale, _multiply(b, _load(columns, x + 8, 8))))
                _store(row, x + 16, _multiply(rescale, _multiply(c, _load(columns, x + 16, 8))))
                _store(row, x + 24, _multiply(rescale, _multiply(e, _load(columns, x + 24, 8))))
            at = start + y * width
            if accumulate:
                for x in range(0, body, 8):
                    _store(out, at + x, _add(_load(out, at + x, 8), _load(row, x, 8)))
                for x in range(body, width):
                    out[channel, y * width + x] += row[x]
            else:
                for x in range(0, body, 8):
                    _store(out, at + x, _load(row, x, 8))
                for x in range(body, width):
                    out[channel, y * width + x] = row[x]


class GridGaussian:
    """Symmetrically normalised Gaussian filter over the pixel grid: x -> D^-1/2 G D^-1/2 x for C x N float32
    values (N = height x width row-major), G_ij = exp(-|p_i - p_j|^2 / (2 std^2)) over pixel positions
    truncated to |dy|, |dx| <= radius, D = G 1 (the outer product of the two axes' filtered ones). G is
    separable: a 1D pass along x, then along y (`_grid_filter`)."""

    def __init__(self, height: int, width: int, std: float, truncate: float = 3.0):
        self.shape = (height, width)
        self.radius = radius = max(1, int(truncate * std + 0.5))
        self.taps = [float(np.exp(-0.5 * (k / std) ** 2)) for k in range(radius + 1)]
        self._taps = np.array(self.taps, dtype=np.float32)
        self._row_norm = (1.0 / np.sqrt(self._line_of_ones(height))).astype(np.float32)  # D^-1/2 = rows x columns
        self._column_norm = (1.0 / np.sqrt(self._line_of_ones(width))).astype(np.float32)
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
        values = np.ascontiguousarray(values.numpy(), dtype=np.float32)
        accumulate = add_to is not None
        out = add_to.numpy() if accumulate else np.empty_like(values)
        _grid_filter(values, self.shape[1], self._taps, self._row_norm, self._column_norm, weight, out, accumulate)
        return add_to if accumulate else torch.from_numpy(out)


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
    values and has `filtered_ones` (K~ 1).
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
    last = float(scale[-1])
    logits = torch.empty_like(base)
    for _ in range(int(iterations)):
        filtered = None  # F, L - 1 x N
        for kernel, weight in kernels:
            filtered = kernel(q[:-1], weight, add_to=filtered)
        # Logits: base + g_l F_l for the first L - 1 labels, base - g_last sum_l F_l for the last.
        torch.addcmul(base[:-1], filtered, scale[:-1, None], out=logits[:-1])
        torch.sub(base[-1], filtered.sum(dim=0), alpha=last, out=logits[-1])
        q = torch.softmax(logits, dim=0)
    return q.numpy()

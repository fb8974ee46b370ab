"""The planner's tunable constants, in one frozen object.

Every constant that shapes a plan lives here, with the measurement that set
it. The object in force is part of the plan cache's key, so a changed
constant (tests shrink tiles to reach edge cases) can never be answered by a
plan made under the old one, and adding a constant needs no other edit.
"""
import dataclasses
import threading
from contextlib import contextmanager

__all__ = ["Tuning", "current", "tuned"]


@dataclasses.dataclass(frozen=True)
class Tuning:
    # Tiles of the mapped lowering (measured with bench/interleaved.py on
    # the benchmark layers, fastconv/benchmark_layers.json, 2 threads, fp32
    # and fp64):
    # * tile_target_bytes: the per-thread tile buffer (rows x tile x itemsize)
    #   aimed for, about one core's L2 (2 MiB here): the tile is gathered and
    #   then read by GEMM while still in cache. 1-4 MiB measured alike.
    # * tile_min_cols: narrower tiles make GEMM's N dimension too thin for its
    #   micro-kernel: 49-64 columns ran 1.3x slower than 196-256 on ResNet
    #   layers. The same rule batches small images (several per GEMM).
    # * tile_floor_cols: the narrowest tile accepted when the memory limit
    #   allows no more; below it the limit is refused (WorkspaceLimitError).
    tile_target_bytes: int = 2 * 2**20
    tile_min_cols: int = 256
    tile_floor_cols: int = 32
    # "auto" prefers mapped tiles to a whole stretched matrix once that
    # matrix is larger than this (about one tile): writing it and reading it
    # back leaves the cache. Measured (fp32, 2 threads, mapped time / stretch
    # time): VGG-16 conv1_2 0.47, ResNet-50 stem 0.70, conv2 3x3 0.70, conv3
    # 3x3 (3.5 MiB) 0.83-0.88; a matrix of one tile or less is the same
    # computation either way.
    stretch_cache_bytes: int = 2 * 2**20
    # Threaded BLAS inside one GEMM against OpenMP threads over work items,
    # each GEMM single-threaded: 1.3-1.7x slower on these layers, and
    # OpenBLAS's threads keep spinning after each call, slowing the next
    # OpenMP region. The cost model divides the threads' worth by this.
    blas_threads_penalty: float = 1.5
    # A GEMM whose smaller inner dimension (filters per group, or the depth)
    # is below this runs BLAS's micro-kernel partly empty: its rate is taken
    # as that dimension over this of the full rate. Depthwise layers (1 filter
    # per group) ran at 0.13 of the GEMM rate through mapped tiles, with a
    # channel multiplier of 2 at ~0.25; paper_mnist (32 filters, depth 9) at
    # the full rate.
    gemm_full_rate_dim: int = 8
    # The direct depthwise kernel's rate against a full-rate GEMM (measured
    # on mobilenet_dw_3x3, fp32: 0.6; at 1 filter per group it took 0.13-0.78x
    # mapped's time, at 32 filters per group 2.9x stretch's).
    direct_rate: float = 0.5
    # ... and its forward pass where it computes blocks of 8 filters of one
    # input channel (a channel multiplier of 8 or more, fixed-size kernels;
    # fewer filters per block interpolate linearly from direct_rate).
    # Measured in one process, fp32, 2 threads, depthwise / best of stretch,
    # mapped and fused (which run at the full GEMM rate from 8 filters per
    # group): C=1 28x28 32 filters (paper_mnist) 0.84, 8x56x56 multiplier 8
    # 0.72, 3x112x112 x8 0.73, 16x28x28 5x5 x8 0.69, 4x56x56 7x7 x16 0.92;
    # at multiplier 4 0.59 and 2 0.41-0.55 of the GEMMs, which run there at
    # a half and a quarter of their rate.
    direct_block_rate: float = 1.2
    # ... and grouped with few channels per group (2 to 16), where the
    # fixed-size kernels make blocks of 4 planes (forward: filters; input
    # gradient: input channels) from each input vector loaded.
    direct_group_rate: float = 1.4
    # ... and where blocks of filters run over padded bands instead
    # (depthwise.grouped_path "bands": column strides, rows narrower than a
    # vector), forward and input gradient. With out= (the steady state),
    # fp32, 2 threads, fresh processes alternated, best of 4, bands / fused
    # time, 32 groups: 3x3/2 on 56x56 with 4 channels per group 0.50, with 8
    # 0.73-0.79, 16 on 28x28 0.82, 16 at stride 1 on 14x14 0.98; the input
    # gradient of the last 1.38 (its padded rows: Winograd and fused 1.85 ms,
    # bands 2.55).
    direct_group_band_rate: float = 1.4
    direct_group_band_grad_rate: float = 1.0
    # ... and the weight gradient of a grouped stride-1 layer (2 to 16
    # channels per group): a correlation per (filter, input plane) pair over
    # the batch, at this rate (its own loops, not the BLAS's: blas_rate does
    # not scale it) plus direct_group_grad_pair_seconds a pair, on one
    # thread. Fitted on Zen 5, fp32, 2 threads, 8 images of 32 groups, 3x3:
    # 4 channels per group on 56x56 3.1 ms, 8 on 28x28 3.9, 16 on 14x14 7.7
    # (the same multiply-adds); checked on 5x5 with 4 per group (4.0
    # modelled, 3.65 measured) and 2 per group (0.78, 0.67). It was rated at
    # direct_rate * blas_rate, a tie with stretch on ResNeXt's 4 channels
    # per group, where stretch took 7.65 ms. Column strides run a slower
    # split of the rows (3x3/2, 8 per group: 10.2 ms) and keep that rate.
    direct_group_grad_rate: float = 0.8
    direct_group_grad_pair_seconds: float = 150e-9
    # The direct convolution's rate against the BLAS GEMM lowerings', on the
    # multiply-adds inside the image (it skips the padding's). Measured in
    # one process, fp32, 2 threads, direct / fused (share of the taps inside
    # the image), forward: ResNet-50 5b 3x3 0.81 (82 %), 4b 0.97 (91 %), 3b
    # 1.02 (95 %), 2a 1.02 (98 %), dilated 0.99 (96 %), VGG-16 conv3_2 1.05
    # (98 %); input gradient 5b 0.86, 4b 0.95, 3b 1.04, 2a 1.05, dilated
    # 1.05, conv3_2 1.09: per multiply-add made, ~1.07x fused's time
    # (fused_rate / 1.07), so it is worth it where the padding is a large
    # share of the taps.
    direct_conv_rate: float = 1.08
    # ... at a shallower depth (rows of the stretched matrix: channels per
    # group x taps) than this, a tile's accumulators, set up and stored once
    # per tile, weigh on its few multiply-adds: the rate falls in
    # proportion. Was a count of input channels (16), from the stem alone
    # (3 channels, 147 rows: 1.14x fused's time), which priced AlexNet's
    # first layer (3 channels, 363 rows) at 5x and took fused there, where
    # direct runs at 0.70x fused's time. A sweep of every forward lowering
    # on 41 layers (fp32, 2 threads, one process per layer), direct / fused
    # by depth: 9 rows 1.78-2.5 (paper_mnist, U-Net's first layer), 27
    # 1.33-1.8 (MTCNN, ArcFace's stem), 81 1.66 (SRCNN's 9x9), 147 1.14,
    # 363 0.70, 451 1.07 (DeepSpeech2 conv1); 160 gives the choices closest
    # to the fastest over the 41 (summed log of chosen / fastest; 32-128
    # take direct on the stem, 400 misses AlexNet).
    direct_conv_min_depth: int = 160
    # ... and its time factor where the columns are strided (stride > 1),
    # which fused gathers on a slower path (two masked loads and a permute
    # per vector) while direct only broadcasts other pixels. In one process,
    # fp32, 2 threads, 3x3 stride 2 padding 1, direct / fused: 8x64x56x56 ->
    # 64 0.80, 8x128x56x56 -> 128 (ResNet-50 3a) 0.98, 8x256x28x28 -> 256
    # 0.98, 8x512x14x14 -> 512 0.76 (9 % of its taps in the padding).
    direct_conv_strided_factor: float = 0.9
    # ... and where the kernel is 1x1: one tap per channel, so each channel
    # step reads new lines of the input (a 3x3 kernel's taps along a row
    # share them). Fresh processes, fp32, 2 threads, ResNet-50 3a projection
    # (1x1, stride 2): direct 1.14x PyTorch's time, fused 0.79x, stretch 0.77x.
    direct_conv_pointwise_factor: float = 1.5
    # The direct weight gradient's rate against the BLAS lowerings' model,
    # on the multiply-adds of the output rows it computes, its time times
    # (1 + tile_taps / taps per tile) (each pixel's vector loads of the
    # output gradient serve taps x NV multiply-adds) and (1 + depth / taps
    # per filter block) (a chunk's output gradient is transposed once for
    # them). Fitted like fused_weight_grad_*: every weight-gradient lowering
    # measured on the 41 layers (fp32, 2 threads, one process per layer,
    # best of 2 rounds), the constants on a grid, keeping those that
    # minimise the summed log of (time of the lowering chosen / the
    # fastest): rate 2.5-2.8 with tile_taps 2.5-3.5 all give the same
    # choices, 2.6 and 3 their middle. They take direct where it measured
    # fastest: DeepSpeech2 conv1 0.69-0.74x the best other lowering's time,
    # AlexNet conv1 0.77-0.81x, Inception 5x5 0.81-0.89x, SRCNN 9x9 0.85x,
    # the stem 0.88x (tiles across kernel rows, direct.weight_grad_flat),
    # ArcFace's 3x3/2 0.82x, ResNet-50 3a 3x3/2 0.97x; not YOLO's 3x3
    # (1.44x Winograd's), which rate 2.4 with tile_taps 2 took.
    # ... and times (1 + call / pixels of a chunk): each call of the tile
    # (one tile, one chunk of output rows) loads and stores its
    # accumulators and sets up its taps, so few pixels a chunk cost more
    # (ResNet-50 5b: 49, one 7x7 image; the thread's loop around the tile
    # 14 % of a one-thread run by perf, then 12 % with the unit decoded
    # without divisions). Refitted 2026-11-23 on both dtypes (every
    # weight-gradient lowering on the 41 layers, float32 and float64, 2
    # threads, one process per layer): call 5-60 with the constants above
    # all give the same choices, 10 near its low end; without it float64
    # 5b took direct at 1.21x Winograd's time. Rate 2.6 sent ResNet-50 3a
    # 3x3/2 to fused, a tie on Zen 4 (float32 10.42 against direct's 10.42
    # ms, float64 21.7 against 21.1); on Zen 5 fused took 1.20x PyTorch's
    # time there and direct 1.02x (float64 14.1 against 12.0 ms), so 2.7
    # takes direct. It takes direct on MTCNN's first layer in float64 too,
    # which was 1.21x fused's time before the narrow tile ran flat across
    # kernel rows, and is 1.03x since (Zen 5). 2.8 would take 4b 3x3, YOLO
    # and VGG-16 conv5 in float64, and a 3x3/2 of 512 filters.
    direct_weight_grad_rate: float = 2.7
    # ... and per element of the weight gradient, whatever the batch (each
    # thread's tiles of it parked, summed and stored): without it the
    # model's time grew as the batch shrank (measured / modelled 0.55 at
    # one image of ResNet-50 4b 3x3, 5b and YOLO 13x13, 0.40 at 8), and the
    # extra over the model at one image was 88-95 flop-equivalents an
    # element on all three. 45-150 make the same choices (with
    # winograd_grad_output); without it one 14x14 image of 4b went from
    # Winograd to direct (float32, 1.14x).
    direct_weight_grad_weights: float = 90.0
    # ... and its lanes kernel (direct.weight_grad_lanes says where it runs):
    # the multiply-adds inside the image over the lanes filled (a row's
    # last vector is masked) at this rate. Its time over that model (rate
    # 1) was 0.32-0.53 on eight first layers, fused's over its own 0.49-0.78
    # (float32, 2 threads, one process; paper_mnist, LeNet 5x5, CIFAR 3 ->
    # 64, 3 -> 128 on 64x64, 8 -> 16, MTCNN O-Net conv1, U-Net's and
    # ArcFace's first layers): 1.5 puts the two on one scale. Before, the
    # panel kernel's cost stood for it, and float64 paper_mnist and LeNet,
    # float32 8 -> 16 and ArcFace's stem planned fused at 1.1-2.2x the
    # lanes kernel's time. 1.3-2.5 make the same choices on the 46 layers
    # and eight small ones (1.2 sends MTCNN and ArcFace back to fused).
    direct_weight_grad_lanes_rate: float = 1.5
    direct_weight_grad_tile_taps: float = 3.0
    direct_weight_grad_depth: float = 10.0
    direct_weight_grad_call: float = 10.0
    # The BLAS GEMM's rate against the one every other rate here was
    # measured beside (SciPy's OpenBLAS on its AVX-512 kernels, AMD Zen 4),
    # dividing the BLAS lowerings' GEMM time. None: from the BLAS's kernels,
    # their vector width over that of fastconv's own (_lowerings.blas_rate):
    # 1 where they are as wide, 0.5 where OpenBLAS runs its AVX2 kernels
    # beside fastconv's AVX-512 ones, as on AMD Zen 5, whose 512-bit FMAs run
    # at twice the 256-bit rate: there a 2048^3 sgemm ran at 225 GFLOP/s and
    # fused's micro-kernel at 434 on the same product as a 1x1 layer (2
    # threads), and with a rate of 1 the planner took stretch on ResNet-50's
    # 3a projection at 1.36-1.45x PyTorch's time, fused measuring 0.97x.
    # The depthwise kernel's one-plane-at-a-time paths take it too
    # (Depthwise.rate): their vectors meet few multiply-adds each, so wider
    # FMAs gain them no more than BLAS. On Zen 5 they kept their time over
    # mapped's as the Zen 4 rates model it (input gradients, depthwise /
    # mapped: paper_mnist 1.34 measured, 1.43 modelled; U-Net's first layer
    # 1.65, 1.66; SRCNN 9x9 1.75, 1.66), where halving BLAS alone took them
    # at 1.3-6.9x mapped's time. Its blocks of filters keep their rate
    # against fused (forward, depthwise / fused: paper_mnist 0.70, U-Net's
    # first layer 0.57, ArcFace's stem 0.93, MTCNN 0.84). (The one-plane
    # paths were measured against mapped only, not against fused or direct
    # on grouped layers; the rate stands in for how the own FMA-bound
    # kernels, not these, gained from Zen 4 to Zen 5.)
    blas_rate: object = None
    # The fused lowering's instruction set: None for FASTCONV_ISA if set,
    # else the best this CPU runs ("avx512", "avx2", "generic").
    isa: object = None
    # The fused lowering's rate against the BLAS GEMM lowerings'. Measured
    # side by side (fp32, 2 threads, fused time / best of mapped and
    # stretch): ResNet-50 2a 3x3 0.77, 3b 0.81, 4b 0.86, 5b 1.00, 3a 3x3/2
    # 0.87, stem 7x7/2 0.91, VGG-16 conv1_2 0.74, 3_2 0.86, dilated 0.78,
    # fp64 2a 0.86; but paper_mnist (depth 9) 1.30 and the 1x1/2 projection
    # 1.31: below fused_min_depth rows, or for a 1x1 kernel, its rate is
    # fused_shallow_rate.
    fused_rate: float = 1.15
    # The Winograd lowering's transforms, in flop-equivalents of the GEMM
    # model per element: input per channel and tile (a 6x6 gather, 12 lane
    # transforms), output per filter and tile, weights per filter and
    # channel, and per element of the transformed weights read again for
    # each panel of tiles (from memory: see winograd_cached_reads below for
    # what fits in the cache); winograd_factor scales
    # the whole to the other entries' measured time. Refitted (2026-11-24,
    # Zen 5) on 46 forward cases, fp32, 2 threads, one process: ResNet-50 2a,
    # 3b, 4b, 5b, YOLO 13x13, Inception 35x35, ArcFace 128, VGG-16 conv3_2
    # and conv5 at 1, 2, 4 and 8 images, conv1_2, the dilated layer and six
    # layers of 1-3 channels or small groups; a least-squares fit of the
    # five terms (GEMMs, input, output, weights, kept reads), scaled to the
    # direct and fused models' own measured / modelled time (0.24 in
    # median). The old model (input 850, output 560, weights 900, reads
    # 3.5 / 1.0, factor 1.6) ran at 0.16-0.19 of measured / modelled on
    # layers of 256-1024 channels, 0.25-0.28 on 64, so few images of deep
    # layers planned the direct kernel at 1.1-1.9x Winograd's time: one
    # 14x14 image of 4b, one 13x13 YOLO image, one 14x14 conv5 image, four
    # 7x7 images of 5b. Each changed choice, old plan / new, one process,
    # fp32 / fp64: 0.75-0.95 / 0.58-0.88; the input-kept order on YOLO at 8
    # images (input gradient, fp32) 0.75-0.77 and at 4 (fp64) 0.61. The
    # weight gradient keeps its own terms (winograd_weight_grad_tiles).
    winograd_input: float = 5700.0
    winograd_output: float = 3300.0
    winograd_weights: float = 1500.0
    winograd_weight_reads: float = 11.5
    # The kept operand (transformed weights, or transformed input) read
    # again per panel of tiles, or per block of filters: per element, at
    # winograd_weight_reads from memory, or at winograd_cached_reads where
    # it fits in winograd_cache_bytes (a share of the L3). The input-kept
    # order (WinogradBlocking.keep_input) against the weights-kept, fp32, 2
    # threads, one process: ResNet-50 5b_3x3 0.51x, 4b 0.70x, dilated 0.84x,
    # VGG-16 conv3_2 0.95x; 2a 1.05-1.13x, 3b 1.10x, VGG-16 conv1_2 1.32x
    # (its transformed input, 58 MB, from memory twice); this model picks
    # the faster on each but conv3_2 (a tie).
    winograd_cached_reads: float = 3.3
    winograd_cache_bytes: int = 8 * 2**20
    # ... the weight gradient's transform of an output-gradient tile (a 4x4
    # gather, 10 lane transforms), per filter and tile; and the weight
    # gradient's scale against the fused weight gradient's model. In one
    # process, fp32, 2 threads, Winograd / PyTorch (fused / PyTorch):
    # ResNet-50 4b 3x3 0.64 (0.98), 5b 0.70 (0.72); 2a 0.73, 3b 0.64, VGG-16
    # conv1_2 0.83, conv3_2 0.61, dilated 0.92.
    winograd_grad_input: float = 600.0
    # ... and per (filter, channel) pair: its 36 sums kept, added over the
    # threads and transformed back to 3x3, independent of the batch. Without
    # it the model's time per Winograd weight gradient grew as the batch
    # shrank (measured / modelled, against fused's steady 0.37-0.41: ResNet-50
    # 5b 3x3 0.51 at 8 images, 1.37 at one; YOLO 13x13 0.41, 0.66; 4b 0.40,
    # 0.60), and one 7x7 image of 5b took Winograd at 2.9x fused's time.
    # The extra time over the model was near constant in the batch, about
    # 800 flop-equivalents a pair (5b 700-900, 4b 800, YOLO 600-940). With
    # the direct kernel's like term (direct_weight_grad_weights), 300-400
    # make the same choices, each measured faster than before (old plan /
    # new, one process, fp32 / fp64): one 7x7 image of 5b Winograd -> fused
    # 0.33 / 0.28, one YOLO 13x13 image 0.67 (fp32), one 14x14 image of 4b
    # -> fused 0.78 / 0.84 (from direct in fp64), 8 images of 5b 0.91 and of
    # VGG-16 conv5 0.98 (fp64); from 500, 8 images of 4b in float64 went to
    # fused at 1.5x Winograd's time.
    winograd_grad_output: float = 400.0
    winograd_weight_grad_factor: float = 1.2
    # (the weight gradient's input transform per channel and tile: the
    # forward model's before its refit, which the weight gradient's terms
    # were fitted beside)
    winograd_weight_grad_tiles: float = 850.0
    winograd_factor: float = 0.85
    # Rows of the stretched matrix (the micro-kernel's depth) below which
    # fused runs at fused_shallow_rate. Was 64; a sweep of every forward
    # lowering on 41 layers (2026-11-23, fp32, 2 threads, one process per
    # layer) measured fused / the best BLAS lowering at 27 rows (3 channels,
    # 3x3) 0.65 (MTCNN O-Net conv1) and 0.74 (ArcFace's stem), both left to
    # stretch at 1.35-1.55x the fastest; at 9 rows 1.35 (paper_mnist) and
    # 1.06 (U-Net's first layer), at 10 0.85 (wav2vec 2.0 conv0, where the
    # depthwise kernel is faster still). 16 moves those two and no other
    # layer's plan in any kind.
    fused_min_depth: int = 16
    # Columns of the whole batch (fused runs every image's columns as one
    # axis) below which the micro-tiles are mostly empty. ResNet-50 5b (7x7
    # maps, 8 images: 392 columns) took 0.82x stretch's time fused (fresh
    # processes, bench/steady_state.py, fp32, 2 threads), so small maps alone
    # do not rule fused out.
    fused_min_cols: int = 64
    fused_shallow_rate: float = 0.75
    # Columns of the whole batch up to which the fused forward pass reads the
    # weights in place instead of packing them (one pass over K x rows per
    # call, amortised over the columns). Interleaved A/B, fp32, 2 threads:
    # in place took ResNet-50 5b_3x3 (392 columns) 0.94x, 4b (1568) 0.98x,
    # but the stem (100k) 1.23x and 3a 3x3/2 fp64 (6272) 1.07x.
    fused_in_place_max_cols: int = 2048
    # The micro-kernel's share of a fused run (perf, ResNet-50 5b and 4b 3x3:
    # 69.5 %): the share that NR-padded columns slow down. Measured on 5b
    # (in one process, fp32, 2 threads), fused over stretch: 1 image (49
    # columns, padded 1.96x) 1.26, 2 images 0.93, 4 images 0.95, 8 images 0.82.
    fused_kernel_share: float = 0.7
    # 1x1 stride-1 layers (where gemm1x1 reads the input in place, modelled
    # at half a gathering lowering's time, so a rate of 2 ties): fused runs
    # the batch's columns as one axis, so what counts is the columns of the
    # batch, not of one image. Interleaved in one process, fp32, 2 threads,
    # fused / gemm1x1 (N x C x map x K), after the narrow edge panels and the
    # transposing weight pack: 8x1024x14x256 0.98, 8x256x14x1024 0.93,
    # 8x2048x7x512 0.88, 8x512x7x2048 0.83, 8x512x28x128 0.84, 8x64x56x64
    # 0.88, 8x256x56x64 0.91, 2x1024x14x256 0.96, 1x256x28x512 0.98,
    # 1x64x56x64 0.80, 4x2048x7x512 (196 columns) 0.84; but 2x2048x7x512
    # (98) 0.98, 1x1024x14x256 (196) 1.51, 1x2048x7x512 (49) 2.24. fp64:
    # 8x2048x7x512 0.80, 2x1024x14x256 0.93, 8x64x56x64 1.05. From this many
    # columns of the batch fused is taken to run at fused_pointwise_rate
    # (before: 784 columns per image, which left 14x14 and 7x7 maps to
    # gemm1x1, measured then at 1.01-1.09x). Those were beside a BLAS on
    # AVX-512 kernels (Zen 4). Beside a narrower one (blas_rate < 1: Zen 5,
    # where OpenBLAS runs its Haswell kernels) the forward pass takes fused
    # from fused_pointwise_min_cols_narrow_blas columns instead: old plan /
    # new, alternated in one process, fp32 / fp64: 2x2048x7x512 (98
    # columns) gemm1x1 -> fused 0.54 / 0.48, 2x512x7x2048 0.52 / 0.48,
    # 4x2048x7x512 0.51 / 0.48; batch-1 14x14 maps direct -> fused 0.90-1.08
    # (ResNet-50 4b 1x1 1.08 in one process, 1.05 in fresh ones; 1x1024x14x256
    # 1.04, 1x256x14x1024 0.90, 1x512x14x512 0.96). The input gradient
    # likewise (the adjoint's forward pass), since its transposed copy of
    # the weights writes whole cache lines (fused.adjoint_filters): gemm1x1
    # -> fused 0.49-0.66 on seven layers, both dtypes (before that copy's
    # fix fused took 1.06-1.61 on three of them).
    fused_pointwise_min_cols: int = 392
    fused_pointwise_min_cols_narrow_blas: int = 96
    fused_pointwise_rate: float = 2.2
    # Bytes of a micro-panel of B (depth x NR x itemsize) up to which a
    # pointwise forward pass reads it from x's channel rows in place instead
    # of packing it (no packing pass; the kernel's loads stride across
    # channel planes). Fresh processes alternated with the build that packs
    # every panel, best of 6, 2 threads, in place / packed: fp32 ResNet-50
    # 2a_1x1 (12 KiB panel) 0.86-0.91, 2b_1x1 (48 KiB) 0.85, 4b_1x1 (110 KiB)
    # 1.01; fp64 2a 0.84-0.92, 2b 0.96, 4b 0.97 (one process, interleaved:
    # 2a 0.82 / 0.90, 2b 0.82 / 0.76). Past L1 (32 KiB) it still pays while
    # few filters (64) amortise the packing; 4b's 256 do, and it gains nothing.
    # Measured with the AVX-512 kernels (NR 48 / 24); AVX2's (24 / 12) and the
    # portable ones' narrower panels are within the budget on every layer
    # above, and were not measured. Not where channel planes are a multiple
    # of 4 KiB apart (Fused._reads_x_in_place).
    fused_x_in_place_panel_bytes: int = 64 * 2**10
    # The fused weight gradient's time over the BLAS lowerings' model:
    # fused_weight_grad_rate + fused_weight_grad_gather * (elements it packs
    # per multiply-add, either dtype), times its padding. Refitted after its
    # work items were balanced between threads (fused.weight_grad_split):
    # every lowering of the weight gradient measured on 41 layers (the
    # shared ones and bench/more_layers.json; fp32, 2 threads, one process
    # per layer, best over 0.8 s), and the pair chosen that minimises the
    # summed log of (time of the lowering the model picks / the fastest):
    # rate 0.575-0.6 with gather 0-10 all give the same choices; 0.6 and 5
    # are the middle of that range. The former 0.55 and 22 took the BLAS
    # lowerings on DeepSpeech2 conv1 and conv2 and MTCNN's O-Net conv1,
    # where fused measured 0.82, 0.68 and 0.59 of them (1.22-1.68x the
    # fastest): packing B^T is no longer the cost its per-element weight
    # said (1.8-3 % packed per MAC there; fitting the times alone gives a
    # weight of ~0). Measured fused / fastest BLAS lowering: ResNet-50 3x3
    # layers 0.78-0.88, VGG-16 0.83-0.89, the stem 0.83, TDNN 0.96, YOLO
    # 0.95, paper_mnist 1.80 (9 rows padded to 16), ResNeXt's groups of 4
    # filters 2.05 (padded to MR 8).
    fused_weight_grad_rate: float = 0.6
    fused_weight_grad_gather: float = 5.0
    # 1x1 kernels (any stride), where the BLAS lowerings' B is a plain
    # (strided) copy: the formula above said 0.79-1.5, measured 1.09-1.76 (2a,
    # 2b, 4b, 3a proj 1x1/2). Checked in fresh processes (bench/steady_state.py
    # --kind weight_grad, best of 2): fused / best BLAS lowering 5b_3x3 0.75,
    # 4b 0.96, dilated 0.90, VGG 3_2 1.00, 3a 3x3/2 1.02, 3b 1.09.
    # Since the kernel reads G in place (the model no longer counts packing
    # G there), 1.6 -> 1.9: the 1x1/2 projection measured fused 1.08x mapped
    # and 1.12x stretch (interleaved, 9 rounds), which 1.6 would have
    # chosen; the same run had the stem's 7x7/2 at fused 0.86x mapped, which
    # the model now chooses (0.94).
    fused_weight_grad_pointwise: float = 1.9
    # The BLAS input gradient's col2im (the product's rows x columns added
    # back into the input), in flops of its GEMM per element: fitted to
    # mapped's time over its GEMM model on strided layers (fp32, 2 threads,
    # one process): 0.55-0.64 with 512 filters (wav2vec 2.0 conv1, ResNet-50
    # 3a projection), 0.65 with 128 (3a 3x3/2), 0.74-0.9 with 64 (AlexNet
    # conv1, ArcFace 3x3/2, ResNet-50 stem), 0.82 with 32 (DeepSpeech2 conv2).
    col2im_flops: float = 26.0
    # The phased input gradient (stride-1 forward passes, one per phase of
    # the input): its passes' modelled cost times phased_factor, fitted to
    # phased / mapped measured side by side (fp32, 2 threads, one process,
    # 10-15 % noise between runs): ResNet-50 3a 3x3/2 1.02-1.13, ArcFace
    # 3x3/2 1.08-1.13, 3a projection (1x1/2) 1.13-1.23, DeepSpeech2 conv2
    # (21x11/2, 32 filters) 0.84, wav2vec 2.0 conv1 (1x3/2) 0.90-0.96;
    # transposed convolutions: DCGAN 4x4/2 512 -> 256 0.88 and 256 -> 128
    # 0.89, FCN 3x3/2 0.92, U-Net 2x2/2 1.00. At 1.2 the model picks the
    # faster on all but DCGAN 256 -> 128 and FCN (within 11 %, mapped). And
    # the spreading of each phase into the gradient (phased.scatter_phase),
    # in flop-equivalents per element of the gradient (3a 3x3/2: 0.9 ms for
    # 3.2 M elements, 2 threads).
    phased_factor: float = 1.2
    phased_spread: float = 56.0

    def __hash__(self):
        # Hashed once: every call's plan-cache key holds the tuning in force,
        # and hashing its 47 fields cost 0.64 us a call (a 1x8x8x8 3x3
        # layer's whole call is ~20 us). Frozen, so the hash never changes.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(dataclasses.astuple(self))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self):
        # not the cached hash: a string's hash differs between processes
        return {name: value for name, value in self.__dict__.items() if name != "_hash"}


_lock = threading.Lock()
_current = Tuning()


def current():
    """The tuning in force (process-wide)."""
    return _current


@contextmanager
def tuned(**changes):
    """Plan with some constants changed inside a ``with`` block (process-wide,
    for tests and experiments): ``with tuned(tile_target_bytes=64): ...``."""
    global _current
    with _lock:
        saved = _current
        _current = dataclasses.replace(saved, **changes)
    try:
        yield _current
    finally:
        with _lock:
            _current = saved

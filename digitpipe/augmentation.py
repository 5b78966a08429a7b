"""The training copies of a digit (digitpipe.records.specs.Augmentation): moved, turned, rescaled, slanted, warped,
redrawn with a round pen, thicker or thinner, lit as a photo, noisy and blurred; the whole batch at once, on its
device (tensors only: the loop calls this for every batch)."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from digitpipe.records.specs import Augmentation


def augment(x: torch.Tensor, how: Augmentation) -> torch.Tensor:
    """Random rotation, shift and scaling per image (raw pixels, N x 1 x 28 x 28), then slant, elastic distortion,
    a round pen, a thicker or thinner pen, photo lighting, noise and blur for random shares of the batch; all on
    x's device."""
    n, device = len(x), x.device
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(how.degrees)
    zoom = 1 + (torch.rand(n, device=device) * 2 - 1) * how.scale
    shift = (torch.rand(n, 2, device=device) * 2 - 1) * (2 * how.shift_px / x.shape[-1])  # grid units: 2 = full width
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    if how.slant_share:
        x = _only_some(x, how.slant_share, lambda v: slant(v, how.slant_degrees))
    if how.elastic_share:
        x = _only_some(x, how.elastic_share, lambda v: elastic(v, how.elastic_alpha, how.elastic_sigma))
    if how.round_pen_share:  # before _pen, so a re-rendered stroke's width still varies
        x = _only_some(x, how.round_pen_share, lambda v: round_pen(v, how.round_pen_min, how.round_pen_max))
    if how.pen_share:
        x = _some(x, how.pen_share, lambda v: _pen(v, how.pen_full_share, how.pen_pixels))
    if how.photo_share:  # before noise and blur: the sensor adds those after the light fell on the page
        x = _some(x, how.photo_share, lambda v: photo_light(v, how.photo_fade))
    if how.noise_share:
        x = _some(x, how.noise_share, lambda v: v + torch.randn_like(v) * how.noise_sigma
                  * torch.rand(len(v), 1, 1, 1, device=device))
    if how.blur_share:
        x = _some(x, how.blur_share, lambda v: _blur(v, how.blur_sigma))
    return x.clamp(0, 255)


def slant(x: torch.Tensor, max_degrees: float) -> torch.Tensor:
    """Each image sheared horizontally by its own angle up to `max_degrees` either way (slanted handwriting), about
    the image's centre; on x's device."""
    n = len(x)
    shear = torch.tan((torch.rand(n, device=x.device) * 2 - 1) * math.radians(max_degrees))
    zero, one = torch.zeros(n, device=x.device), torch.ones(n, device=x.device)
    theta = torch.stack([torch.stack([one, shear, zero], 1), torch.stack([zero, one, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def elastic(x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """Elastic distortion (Simard, Steinkraus and Platt, 2003): per image a random displacement field, smoothed by
    a Gaussian of `sigma` pixels and scaled to `alpha` pixels, applied by bilinear sampling; on x's device."""
    n, _, height, width = x.shape
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    line = torch.exp(-(offsets ** 2) / (2 * sigma ** 2))
    line = line / line.sum()
    field = torch.rand(n * 2, 1, height, width, device=x.device, dtype=x.dtype) * 2 - 1
    field = F.conv2d(field, line.view(1, 1, 1, -1), padding=(0, radius))  # separable: rows, then columns
    field = F.conv2d(field, line.view(1, 1, -1, 1), padding=(radius, 0)).view(n, 2, height, width)
    scale = torch.tensor([2 / width, 2 / height], device=x.device, dtype=x.dtype).view(1, 2, 1, 1)
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    grid = grid + (field * alpha * scale).permute(0, 2, 3, 1)  # pixels to grid units (2 = the whole width)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def _some(x: torch.Tensor, share: float, change) -> torch.Tensor:
    """`change` applied to a random `share` of the images in `x`."""
    chosen = torch.rand(len(x), 1, 1, 1, device=x.device) < share
    return torch.where(chosen, change(x), x)


def _only_some(x: torch.Tensor, share: float, change) -> torch.Tensor:
    """`change` applied to a random `share` of the images in `x`, computed for those alone on the host (round
    pens and warps cost ~10x the rest); on an accelerator for all of them, where picking some would stall it."""
    if x.device.type != "cpu":
        return _some(x, share, change)
    chosen = torch.rand(len(x), device=x.device) < share
    if not chosen.any():  # a small last batch may draw none: affine_grid refuses an empty batch
        return x
    x = x.clone()
    x[chosen] = change(x[chosen])
    return x


def _pen(x: torch.Tensor, full_share: float, pixels: float = 1.0) -> torch.Tensor:
    """Strokes up to `pixels` thicker (half the images) or thinner (the other half): repeated cross-shaped dilations
    or erosions, by the whole `pixels` for `full_share` of the images and by a random amount for the rest (a
    fractional step blended between two whole ones)."""
    thicker = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
    sign = torch.where(thicker, 1.0, -1.0)  # erosion is the dilation of the negative
    amount = torch.rand(len(x), 1, 1, 1, device=x.device)
    amount = torch.where(torch.rand_like(amount) < full_share, 1.0, amount) * pixels
    out, step = x, x
    for whole in range(max(1, math.ceil(pixels))):
        following = sign * _cross_dilate(sign * step)
        # Telescoping: whole step k's change weighted by the part of it `amount` covers (one pixel: a single blend)
        out = out + (amount - whole).clamp(0, 1) * (following - step)
        step = following
    return out


def _cross_dilate(v: torch.Tensor) -> torch.Tensor:
    """Each pixel the max of itself and its four direct neighbours (outside the frame: 0)."""
    padded = F.pad(v, (1, 1, 1, 1))
    return torch.stack([v, padded[..., :-2, 1:-1], padded[..., 2:, 1:-1], padded[..., 1:-1, :-2],
                        padded[..., 1:-1, 2:]]).amax(0)


def round_pen(x: torch.Tensor, min_radius: float, max_radius: float) -> torch.Tensor:
    """Each digit redrawn with a round pen of one width, as a mouse or finger draws: its ink (above half its
    brightest pixel) thinned to a skeleton, then an anti-aliased disc of the image's own radius (pixels, drawn
    uniformly between `min_radius` and `max_radius`) stamped on every skeleton pixel; on x's device."""
    radius = min_radius + torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) * (max_radius - min_radius)
    ink = (x > 0.5 * x.amax((1, 2, 3), keepdim=True)) & (x > 0)
    bones = skeleton(ink).to(x.dtype)
    # The max over stamped discs of clamp(r + 0.5 - distance, 0, 1) is that value at the nearest skeleton pixel's
    # distance (the disc falls with distance): one distance map per image serves any radius.
    half = max(1, math.ceil(max(min_radius, max_radius) + 0.5))  # the disc's support: distance < radius + 0.5
    return (radius + 0.5 - _nearest_distance(bones, half)).clamp(0, 1) * 255


def _nearest_distance(marks: torch.Tensor, half: int) -> torch.Tensor:
    """Per pixel the distance to the nearest nonzero pixel of `marks` within `half` pixels along each axis (inf if
    none): squared distances, rows then columns, each a min over 2 * half + 1 shifts (Felzenszwalb's separable
    transform, windowed)."""
    squared = torch.where(marks > 0, 0.0, math.inf).to(marks.dtype)
    for dim in (-1, -2):
        size = squared.shape[dim]
        padded = F.pad(squared, (half, half, 0, 0) if dim == -1 else (0, 0, half, half), value=math.inf)
        squared = torch.stack([padded.narrow(dim, k, size) + (k - half) ** 2 for k in range(2 * half + 1)]).amin(0)
    return squared.sqrt()


def skeleton(ink: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Zhang-Suen thinning of boolean images N x 1 x H x W to one-pixel-wide strokes, every image at once: at most
    `iterations` (each peels a pixel off both sides; 10 thin all but ~1 in 5,000 MNIST digits completely), a
    fixed number on an accelerator, where checking for the end would stall it; more change nothing."""
    keep, bits = _zhang_suen_kernels(ink.device)
    v = ink.float()
    for _ in range(iterations):
        before = v
        for table in keep:  # the two sub-iterations: south-east sides first, then north-west
            v = v * table[F.conv2d(v, bits, padding=1).long()]
        if v.device.type == "cpu" and torch.equal(v, before):
            break  # thin already: on the host the check is free (on an accelerator it would wait for the device)
    return v.bool()


@functools.cache  # per device: copying them there every batch would make the host wait for an accelerator
def _zhang_suen_kernels(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """What thinning reads, on `device`: per sub-iteration, whether each of the 256 neighbourhoods keeps an ink
    pixel (2 x 256, 0 or 1), and the 3 x 3 kernel that writes a pixel's eight neighbours as the bits of one number
    (sums of distinct powers of two up to 255, exact in any float a convolution may use)."""
    n = (torch.arange(256)[:, None] >> torch.arange(8)) & 1  # P2..P9 clockwise from north, P2 the lowest bit
    count = n.sum(1)
    steps = ((n == 0) & (n.roll(-1, 1) == 1)).sum(1)  # 0 -> 1 steps around the ring
    p2, p4, p6, p8 = n[:, 0], n[:, 2], n[:, 4], n[:, 6]
    border = (count >= 2) & (count <= 6) & (steps == 1)  # not an end, not a bridge, not inside
    first = border & (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)  # on the south-east side
    second = border & (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)  # on the north-west side
    bits = torch.tensor([[128.0, 1, 2], [64, 0, 4], [32, 16, 8]]).view(1, 1, 3, 3)
    return (~torch.stack([first, second])).float().to(device), bits.to(device)


def photo_light(x: torch.Tensor, max_fade: float) -> torch.Tensor:
    """Uneven light, as a photo of a page leaves it after the picture reader: per image the ink's level falls
    linearly across the frame in a random direction, from 1 to 1 minus a random fade up to `max_fade`, and
    the stroke edges soften (a blur of sigma 0.5 to 1 pixel); on x's device."""
    n, _, h, w = x.shape
    angle = torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * (2 * math.pi)
    fade = torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * max_fade
    rows = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    cols = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    reach = angle.cos().abs() + angle.sin().abs()  # the projection's half-range over the frame
    along = (angle.cos() * cols + angle.sin() * rows + reach) / (2 * reach)  # 0 at one corner or edge, 1 across
    return _blur(x * (1 - fade * along), 1.0, min_sigma=0.5)


def _blur(x: torch.Tensor, max_sigma: float, min_sigma: float = 0.3) -> torch.Tensor:
    """Gaussian blur, each image with its own sigma from `min_sigma` to `max_sigma` (a grouped convolution, 5x5
    kernels)."""
    sigma = min_sigma + torch.rand(len(x), device=x.device) * (max_sigma - min_sigma)
    offsets = torch.arange(-2, 3, device=x.device, dtype=x.dtype)
    line = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    line = line / line.sum(1, keepdim=True)
    kernels = (line[:, :, None] * line[:, None, :])[:, None]  # N x 1 x 5 x 5
    blurred = F.conv2d(x.reshape(1, len(x), *x.shape[-2:]), kernels, padding=2, groups=len(x))
    return blurred.reshape(x.shape)

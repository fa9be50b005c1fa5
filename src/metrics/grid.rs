//! Voxel-set geometry for the metrics: bounding boxes, 26-connected components and dilation
//! with the 18-neighbourhood, all working inside bounding boxes so that a small lesion in a
//! 240x240x155 volume costs what its box costs, not what the volume costs.
//!
//! Voxel sets are lists of linear indices in NIfTI order (x fastest), as `Volume` stores them.

/// The shape of a volume and the conversions between linear indices and coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub shape: [usize; 3],
}

impl Grid {
    pub fn new(shape: [usize; 3]) -> Self {
        Grid { shape }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn index(&self, [x, y, z]: [usize; 3]) -> usize {
        x + self.shape[0] * (y + self.shape[1] * z)
    }

    pub fn coords(&self, index: usize) -> [usize; 3] {
        let [nx, ny, _] = self.shape;
        [index % nx, (index / nx) % ny, index / (nx * ny)]
    }

    /// Position of a voxel in C order (x slowest, z fastest): the order in which the
    /// reference implementation's connected-component labelling numbers components, because
    /// it labels arrays that scipy's dilation returned in C order.
    pub fn c_order(&self, [x, y, z]: [usize; 3]) -> usize {
        (x * self.shape[1] + y) * self.shape[2] + z
    }
}

/// A box of voxels, `lo` inclusive and `hi` exclusive on each axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub lo: [usize; 3],
    pub hi: [usize; 3],
}

impl Bounds {
    pub const EMPTY: Bounds = Bounds {
        lo: [usize::MAX; 3],
        hi: [0; 3],
    };

    pub fn is_empty(&self) -> bool {
        (0..3).any(|a| self.lo[a] >= self.hi[a])
    }

    pub fn include(&mut self, p: [usize; 3]) {
        for (a, &c) in p.iter().enumerate() {
            self.lo[a] = self.lo[a].min(c);
            self.hi[a] = self.hi[a].max(c + 1);
        }
    }

    pub fn union(self, other: Bounds) -> Bounds {
        if self.is_empty() {
            return other;
        }
        if other.is_empty() {
            return self;
        }
        Bounds {
            lo: std::array::from_fn(|a| self.lo[a].min(other.lo[a])),
            hi: std::array::from_fn(|a| self.hi[a].max(other.hi[a])),
        }
    }

    /// The box grown by `margin` voxels on every side, clipped to the volume.
    pub fn grow(self, margin: usize, grid: Grid) -> Bounds {
        Bounds {
            lo: std::array::from_fn(|a| self.lo[a].saturating_sub(margin)),
            hi: std::array::from_fn(|a| (self.hi[a] + margin).min(grid.shape[a])),
        }
    }

    pub fn dims(&self) -> [usize; 3] {
        std::array::from_fn(|a| self.hi[a].saturating_sub(self.lo[a]))
    }

    pub fn of(grid: Grid, voxels: &[usize]) -> Bounds {
        let mut b = Bounds::EMPTY;
        for &v in voxels {
            b.include(grid.coords(v));
        }
        b
    }
}

/// A dense boolean mask over a box of a volume; outside the box everything is false.
#[derive(Debug, Clone)]
pub struct BoxMask {
    pub bounds: Bounds,
    dims: [usize; 3],
    pub data: Vec<bool>,
}

impl BoxMask {
    pub fn new(bounds: Bounds) -> Self {
        let dims = bounds.dims();
        BoxMask {
            bounds,
            dims,
            data: vec![false; dims.iter().product()],
        }
    }

    /// The mask of `voxels` in the box `bounds`, which must contain them.
    pub fn from_voxels(grid: Grid, bounds: Bounds, voxels: &[usize]) -> Self {
        let mut mask = BoxMask::new(bounds);
        for &v in voxels {
            let i = mask.local(grid.coords(v));
            mask.data[i] = true;
        }
        mask
    }

    fn local(&self, [x, y, z]: [usize; 3]) -> usize {
        let [lx, ly, lz] = self.bounds.lo;
        (x - lx) + self.dims[0] * ((y - ly) + self.dims[1] * (z - lz))
    }

    fn global(&self, i: usize) -> [usize; 3] {
        let [dx, dy, _] = self.dims;
        let [lx, ly, lz] = self.bounds.lo;
        [lx + i % dx, ly + (i / dx) % dy, lz + i / (dx * dy)]
    }

    /// Global linear indices of the set voxels, ascending.
    pub fn voxels(&self, grid: Grid) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .data
            .iter()
            .enumerate()
            .filter(|(_, on)| **on)
            .map(|(i, _)| grid.index(self.global(i)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Dilation by the 18-neighbourhood (the 3x3x3 cube without its corners, scipy's
    /// `generate_binary_structure(3, 2)`), `iterations` times. The box must leave room for the
    /// growth where the volume allows it; nothing grows past the box, as nothing grows past the
    /// volume's edge in the reference.
    pub fn dilate18(&mut self, iterations: usize) {
        let [dx, dy, dz] = self.dims;
        let mut next = self.data.clone();
        for _ in 0..iterations {
            next.copy_from_slice(&self.data);
            for z in 0..dz {
                for y in 0..dy {
                    for x in 0..dx {
                        let i = x + dx * (y + dy * z);
                        if !self.data[i] {
                            continue;
                        }
                        for (ox, oy, oz) in NEIGHBOURS_18 {
                            let (nx, ny, nz) = (x as isize + ox, y as isize + oy, z as isize + oz);
                            if nx < 0 || ny < 0 || nz < 0 {
                                continue;
                            }
                            let (nx, ny, nz) = (nx as usize, ny as usize, nz as usize);
                            if nx < dx && ny < dy && nz < dz {
                                next[nx + dx * (ny + dy * nz)] = true;
                            }
                        }
                    }
                }
            }
            std::mem::swap(&mut self.data, &mut next);
        }
    }

    /// 26-connected components, each as its set voxels' local indices, in no particular order.
    fn components26(&self) -> Vec<Vec<usize>> {
        let [dx, dy, dz] = self.dims;
        let mut seen = vec![false; self.data.len()];
        let mut components = Vec::new();
        let mut stack = Vec::new();
        for start in 0..self.data.len() {
            if !self.data[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            stack.push(start);
            let mut members = Vec::new();
            while let Some(i) = stack.pop() {
                members.push(i);
                let (x, y, z) = (i % dx, (i / dx) % dy, i / (dx * dy));
                for nz in z.saturating_sub(1)..(z + 2).min(dz) {
                    for ny in y.saturating_sub(1)..(y + 2).min(dy) {
                        for nx in x.saturating_sub(1)..(x + 2).min(dx) {
                            let j = nx + dx * (ny + dy * nz);
                            if self.data[j] && !seen[j] {
                                seen[j] = true;
                                stack.push(j);
                            }
                        }
                    }
                }
            }
            components.push(members);
        }
        components
    }
}

/// Offsets of the 18-neighbourhood: every neighbour that shares a face or an edge.
pub const NEIGHBOURS_18: [(isize, isize, isize); 18] = {
    let mut out = [(0, 0, 0); 18];
    let mut n = 0;
    let mut z = -1;
    while z <= 1 {
        let mut y = -1;
        while y <= 1 {
            let mut x = -1;
            while x <= 1 {
                let nonzero = (x != 0) as i32 + (y != 0) as i32 + (z != 0) as i32;
                if nonzero == 1 || nonzero == 2 {
                    out[n] = (x, y, z);
                    n += 1;
                }
                x += 1;
            }
            y += 1;
        }
        z += 1;
    }
    out
};

/// Groups the voxels of a mask into lesions the way BraTS does: dilate the mask `dilation`
/// times with the 18-neighbourhood, and every voxel of the mask belongs to the 26-connected
/// component of the dilated mask it lies in. Lesions come in the reference's numbering order
/// (first voxel of the dilated component in C order); with `dilation` 0 they are the plain
/// 26-connected components.
pub fn lesions_by_dilation(grid: Grid, voxels: &[usize], dilation: usize) -> Vec<Vec<usize>> {
    if voxels.is_empty() {
        return Vec::new();
    }
    let bounds = Bounds::of(grid, voxels).grow(dilation, grid);
    let mut mask = BoxMask::from_voxels(grid, bounds, voxels);
    let original = mask.data.clone();
    mask.dilate18(dilation);
    let mut groups: Vec<(usize, Vec<usize>)> = mask
        .components26()
        .into_iter()
        .map(|component| {
            let first = component
                .iter()
                .map(|&i| grid.c_order(mask.global(i)))
                .min()
                .unwrap_or(usize::MAX);
            let mut members: Vec<usize> = component
                .into_iter()
                .filter(|&i| original[i])
                .map(|i| grid.index(mask.global(i)))
                .collect();
            members.sort_unstable();
            (first, members)
        })
        .collect();
    groups.sort_unstable_by_key(|(first, _)| *first);
    groups.into_iter().map(|(_, members)| members).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid::new([12, 10, 8])
    }

    #[test]
    fn the_18_neighbourhood_has_faces_and_edges_but_no_corners() {
        assert_eq!(NEIGHBOURS_18.len(), 18);
        assert!(NEIGHBOURS_18.iter().all(|&(x, y, z)| x.abs() + y.abs() + z.abs() <= 2));
    }

    #[test]
    fn diagonal_neighbours_are_one_component_and_a_gap_makes_two() {
        let g = grid();
        let corner_touching = [g.index([2, 2, 2]), g.index([3, 3, 3])];
        assert_eq!(lesions_by_dilation(g, &corner_touching, 0).len(), 1);
        let apart = [g.index([2, 2, 2]), g.index([4, 2, 2])];
        assert_eq!(lesions_by_dilation(g, &apart, 0).len(), 2);
    }

    #[test]
    fn dilation_merges_lesions_within_reach() {
        let g = grid();
        // Two voxels 7 apart along x: one dilation step of 18-connectivity reaches one voxel,
        // so 3 steps from each side close a gap of 6 voxels between them.
        let a = g.index([1, 5, 4]);
        assert_eq!(lesions_by_dilation(g, &[a, g.index([8, 5, 4])], 3).len(), 1);
        assert_eq!(lesions_by_dilation(g, &[a, g.index([9, 5, 4])], 3).len(), 2);
        // Along the space diagonal a step moves at most two axes, so 3 steps from each side
        // plus one 26-connected step cover 15 unit moves: (5, 5, 5) apart merges, (6, 6, 6) not.
        let b = g.index([1, 1, 1]);
        assert_eq!(lesions_by_dilation(g, &[b, g.index([6, 6, 6])], 3).len(), 1);
        assert_eq!(lesions_by_dilation(g, &[b, g.index([7, 7, 7])], 3).len(), 2);
    }

    #[test]
    fn lesions_are_numbered_by_first_voxel_in_c_order() {
        let g = grid();
        // x is the slowest axis in C order: the lesion at x = 1 comes first even though the
        // lesion at x = 9 comes first in memory (it has the smaller z).
        let late_in_memory = g.index([1, 0, 7]);
        let early_in_memory = g.index([9, 0, 0]);
        let lesions = lesions_by_dilation(g, &[early_in_memory, late_in_memory], 0);
        assert_eq!(lesions, vec![vec![late_in_memory], vec![early_in_memory]]);
    }

    #[test]
    fn dilation_stops_at_the_volume_edge() {
        let g = grid();
        let mut mask = BoxMask::from_voxels(g, Bounds::of(g, &[0]).grow(2, g), &[0]);
        mask.dilate18(2);
        // Growth only into the octant inside the volume: voxels within 18-distance 2 of the corner.
        assert!(mask.voxels(g).iter().all(|&v| g.coords(v).iter().all(|&c| c <= 2)));
        assert!(mask.voxels(g).contains(&g.index([2, 0, 0])));
        assert!(!mask.voxels(g).contains(&g.index([2, 2, 2])));
    }
}

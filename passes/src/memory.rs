//! Memory planning: every activation of one image gets an offset in a
//! single arena. Tensors whose lifetimes overlap never share bytes.
//!
//! Liveness is measured in steps of the node order: a tensor lives from the
//! step that writes it to the last step that reads it (the graph output to
//! the end). Three kinds of sharing:
//! - in place: batch norm, activations, `add`, `mul` and a convolution's
//!   fused residual write over an input that dies at that step and has the
//!   output's shape (each element is read just before it is overwritten);
//! - views: a channel slice is a contiguous range of its input (NCHW), so it
//!   takes no memory of its own and keeps its input alive;
//! - concat parts: a concatenation along channels (without a fused channel
//!   order) is contiguous ranges of its output, so an input the concat is
//!   the only reader of is written straight into its range and the concat
//!   copies nothing for it (zero-copy concat). The concat's storage is then
//!   live from its first part's step.
//!
//! The op facts ([`Op::in_place_inputs`], [`Op::is_view`]) say which
//! sharings an op offers; the consumer of the plan says which of them its
//! code can take ([`Options::allows`]: the JIT, for instance, states which
//! of its kernels run in place). This is the only planner: the JIT runs
//! with its plan as is and the search's memory budgets read it.
//!
//! Buffers are then placed greedily, largest first, at the lowest
//! aligned offset ([`Options::align`], 64 bytes by default) free for
//! their lifetime. The plan reports the
//! lower bound any placement needs: the largest total size of tensors live
//! at one step.

use std::collections::HashMap;

use shufflekit_ir::{Graph, NodeId, Op};

/// Alignment of every buffer in bytes, unless [`Options::align`] says
/// otherwise.
pub const ALIGN: usize = 64;

/// A way a node's output may share the bytes of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// The output overwrites the input in this slot (an
    /// [`Op::in_place_inputs`] slot).
    InPlace {
        /// The input slot.
        slot: usize,
    },
    /// The output is a view of its first input's bytes ([`Op::is_view`]).
    View,
    /// The output is written straight into its channel range of the
    /// concatenation that reads it ([`Buffer::shares`] names the concat).
    IntoConcat,
}

/// What the consumer of a plan needs of it.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Alignment of every buffer's offset, in bytes (a power of two).
    pub align: usize,
    /// Whether the code computing a node can take a sharing its op offers.
    /// It is asked only about sharings the op facts allow.
    pub allows: fn(&Graph, NodeId, Sharing) -> bool,
}

impl Default for Options {
    /// 64-byte alignment, every sharing the ops offer.
    fn default() -> Self {
        Options {
            align: ALIGN,
            allows: |_, _, _| true,
        }
    }
}

/// Where one node's output lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    /// The node.
    pub node: NodeId,
    /// Byte offset in the arena.
    pub offset: usize,
    /// Size in bytes (per image).
    pub bytes: usize,
    /// The storage it shares (in place or as a view), if any: the first
    /// node that owns those bytes.
    pub shares: Option<NodeId>,
    /// How it shares the bytes of an input, if it does.
    pub sharing: Option<Sharing>,
}

/// The arena layout of a graph, per image.
#[derive(Debug, Clone)]
pub struct MemoryPlan {
    /// One buffer a node, in node order.
    pub buffers: Vec<Buffer>,
    /// Arena size in bytes for one image.
    pub arena_bytes: usize,
    /// The largest total size of tensors live at the same step: no placement
    /// can use less.
    pub lower_bound_bytes: usize,
    /// The sum of all activations' sizes (what a plan without reuse needs).
    pub total_bytes: usize,
}

/// A block of bytes shared by one or more nodes.
#[derive(Debug, Clone)]
struct Storage {
    bytes: usize,
    first: usize,
    last: usize,
    offset: usize,
}

impl MemoryPlan {
    /// The buffer of a node.
    pub fn buffer(&self, id: NodeId) -> Option<&Buffer> {
        self.buffers.iter().find(|b| b.node == id)
    }

    /// Arena bytes for a batch of `batch` images.
    pub fn arena_bytes_for(&self, batch: usize) -> Option<usize> {
        self.arena_bytes.checked_mul(batch)
    }

    /// Checks the plan against the graph, node by node: every buffer lies in
    /// the arena, every sharing is one its op offers, and no node's bytes
    /// are written by another node while they are needed, except by the
    /// in-place op that reads them for the last time. Views write nothing
    /// and their bytes belong to the tensor they view.
    pub fn check(&self, graph: &Graph) -> Result<(), String> {
        let order: Vec<NodeId> = graph.nodes().collect();
        if order.len() != self.buffers.len() {
            return Err(format!(
                "{} buffers for {} nodes",
                self.buffers.len(),
                order.len()
            ));
        }
        if let Some((b, n)) = self.buffers.iter().zip(&order).find(|(b, n)| b.node != **n) {
            return Err(format!("the buffer of {} stands where {n} runs", b.node));
        }
        let step: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let end = order.len();
        for b in &self.buffers {
            let node = graph.node(b.node);
            let offered = match b.sharing {
                None => true,
                Some(Sharing::View) => node.op.is_view(),
                Some(Sharing::InPlace { slot }) => {
                    node.op.in_place_inputs().contains(&slot) && slot < graph.inputs(b.node).len()
                }
                Some(Sharing::IntoConcat) => {
                    let placed = b.shares.and_then(|c| {
                        let at = concat_part_offset(graph, c, b.node)?;
                        Some(self.buffers.get(*step.get(&c)?)?.offset + at)
                    });
                    if placed != Some(b.offset) {
                        return Err(format!(
                            "`{}` is not written where its concat reads it",
                            node.name
                        ));
                    }
                    true
                }
            };
            if !offered {
                return Err(format!(
                    "`{}` ({}) cannot share an input's bytes as {:?}",
                    node.name,
                    node.op.kind(),
                    b.sharing
                ));
            }
            if b.offset
                .checked_add(b.bytes)
                .is_none_or(|e| e > self.arena_bytes)
            {
                return Err(format!("the buffer of {} ends past the arena", b.node));
            }
        }
        let is_view = |n: NodeId| self.buffers[step[&n]].sharing == Some(Sharing::View);
        // Whether `n` is `x` or a view (of a view...) of `x`.
        let reads_bytes_of = |mut n: NodeId, x: NodeId| loop {
            if n == x {
                return true;
            }
            if !is_view(n) {
                return false;
            }
            n = graph.inputs(n)[0];
        };
        let last = |n: NodeId| {
            let users = graph
                .users(n)
                .into_iter()
                .filter_map(|u| step.get(&u).copied())
                .max();
            users
                .max((graph.output() == Some(n)).then_some(end))
                .unwrap_or(step[&n])
        };
        // A view's bytes stay needed while the view is live.
        let mut needed: HashMap<NodeId, usize> = order.iter().map(|&n| (n, last(n))).collect();
        for &n in order.iter().rev() {
            if is_view(n) {
                let src = graph.inputs(n)[0];
                let v = needed[&n];
                let e = needed.entry(src).or_default();
                *e = (*e).max(v);
            }
        }
        for (i, w) in self.buffers.iter().enumerate() {
            if w.sharing == Some(Sharing::View) {
                continue;
            }
            let wn = graph.node(w.node);
            let w_inputs = graph.inputs(w.node);
            let wdef = step[&w.node];
            for (j, x) in self.buffers.iter().enumerate() {
                if i == j || x.bytes == 0 || w.bytes == 0 {
                    continue;
                }
                let overlap = w.offset < x.offset + x.bytes && x.offset < w.offset + w.bytes;
                let xdef = step[&x.node];
                let xneeded = needed[&x.node];
                // Bytes of x are clobbered if w writes while x is needed.
                if !overlap || wdef <= xdef || wdef > xneeded {
                    continue;
                }
                // Overwriting is allowed when x is read here for the last
                // time, through the in-place input (another slot may read
                // that same input: each element is read before it is
                // written).
                let in_place = wdef == xneeded
                    && match w.sharing {
                        Some(Sharing::InPlace { slot }) => {
                            let own = w_inputs[slot];
                            reads_bytes_of(own, x.node)
                                && w_inputs
                                    .iter()
                                    .all(|&input| input == own || !reads_bytes_of(input, x.node))
                        }
                        _ => false,
                    };
                // A concat copies a part written in place onto itself.
                let own_part = wdef == xneeded
                    && x.sharing == Some(Sharing::IntoConcat)
                    && x.shares == Some(w.node);
                if !in_place && !own_part {
                    return Err(format!(
                        "`{}` writes [{}..{}) at step {wdef} while `{}` [{}..{}) is live until step {xneeded}",
                        wn.name,
                        w.offset,
                        w.offset + w.bytes,
                        graph.node(x.node).name,
                        x.offset,
                        x.offset + x.bytes
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Plans the arena of a graph with the default [`Options`].
pub fn plan(graph: &Graph) -> MemoryPlan {
    plan_with(graph, &Options::default())
}

/// Plans the arena of a graph for a consumer with these needs.
pub fn plan_with(graph: &Graph, options: &Options) -> MemoryPlan {
    let order: Vec<NodeId> = graph.nodes().collect();
    let step: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let end = order.len();
    let last_use = |n: NodeId| -> usize {
        let users = graph
            .users(n)
            .into_iter()
            .filter_map(|u| step.get(&u).copied())
            .max();
        let until = if graph.output() == Some(n) {
            Some(end)
        } else {
            None
        };
        users.max(until).unwrap_or(step[&n])
    };
    let allows = |n: NodeId, sharing: Sharing| (options.allows)(graph, n, sharing);
    // The concat, and the byte offset in it, of each input written in place.
    let parts: HashMap<NodeId, (NodeId, usize)> = order
        .iter()
        .filter(|&&n| allows(n, Sharing::IntoConcat))
        .filter_map(|&n| {
            let [concat] = graph.users(n)[..] else {
                return None;
            };
            let at = concat_part_offset(graph, concat, n)?;
            (graph.output() != Some(n)).then_some((n, (concat, at)))
        })
        .collect();
    // Storage index and byte offset within that storage, per node.
    let mut home: HashMap<NodeId, (usize, usize)> = HashMap::new();
    let mut sharing: HashMap<NodeId, Sharing> = HashMap::new();
    let mut storage: Vec<Storage> = Vec::new();
    let mut owner: Vec<NodeId> = Vec::new();
    // The storage of each concat that has a part written in place.
    let mut concat_storage: HashMap<NodeId, usize> = HashMap::new();
    let mut total_bytes = 0usize;
    for &n in &order {
        let node = graph.node(n);
        let bytes = node.shape.numel() * 4;
        total_bytes += bytes;
        let inputs = graph.inputs(n);
        let here = step[&n];
        if let Some(&(concat, at)) = parts.get(&n) {
            let st = *concat_storage.entry(concat).or_insert_with(|| {
                storage.push(Storage {
                    bytes: graph.node(concat).shape.numel() * 4,
                    first: here,
                    last: here,
                    offset: 0,
                });
                owner.push(concat);
                storage.len() - 1
            });
            storage[st].last = storage[st].last.max(last_use(n));
            home.insert(n, (st, at));
            sharing.insert(n, Sharing::IntoConcat);
            continue;
        }
        if let Some(&st) = concat_storage.get(&n) {
            storage[st].last = storage[st].last.max(last_use(n));
            home.insert(n, (st, 0));
            continue;
        }
        let shared = match &node.op {
            Op::ChannelSlice(s) if allows(n, Sharing::View) => inputs.first().map(|&i| {
                let (st, off) = home[&i];
                (st, off + s.start * node.shape.spatial() * 4, Sharing::View)
            }),
            op => op.in_place_inputs().iter().find_map(|&slot| {
                let i = *inputs.get(slot)?;
                let (st, off) = home[&i];
                // Another input reading the same bytes (a view of them)
                // would see them overwritten.
                let shared_by_other = inputs.iter().any(|&j| j != i && home[&j].0 == st);
                let same_size =
                    graph.node(i).shape == node.shape && off == 0 && storage[st].bytes == bytes;
                let in_place = Sharing::InPlace { slot };
                (same_size
                    && !shared_by_other
                    && storage[st].last == here
                    && last_use(i) == here
                    && allows(n, in_place))
                .then_some((st, off, in_place))
            }),
        };
        match shared {
            Some((st, off, how)) => {
                storage[st].last = storage[st].last.max(last_use(n));
                home.insert(n, (st, off));
                sharing.insert(n, how);
            }
            None => {
                storage.push(Storage {
                    bytes,
                    first: here,
                    last: last_use(n),
                    offset: 0,
                });
                owner.push(n);
                home.insert(n, (storage.len() - 1, 0));
            }
        }
    }
    // The lower bound: the largest total of storages live at one step.
    // A sweep over the steps: +bytes where a storage starts, -bytes after
    // it ends (linear, where summing the live storages at each step was not).
    let mut delta = vec![0i128; end + 2];
    for s in &storage {
        delta[s.first] += s.bytes as i128;
        delta[s.last + 1] -= s.bytes as i128;
    }
    let mut live = 0i128;
    let mut lower_bound_bytes = 0usize;
    for d in &delta[..=end] {
        live += d;
        lower_bound_bytes = lower_bound_bytes.max(live as usize);
    }
    // Greedy placement under a few orders (largest first, longest-lived
    // first, largest area first, earliest first); keep the smallest arena.
    let orders: [PlacementKey; 4] = [
        |s| (std::cmp::Reverse(s.bytes), s.first),
        |s| (std::cmp::Reverse(s.last - s.first), s.first),
        |s| (std::cmp::Reverse(s.bytes * (s.last - s.first + 1)), s.first),
        |s| (std::cmp::Reverse(0), s.first),
    ];
    let align = options.align.max(1);
    let mut best: Option<(usize, Vec<usize>)> = None;
    for key in orders {
        let mut sequence: Vec<usize> = (0..storage.len()).collect();
        sequence.sort_by_key(|&i| key(&storage[i]));
        let (arena, offsets) = place(&storage, &sequence, align);
        if best.as_ref().is_none_or(|(b, _)| arena < *b) {
            best = Some((arena, offsets));
        }
    }
    let (arena_bytes, offsets) = best.unwrap_or_default();
    for (s, offset) in storage.iter_mut().zip(offsets) {
        s.offset = offset;
    }
    let buffers = order
        .iter()
        .map(|&n| {
            let (st, off) = home[&n];
            Buffer {
                node: n,
                offset: storage[st].offset + off,
                bytes: graph.node(n).shape.numel() * 4,
                shares: (owner[st] != n).then_some(owner[st]),
                sharing: sharing.get(&n).copied(),
            }
        })
        .collect();
    MemoryPlan {
        buffers,
        arena_bytes,
        lower_bound_bytes,
        total_bytes,
    }
}

/// The byte offset of `part`'s channels in the output of `concat`, when
/// `part` can be written there in place: `concat` is a channel concatenation
/// without a fused order, `part` is one of its inputs exactly once and owns
/// its bytes (not the graph input, a view or another concat).
fn concat_part_offset(graph: &Graph, concat: NodeId, part: NodeId) -> Option<usize> {
    let Op::Concat(c) = &graph.node(concat).op else {
        return None;
    };
    let op = &graph.node(part).op;
    if c.output_order.is_some() || op.is_view() || matches!(op, Op::Input(_) | Op::Concat(_)) {
        return None;
    }
    let inputs = graph.inputs(concat);
    let [slot] = inputs
        .iter()
        .enumerate()
        .filter(|(_, &i)| i == part)
        .map(|(s, _)| s)
        .collect::<Vec<_>>()[..]
    else {
        return None;
    };
    let before: usize = inputs[..slot]
        .iter()
        .map(|&i| graph.node(i).shape.numel())
        .sum();
    Some(before * 4)
}

/// A sort key for the placement order: larger first, then earlier.
type PlacementKey = fn(&Storage) -> (std::cmp::Reverse<usize>, usize);

/// Places storages in the given sequence, each at the lowest aligned offset
/// free for its lifetime. Returns the arena size and each storage's offset.
fn place(storage: &[Storage], sequence: &[usize], align: usize) -> (usize, Vec<usize>) {
    let mut offsets = vec![0; storage.len()];
    let steps = storage.iter().map(|s| s.last + 1).max().unwrap_or(0);
    let mut placed = Placed::new(steps);
    let mut arena = 0;
    for &i in sequence {
        let mut busy: Vec<(usize, usize)> = placed
            .overlapping(storage[i].first, storage[i].last)
            .into_iter()
            .map(|j| (offsets[j], offsets[j] + storage[j].bytes))
            .collect();
        busy.sort();
        let mut offset = 0;
        for (start, stop) in busy {
            if offset + storage[i].bytes <= start {
                break;
            }
            offset = offset.max(stop.next_multiple_of(align));
        }
        offsets[i] = offset;
        arena = arena.max(offset + storage[i].bytes);
        placed.insert(i, storage[i].first, storage[i].last);
    }
    (arena, offsets)
}

/// The storages placed so far, indexed by lifetime, so that finding those
/// whose lifetime overlaps a new one costs O(log steps + found) rather than
/// a scan of every placed storage (quadratic in the number of layers).
///
/// A lifetime `[a, b]` overlaps `[first, last]` when it contains `first` or
/// starts in `(first, last]`; the two sets are disjoint. Lifetimes that
/// contain a step are found in a segment tree over the steps (each lifetime
/// is kept at the O(log steps) tree nodes that cover it exactly); lifetimes
/// that start in a range, in a map ordered by start.
struct Placed {
    /// Number of leaves of the segment tree (a power of two >= steps).
    leaves: usize,
    /// Per tree node (1-based heap order), the storages covering it.
    cover: Vec<Vec<usize>>,
    /// Storages by the step they start at.
    by_start: std::collections::BTreeMap<usize, Vec<usize>>,
}

impl Placed {
    fn new(steps: usize) -> Placed {
        let leaves = steps.max(1).next_power_of_two();
        Placed {
            leaves,
            cover: vec![Vec::new(); 2 * leaves],
            by_start: Default::default(),
        }
    }

    fn insert(&mut self, id: usize, first: usize, last: usize) {
        // The canonical cover of [first, last] (bottom-up, half-open).
        let (mut lo, mut hi) = (first + self.leaves, last + 1 + self.leaves);
        while lo < hi {
            if lo & 1 == 1 {
                self.cover[lo].push(id);
                lo += 1;
            }
            if hi & 1 == 1 {
                hi -= 1;
                self.cover[hi].push(id);
            }
            lo /= 2;
            hi /= 2;
        }
        self.by_start.entry(first).or_default().push(id);
    }

    /// The placed storages whose lifetime overlaps `[first, last]`.
    fn overlapping(&self, first: usize, last: usize) -> Vec<usize> {
        let mut found = Vec::new();
        let mut node = first + self.leaves;
        while node >= 1 {
            found.extend_from_slice(&self.cover[node]);
            node /= 2;
        }
        if last > first {
            for ids in self.by_start.range(first + 1..=last).map(|(_, ids)| ids) {
                found.extend_from_slice(ids);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of three relus, planned in place, then with every sharing
    /// refused.
    fn chain() -> Graph {
        let mut g = Graph::new("chain");
        let x = g
            .add(
                Op::Input(shufflekit_ir::Shape::chw(2, 4, 4)),
                "x",
                &[],
                None,
            )
            .expect("input");
        let a = g.add(Op::Relu, "a", &[x], None).expect("a");
        let b = g.add(Op::Relu, "b", &[a], None).expect("b");
        let c = g.add(Op::Add, "c", &[a, b], None).expect("c");
        g.set_output(c);
        g
    }

    #[test]
    fn the_check_finds_a_buffer_written_while_another_is_live() {
        let g = chain();
        let mut plan = plan(&g);
        plan.check(&g).expect("the planned arena");
        // `b` over `a`, which `c` still reads.
        let [_, a, b, _] = &plan.buffers[..] else {
            panic!("four buffers")
        };
        let (a_offset, b_node) = (a.offset, b.node);
        let b = plan.buffers.iter_mut().find(|x| x.node == b_node).unwrap();
        b.offset = a_offset;
        b.sharing = None;
        let e = plan.check(&g).expect_err("b overwrites a");
        assert!(e.contains("`b` writes"), "{e}");
    }

    #[test]
    fn refused_sharings_are_not_given_and_the_check_holds() {
        let g = chain();
        let shared = plan(&g);
        assert!(shared.buffers.iter().any(|b| b.sharing.is_some()));
        let options = Options {
            align: 128,
            allows: |_, _, _| false,
        };
        let alone = plan_with(&g, &options);
        alone.check(&g).expect("the planned arena");
        assert!(alone.buffers.iter().all(|b| b.sharing.is_none()));
        assert!(alone.buffers.iter().all(|b| b.offset % 128 == 0));
        assert!(alone.arena_bytes > shared.arena_bytes);
    }

    #[test]
    fn a_sharing_the_op_does_not_offer_fails_the_check() {
        let g = chain();
        let mut plan = plan(&g);
        plan.buffers[1].sharing = Some(Sharing::View);
        let e = plan.check(&g).expect_err("relu is no view");
        assert!(e.contains("cannot share"), "{e}");
    }

    /// `cat(relu(x), sigmoid(x))` then a relu: both parts are written into
    /// the concat's storage at their channel offsets.
    fn concat_of_two() -> Graph {
        let mut g = Graph::new("cat");
        let x = g
            .add(
                Op::Input(shufflekit_ir::Shape::chw(3, 4, 4)),
                "x",
                &[],
                None,
            )
            .expect("input");
        let a = g.add(Op::Relu, "a", &[x], None).expect("a");
        let b = g.add(Op::Sigmoid, "b", &[x], None).expect("b");
        let cat = g
            .add(Op::Concat(Default::default()), "cat", &[a, b], None)
            .expect("cat");
        let y = g.add(Op::Relu, "y", &[cat], None).expect("y");
        g.set_output(y);
        g
    }

    #[test]
    fn concat_inputs_are_written_in_place() {
        let g = concat_of_two();
        let plan = plan(&g);
        plan.check(&g).expect("the planned arena");
        let [_, a, b, cat, _] = &plan.buffers[..] else {
            panic!("five buffers")
        };
        assert_eq!(a.sharing, Some(Sharing::IntoConcat));
        assert_eq!(b.sharing, Some(Sharing::IntoConcat));
        assert_eq!((a.shares, b.shares), (Some(cat.node), Some(cat.node)));
        assert_eq!(a.offset, cat.offset);
        assert_eq!(b.offset, cat.offset + 3 * 16 * 4);
        // x, the concat (both parts) and nothing else: x dies at `b`.
        assert_eq!(plan.arena_bytes, (3 + 6) * 16 * 4);

        // Refused, the parts get buffers of their own.
        let options = Options {
            align: 64,
            allows: |_, _, s| s != Sharing::IntoConcat,
        };
        let copied = plan_with(&g, &options);
        copied.check(&g).expect("the planned arena");
        assert!(copied
            .buffers
            .iter()
            .all(|b| b.sharing != Some(Sharing::IntoConcat)));
        assert!(copied.arena_bytes > plan.arena_bytes);
    }

    #[test]
    fn the_check_finds_a_concat_part_out_of_place() {
        let g = concat_of_two();
        let mut plan = plan(&g);
        plan.buffers[2].offset += 4;
        let e = plan
            .check(&g)
            .expect_err("b is not where the concat reads it");
        assert!(e.contains("not written where its concat reads it"), "{e}");
        // A part that is used elsewhere too cannot be written in place.
        let mut g = concat_of_two();
        let a = g.nodes().nth(1).expect("a");
        let out = g.output().expect("output");
        let sum = g
            .add(Op::Concat(Default::default()), "z", &[out, a], None)
            .expect("z");
        g.set_output(sum);
        let plan = super::plan(&g);
        plan.check(&g).expect("the planned arena");
        assert_ne!(plan.buffers[1].sharing, Some(Sharing::IntoConcat));
    }

    /// `Placed::overlapping` finds exactly what a scan of every placed
    /// lifetime finds, for lifetimes of every length and position.
    #[test]
    fn the_lifetime_index_finds_what_a_scan_finds() {
        let steps = 37;
        // A deterministic spread of lifetimes (a linear congruential walk).
        let mut x = 12345u64;
        let mut next = |m: usize| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize % m
        };
        let lifetimes: Vec<(usize, usize)> = (0..300)
            .map(|_| {
                let a = next(steps);
                (a, a + next(steps - a))
            })
            .collect();
        let mut placed = Placed::new(steps);
        for (i, &(a, b)) in lifetimes.iter().enumerate() {
            let mut found = placed.overlapping(a, b);
            found.sort();
            let expected: Vec<usize> = (0..i)
                .filter(|&j| lifetimes[j].0 <= b && a <= lifetimes[j].1)
                .collect();
            assert_eq!(found, expected, "lifetime {i} = [{a}, {b}]");
            placed.insert(i, a, b);
        }
    }
}

//! petgraph's visit traits on the retaining view of a [`Graph`], so petgraph's algorithms run on
//! our graph directly: in tests they are the oracles our own algorithms are checked against.

use fixedbitset::FixedBitSet;
use petgraph::Direction;
use petgraph::visit::{
    GraphBase, GraphRef, IntoNeighbors, IntoNeighborsDirected, IntoNodeIdentifiers, NodeCount, NodeIndexable, Visitable,
};

use super::{Adjacency, Graph};

/// The graph through its retaining (strong and interior) edges; weak edges are left out.
#[derive(Debug, Clone, Copy)]
pub struct Retaining<'g>(pub &'g Graph);

impl Adjacency for Retaining<'_> {
    fn node_count(&self) -> usize {
        self.0.node_count()
    }

    fn neighbors(&self, node: u32) -> &[u32] {
        self.0.retaining(node)
    }
}

/// The retaining edges turned around: who keeps each node alive.
#[derive(Debug, Clone, Copy)]
pub struct Retainers<'g>(pub &'g Graph);

impl Adjacency for Retainers<'_> {
    fn node_count(&self) -> usize {
        self.0.node_count()
    }

    fn neighbors(&self, node: u32) -> &[u32] {
        self.0.retainers(node)
    }
}

impl GraphBase for Retaining<'_> {
    type NodeId = u32;
    type EdgeId = (u32, u32);
}

impl GraphRef for Retaining<'_> {}

impl NodeCount for Retaining<'_> {
    fn node_count(&self) -> usize {
        self.0.node_count()
    }
}

impl NodeIndexable for Retaining<'_> {
    fn node_bound(&self) -> usize {
        self.0.node_count()
    }

    fn to_index(&self, node: u32) -> usize {
        node as usize
    }

    fn from_index(&self, index: usize) -> u32 {
        index as u32
    }
}

impl Visitable for Retaining<'_> {
    type Map = FixedBitSet;

    fn visit_map(&self) -> FixedBitSet {
        FixedBitSet::with_capacity(self.0.node_count())
    }

    fn reset_map(&self, map: &mut FixedBitSet) {
        map.clear();
        map.grow(self.0.node_count());
    }
}

impl<'g> IntoNeighbors for Retaining<'g> {
    type Neighbors = std::iter::Copied<std::slice::Iter<'g, u32>>;

    fn neighbors(self, node: u32) -> Self::Neighbors {
        self.0.retaining(node).iter().copied()
    }
}

impl<'g> IntoNeighborsDirected for Retaining<'g> {
    type NeighborsDirected = std::iter::Copied<std::slice::Iter<'g, u32>>;

    fn neighbors_directed(self, node: u32, direction: Direction) -> Self::NeighborsDirected {
        match direction {
            Direction::Outgoing => self.0.retaining(node).iter().copied(),
            Direction::Incoming => self.0.retainers(node).iter().copied(),
        }
    }
}

impl IntoNodeIdentifiers for Retaining<'_> {
    type NodeIdentifiers = std::ops::Range<u32>;

    fn node_identifiers(self) -> Self::NodeIdentifiers {
        0..self.0.node_count() as u32
    }
}

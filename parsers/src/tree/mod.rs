//! The restore tree: every volume of a disk as one tree of nodes.

//! exFAT (in progress).

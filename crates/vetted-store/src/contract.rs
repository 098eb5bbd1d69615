//! The contract suite every backend must pass (being written).

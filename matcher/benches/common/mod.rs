//! Shared by the matcher benches: the seeded workload and the engine adapters.

pub mod adapters;
pub mod workload;

//! The actors that hold routing state in memory.
//!
//! - [`rep::RepActor`], one per rep: the only owner of its load, capacity and status.
//! - [`territory::TerritoryActor`], one per territory: its members' view, its strategy
//!   and its capacity queue.
//!
//! All actors live on one arbiter (one thread), so a territory's reservation round
//! trip to a rep costs a local message, not a thread wake-up. Durable state is never
//! written here: actors submit changes to the store's committer, in the order they
//! decide them.

pub(crate) mod rep;
pub(crate) mod territory;

pub use rep::RepSnapshot;
pub use territory::{Decision, Placement, SimulatedDecision, TerritorySnapshot};

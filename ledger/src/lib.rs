//! The ledger: the only writer of `account_balances` and `account_transactions`.
//!
//! * [`balances`] — balance reads, the optimistic-lock freeze, credits, ledger rows,
//!   and the SQL text every batched writer (placement, settlement) splices in;
//! * [`funding`] — deposits (confirmations, credited once) and withdrawals with review;
//! * [`tcc`] — internal transfers, across shards by TCC, with recovery;
//! * [`audit`] — the money audits (conservation, frozen vs what holds it, trade halves,
//!   every ledger replayed against its balance).
//!
//! Every change of a balance goes through this crate, with its ledger row in the same
//! local transaction.

pub mod audit;
pub mod balances;
pub mod funding;
pub mod tcc;

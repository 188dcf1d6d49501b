//! Black-box tests of the running service against the local testbed (`scripts/test`).

mod helpers;
mod ops;
mod startup;

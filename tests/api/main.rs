//! Black-box tests of the running service against the local testbed (`scripts/test`).

mod health;
mod helpers;
mod startup;

//! One integration-test binary (faster to link than one per file), with shared helpers.

mod audience;
mod cli;
mod concurrency;
mod connections;
mod delivery;
mod end_to_end;
mod faults;
mod helpers;
mod malformed;
mod operations;
mod queries;
mod subscriber;

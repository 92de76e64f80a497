//! One integration-test binary (faster to link than one per file), with shared helpers.

mod api;
mod apns_connections;
mod apns_tokens;
mod apps;
mod architecture;
mod audience;
mod cli;
mod concurrency;
mod delivery;
mod deployments;
mod end_to_end;
mod faults;
mod gaurun;
mod helpers;
mod kubernetes;
mod malformed;
mod monitoring;
mod operations;
mod ownership;
mod promql;
mod queries;
mod redis_tls;
mod replicas;
mod subscriber;
mod test_command;
mod webpush;
